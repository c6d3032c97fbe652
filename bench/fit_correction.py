"""What the exact contrastive solve changed (a benchmark, not a test): old span against new, per check variant.

Until 2026-12-01 ``core.refusal`` solved the contrastive eigenproblem in a span cut from an unpivoted QR of the
samples, dropping columns with a small diagonal entry; that also dropped parts of the neutral rows, so the "top-k
eigenvectors" were not eigenvectors. This script re-creates that solve (:func:`qr_span_solve`, for comparison only)
and, for every variant of ``bench/check_validation.py`` (its default edit, other layer groups and methods, rank-4/8/16
subspaces), fits the organism's vector both ways from the same activations and reports:

- the largest principal angle between the old and the new edit subspace over the variant's layers (degrees);
- the check's figures at strength 1 (removed share in the prediction, collateral) and its recommended strength,
  old against new, with the check's validation pairs and benign prompts.

``--change cap`` instead compares revision 2 (the exact solve keeping the top k eigenvectors whatever their sign)
with revision 3 (only those of positive eigenvalue), same figures. ``--change solve`` (the default) runs both
solves through the current cap; its figures in docs/ were measured before the cap existed.

No generation: it runs in about a minute per concept. Real prompts are printed nowhere (only figures).
``--timing`` instead times one layer's solve, old against exact, on pooled samples of realistic widths (interleaved
in one process, median of 3; a ratio, since this machine is shared).

    python bench/fit_correction.py [--concept logo red nudity violence] [--change solve|cap] [--json ...]
    python bench/fit_correction.py --timing
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import check_validation as cv  # noqa: E402
from core import refusal  # noqa: E402
from core.check import DEFAULT_STRENGTHS, check_strengths, measure_baseline  # noqa: E402
from organism import experiment as ex  # noqa: E402
from organism.text import TextEncoder  # noqa: E402


#: The exact solve, kept before run_concept puts qr_span_solve in the module's place (which it calls when dense).
EXACT_SOLVE = refusal._top_contrastive_eigenvectors


def qr_span_solve(pair_factor, neutral_factor, alpha: float, rank: int) -> torch.Tensor:
    """The solve before 2026-12-01, kept here only to measure what its replacement changed: ``(vectors [d, k],
    eigenvalues [k])`` as ``core.refusal._top_contrastive_eigenvectors`` returns them."""
    samples = torch.cat([pair_factor, neutral_factor])
    if samples.shape[0] >= pair_factor.shape[1]:
        return EXACT_SOLVE(pair_factor, neutral_factor, alpha, rank)  # dense: unchanged
    span, triangle = torch.linalg.qr(samples.T)
    span = span[:, triangle.diagonal().abs() > 1e-10 * triangle.diagonal().abs().max()]
    a, b = pair_factor @ span, neutral_factor @ span
    values, vectors = torch.linalg.eigh(a.T @ a - alpha * (b.T @ b))
    order = values.argsort(descending=True)[: min(rank, span.shape[1])]
    return span @ vectors[:, order], values[order]


def largest_angle(old: torch.Tensor, new: torch.Tensor) -> float:
    """Largest principal angle between two orthonormal column sets, in degrees; 90 when the widths differ
    (a direction of one lies outside the other)."""
    if old.shape[1] != new.shape[1]:
        return 90.0
    cosines = torch.linalg.svdvals(old.double().T @ new.double())
    return math.degrees(math.acos(min(1.0, float(cosines.min()))))


#: What each comparison puts in the module's place for the "old" fit. solve: revision 1's solve (through the current
#: cap); cap: revision 2, where every eigenvalue counts as positive, so U is the top k whatever their sign.
CHANGES = {"solve": lambda: mock.patch.object(refusal, "_top_contrastive_eigenvectors", qr_span_solve),
           "cap": lambda: mock.patch.object(refusal, "POSITIVE_CONTRAST", -math.inf)}


def run_concept(concept: str, model, encoder, pools, compare: str = "solve") -> list[dict]:
    args = argparse.Namespace(split=None, count=1, pairs=5, benign=12, benign_seed=cv.BENIGN_SEED, steps=16,
                              estimate_pairs=None, more_methods=True)
    setting = (cv.attribute_setting(concept, args, encoder, "") if pools is None
               else cv.broad_setting(concept, args, encoder, "", pools))
    candidates = ex.every_group_layer(model)
    text_layers = {n for n in candidates if ex.reads_text(n)}
    forward = cv.organism_forward(model, encoder, text_layers, times=(0.9,))
    with torch.no_grad():
        measured = ex.collect(model, encoder, setting.pairs, setting.neutral, candidates)
        baseline = measure_baseline(model, forward, setting.validation, setting.benign, candidates)
    rows, seen = [], set()
    for name, change, _ in setting.variants:
        config = {**cv.BASE, "edit": "direction", **change}
        key = cv._fit_key(config)
        if key in seen:
            continue
        seen.add(key)
        layers = ex.layer_names(model, config["group"], config["blocks"])
        fits = {}
        for tag, context in (("old", CHANGES[compare]), ("new", contextlib.nullcontext)):
            with context():
                basis = measured.fitter.fit(rank=config["rank"], alpha=config["alpha"], method=config["method"],
                                            edit=config["edit"], layers=layers, **setting.fit_extra)
            with torch.no_grad():
                fits[tag] = basis, check_strengths(model, forward, basis, baseline, DEFAULT_STRENGTHS, layers=layers,
                                                   target=config["target"], rows=(setting.validation, setting.benign))
        at_one = list(fits["new"][1].strengths).index(1.0)
        row = {"variant": name if name != "default" else "default edit", "fit": key,
               "angle_degrees": max(largest_angle(fits["old"][0].subspace(l), fits["new"][0].subspace(l))
                                    for l in layers),
               "width_old": max(fits["old"][0].subspace(l).shape[1] for l in layers),
               "width_new": max(fits["new"][0].subspace(l).shape[1] for l in layers)}
        for tag, (_, result) in fits.items():
            row[f"removed_{tag}"] = 1 - result.survival_prediction[at_one]
            row[f"collateral_{tag}"] = result.collateral_prediction[at_one]
            row[f"recommended_{tag}"] = result.recommended
        rows.append(row)
        print(f"  {row['variant']:<36} angle {row['angle_degrees']:5.1f}  width {row['width_old']} -> "
              f"{row['width_new']}  removed {row['removed_old']:.3f} -> "
              f"{row['removed_new']:.3f}  collateral {row['collateral_old']:.4f} -> {row['collateral_new']:.4f}  "
              f"recommended {row['recommended_old']:g} -> {row['recommended_new']:g}", flush=True)
    return rows


def timing(sizes=((1536, 10), (1536, 500), (5120, 10), (5120, 500)), repeats: int = 3) -> list[dict]:
    """Seconds per layer of the old and the exact solve for ``(d, n)``: n pairs plus n neutral rows, rank 4."""
    rows = []
    for dim, count in sizes:
        generator = torch.Generator().manual_seed(0)
        pairs = torch.randn(count, dim, generator=generator, dtype=torch.float64)
        neutral = torch.randn(count, dim, generator=generator, dtype=torch.float64)
        seconds = {"old": [], "exact": []}
        qr_span_solve(pairs, neutral, 1.0, 4), refusal._top_contrastive_eigenvectors(pairs, neutral, 1.0, 4)  # warm up
        for _ in range(repeats):
            for tag, solve in (("old", qr_span_solve), ("exact", refusal._top_contrastive_eigenvectors)):
                start = time.perf_counter()
                solve(pairs, neutral, 1.0, 4)
                seconds[tag].append(time.perf_counter() - start)
        row = {"dim": dim, "pairs": count, **{tag: statistics.median(s) for tag, s in seconds.items()}}
        row["ratio"] = row["exact"] / row["old"]
        rows.append(row)
        print(f"  d {dim:5d}, {count:3d} pairs + {count:3d} neutral rows: old {row['old']:.3f} s, exact "
              f"{row['exact']:.3f} s per layer (x{row['ratio']:.2f})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", nargs="+", default=["logo", "red", *cv.BROAD])
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "fit_correction.json",
                        help="report (with --timing: fit_correction_timing.json in the same folder; with --change "
                             "cap: fit_correction_cap.json)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--change", choices=sorted(CHANGES), default="solve",
                        help="solve: revision 1's solve against the exact one; cap: revision 2 against 3")
    parser.add_argument("--timing", action="store_true", help="time one layer's solve, old against exact, instead")
    args = parser.parse_args()
    unknown = [c for c in args.concept if c not in ("logo", "red", *cv.BROAD)]
    if unknown:
        parser.exit(2, f"unknown concept {', '.join(unknown)}; one of logo, red, {', '.join(cv.BROAD)}\n")
    torch.set_num_threads(args.threads)
    if args.timing:
        report = {"timing": timing(), "threads": args.threads}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.with_name("fit_correction_timing.json").write_text(json.dumps(report, indent=1))
        return
    pools = None
    if any(c in cv.BROAD for c in args.concept):
        from organism.scenes import DATA, load_pools

        pools = load_pools(DATA)
    model, encoder = ex.load_organism(ex.WEIGHTS), TextEncoder()
    report = {}
    for concept in args.concept:
        print(f"concept {concept!r}")
        report[concept] = run_concept(concept, model, encoder, pools if concept in cv.BROAD else None, args.change)
    path = args.json if args.change == "solve" else args.json.with_name(f"{args.json.stem}_{args.change}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
