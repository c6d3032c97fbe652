"""What Apply Unlearning's fp8 weight wrapper costs in a forward (a benchmark, not a test).

On fp8 weights the edit keeps a weight wrapper (``nodes.fp8_edits.RemoveSubspace``) that ComfyUI calls in every forward
of each edited layer: the pack's one inference cost. This times it on one 5120 x 5120 layer (Wan 14B's width) against
what ComfyUI does anyway for that layer in every forward: ``comfy.ops.cast_bias_weight`` casting the fp8 weight to the
compute dtype, and the layer's product with the 512 text tokens a cross-attention k/v reads. Ratios in one process,
best of ``--repeats``, one CPU thread (both sides are memory-bound on a GPU as well). And the peak memory a wrapper
call adds, each in a fresh process (its peak resident set, reset before the call: Linux only): the wrapper as it is, and as it was until 2026-12-06
(``W - (W U - A) U^T``, two more float32 temporaries of the weight's size).

    python bench/fp8_wrapper_cost.py [--rank 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from nodes_perf import setup_host  # noqa: E402


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_mb(formula: str, width: int = 5120, rank: int = 4) -> float:
    """Megabytes one correction of a bf16 ``width`` x ``width`` weight adds to this fresh process's peak."""
    import torch

    weight = torch.empty(width, width, dtype=torch.bfloat16).normal_(0, 0.02)
    u, action = torch.linalg.qr(torch.randn(width, rank))[0], torch.randn(width, rank)
    if formula == "current":
        from comfyui_video_unlearning.nodes.fp8_edits import RemoveSubspace

        correct = RemoveSubspace(torch.nn.Linear(1, 1), u, action, ())
    else:
        def correct(w):
            full = w.to(torch.float32)
            return (full - (full @ u - action) @ u.T).to(w.dtype)
    Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak resident set starts again from the current one
    before = _status_kb("VmRSS")
    correct(weight)
    return (_status_kb("VmHWM") - before) / 1024


def _status_kb(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank", type=int, default=4, help="columns of the removed subspace")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak", choices=("current", "until 2026-12-06"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_host()
    if args.peak:
        print(peak_mb(args.peak, rank=args.rank))
        return
    import torch

    import comfy.ops
    from comfyui_video_unlearning.nodes.fp8_edits import RemoveSubspace

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    width = 5120
    layer = comfy.ops.manual_cast.Linear(width, width, dtype=torch.float8_e4m3fn)
    layer.weight = torch.nn.Parameter((torch.randn(width, width, generator=generator) * 0.02)
                                      .to(torch.float8_e4m3fn), requires_grad=False)
    layer.bias = None
    subspace = torch.linalg.qr(torch.randn(width, args.rank, generator=generator, dtype=torch.float64))[0].float()
    wrapper = RemoveSubspace(layer, subspace, torch.randn(width, args.rank, generator=generator) * 0.01, ())
    tokens = torch.randn(1, 512, width, generator=generator).to(torch.bfloat16)
    with torch.inference_mode():
        weight, _ = comfy.ops.cast_bias_weight(layer, tokens)  # the bf16 weight ComfyUI hands the wrappers
        cast = best_of(lambda: comfy.ops.cast_bias_weight(layer, tokens), args.repeats)
        wrapped = best_of(lambda: wrapper(weight), args.repeats)
        product = best_of(lambda: torch.nn.functional.linear(tokens, weight), args.repeats)
    peaks = {formula: float(subprocess.run([sys.executable, __file__, "--peak", formula, "--rank", str(args.rank)],
                                           check=True, capture_output=True, text=True).stdout.split()[-1])
             for formula in ("current", "until 2026-12-06")}
    print(f"one {width} x {width} fp8 layer, rank {args.rank}, one CPU thread, best of {args.repeats}:")
    print(f"  ComfyUI's cast to bf16 {cast * 1e3:.1f} ms; the wrapper {wrapped * 1e3:.1f} ms "
          f"({wrapped / cast:.2f}x the cast); the product with 512 tokens {product * 1e3:.1f} ms "
          f"(the wrapper {wrapped / product:.3f}x)")
    print(f"  peak memory of one wrapper call (fresh process; the bf16 weight is {width * width * 2 / 2**20:.0f} MB): "
          f"{peaks['current']:.0f} MB, until 2026-12-06 {peaks['until 2026-12-06']:.0f} MB")


if __name__ == "__main__":
    main()
