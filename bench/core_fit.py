"""Benchmark of the core fit: time and peak memory for realistic widths and layer counts.

Each configuration runs in its own interpreter so that peak resident memory (ru_maxrss) is its
own. Memory is reported three ways: the fitter's analytic state (pooled rows, float64), the peak
resident memory above the state just before fitting (what the fit itself adds), and the peak
above the interpreter's baseline (everything: rows, their generation, the fit). For pooled samples the
fit never forms a d x d matrix, so memory grows linearly in d; the d-sweep at the end shows it.

    python bench/core_fit.py            # full table (a few minutes on 2 cores)
    python bench/core_fit.py --quick    # smaller sweep
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_one(dim: int, layers: int, samples: int, rank: int) -> dict:
    """Runs inside a child interpreter: accumulate, then fit, measuring the fit alone."""
    sys.path.insert(0, str(REPO))
    import torch

    from core.refusal import RefusalFitter

    torch.manual_seed(0)
    torch.linalg.svd(torch.randn(64, 8, dtype=torch.float64))  # load LAPACK (the fit's SVD) before the baseline
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fitter = RefusalFitter()
    concept = torch.randn(dim, dtype=torch.float64)
    for index in range(layers):
        safe = torch.randn(samples, dim, dtype=torch.float64)
        fitter.update(f"blocks.{index}.cross_attn.k", safe + 0.1 * concept, safe)
    del safe
    state_bytes = 2 * layers * samples * dim * 8
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    basis = fitter.fit(rank=rank)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert len(basis.layers) == layers
    return {"dim": dim, "layers": layers, "samples": samples, "rank": rank, "fit_seconds": seconds,
            "fitter_state_mb": state_bytes / 2**20, "fit_peak_above_state_mb": max(0, peak - before) / 2**20,
            "peak_above_baseline_mb": (peak - baseline) / 2**20, "dense_dxd_mb_per_layer": dim * dim * 8 / 2**20}


def child(config: dict) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import core_fit; "
            f"print(json.dumps(core_fit.run_one(**{config!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer layers and a shorter d sweep")
    parser.add_argument("--json", type=Path, default=REPO / "out" / "bench_core_fit.json")
    args = parser.parse_args()
    layers = 8 if args.quick else 40
    table = [child({"dim": d, "layers": layers, "samples": n, "rank": 4}) for d in (1536, 5120) for n in (10, 500)]
    sweep = [child({"dim": d, "layers": layers, "samples": 10, "rank": 4})
             for d in ((1024, 4096) if args.quick else (1024, 2048, 4096, 8192, 16384))]
    print(f"{'d':>6} {'layers':>6} {'n':>5} {'fit s':>8} {'state MB':>9} {'fit adds MB':>12} "
          f"{'peak MB':>8} {'a d x d MB':>11}")
    for row in table + sweep:
        print(f"{row['dim']:>6} {row['layers']:>6} {row['samples']:>5} {row['fit_seconds']:>8.2f} "
              f"{row['fitter_state_mb']:>9.1f} {row['fit_peak_above_state_mb']:>12.1f} "
              f"{row['peak_above_baseline_mb']:>8.1f} {row['dense_dxd_mb_per_layer']:>11.1f}")
    slopes = [(b["peak_above_baseline_mb"] - a["peak_above_baseline_mb"]) / (b["dim"] - a["dim"]) * 1024
              for a, b in zip(sweep, sweep[1:])]
    print(f"d sweep (n=10, {layers} layers): peak grows by", ", ".join(f"{x:.2f}" for x in slopes),
          "MB per 1024 of width between successive widths (constant = linear in d)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"table": table, "sweep": sweep}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
