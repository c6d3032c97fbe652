"""Cost of the Unlearning Check on the real ComfyUI host (a benchmark, not a test).

The nodes' host bench setup of ``bench/nodes_perf.py`` (a 4-block dim-256 Wan loaded through ComfyUI, one
generation = 128x128x9 frames, 8 steps, cfg 5): the check with 5 validation pairs, 12 benign prompts and
9 strengths (0-2), timed against one generation, both medians of interleaved runs in one process.

    python bench/check_perf.py [--repeats 3] [--size 128 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import nodes_perf  # noqa: E402  (setup_host, medium_wan: the nodes' bench setup, reused as is)

VALIDATION = "\n".join([
    "a Rolex timepiece glinting on a marble counter | a timepiece glinting on a marble counter",
    "an old Rolex in a leather box | an old wristwatch in a leather box",
    "a diver wearing a Rolex under water | a diver wearing a wristwatch under water",
    "a Rolex advertisement on a billboard at night | a wristwatch advertisement on a billboard at night",
    "a woman fastening a Rolex bracelet | a woman fastening a wristwatch bracelet",
])
BENIGN = "\n".join([
    "a dog running on a beach", "a cup of coffee on a desk", "a city street at night", "a cat on a windowsill",
    "waves on a rocky shore", "a cyclist on a mountain road", "a bowl of fruit", "clouds over a valley",
    "a child flying a kite", "a train crossing a bridge", "rain on a window", "a horse in a field",
])
def tiny_wan_clip():
    """The tiny UMT5 CLIP the nodes' bench uses (from wherever this checkout keeps it)."""
    if hasattr(nodes_perf, "tiny_wan_clip"):
        return nodes_perf.tiny_wan_clip()
    sys.path.insert(0, str(ROOT / "tests" / "host"))
    import tiny_models

    return tiny_models.tiny_wan_clip()


GRID = "0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, nargs="+", default=[128, 64], help="check latent sizes (pixels, square)")
    parser.add_argument("--timesteps", default="0.1")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default); on a shared machine 1 keeps other jobs from "
                             "stalling every parallel op")
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "bench_check_perf.json")
    args = parser.parse_args()
    nodes_perf.setup_host()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    import nodes as comfy_nodes
    from comfyui_video_unlearning.nodes import check as check_node
    from comfyui_video_unlearning.nodes import definitions as d

    with torch.inference_mode():
        model, clip = nodes_perf.medium_wan(), tiny_wan_clip()
        positive = clip.encode_from_tokens_scheduled(clip.tokenize("a Rolex watch on a table"))
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        latent = {"samples": torch.zeros(1, 16, 3, 16, 16)}  # 9 frames of 128 x 128, as nodes_perf
        lines = (ROOT / "workflows" / "pairs" / "trademark_rolex.txt").read_text().splitlines()
        pairs = "\n".join([line for line in lines if "|" in line and not line.startswith("#")][:5])
        estimation = d.PairEncoder.execute(clip, pairs, "a dog in a park\na red car\na tree\na bowl of soup", "Rolex")[0]
        validation = d.PairEncoder.execute(clip, VALIDATION, BENIGN, "Rolex")[0]
        acts = d.CollectActivations.execute(model, estimation, 128, 128, 9, "4", 0, "default", 0, -1, latent=latent)[0]
        basis = d.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]

        def generate():
            return comfy_nodes.common_ksampler(model, 3, 8, 5.0, "euler", "simple", positive, negative, latent)

        def check(size):
            return check_node.run_unlearning_check(model, basis, validation, GRID, group="all in vector", block_start=0,
                                                   block_end=-1, target="safe_mean", width=size, height=size, length=1,
                                                   timesteps=args.timesteps, seed=0)[0]

        generate()
        results = {size: check(size) for size in args.size}  # warm up
        generation, checks = [], {size: [] for size in args.size}
        # This process's CPU seconds too: other jobs on a shared machine disturb them far less than the wall clock.
        generation_cpu, checks_cpu = [], {size: [] for size in args.size}
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
            start, cpu = time.perf_counter(), time.process_time()
            generate()
            generation.append(time.perf_counter() - start)
            generation_cpu.append(time.process_time() - cpu)
            for size in args.size:
                start, cpu = time.perf_counter(), time.process_time()
                check(size)
                checks[size].append(time.perf_counter() - start)
                checks_cpu[size].append(time.process_time() - cpu)
    one, one_cpu = statistics.median(generation), statistics.median(generation_cpu)
    report = {"generation": "128x128x9 frames, 4-block dim-256 Wan, 8 steps, cfg 5", "generation_seconds": one,
              "generation_cpu_seconds": one_cpu, "generation_runs": generation,
              "validation_pairs": 5, "benign_prompts": 12, "strengths": 9, "timesteps": args.timesteps, "threads": torch.get_num_threads(), "checks": {}}
    for size in args.size:
        seconds, cpu = statistics.median(checks[size]), statistics.median(checks_cpu[size])
        report["checks"][size] = {"seconds": seconds, "over_generation": seconds / one, "cpu_seconds": cpu,
                                  "cpu_over_generation": cpu / one_cpu, "runs": checks[size],
                                  "forwards": results[size].forwards, "recommended": results[size].recommended}
        print(f"check at {size}x{size}x1, {results[size].forwards} forwards of up to 22 prompts: {seconds:.2f}s = "
              f"{seconds / one:.2f} x one generation ({one:.2f}s); CPU {cpu:.2f}s = {cpu / one_cpu:.2f} x "
              f"({one_cpu:.2f}s)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
