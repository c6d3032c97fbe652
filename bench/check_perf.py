"""Cost of the Unlearning Check (and of Unlearning Audit) on the real ComfyUI host (a benchmark, not a test).

The nodes' host bench setup of ``bench/nodes_perf.py`` (a 4-block dim-256 Wan loaded through ComfyUI, one
generation = 128x128x9 frames, 8 steps, cfg 5): the check with 5 validation pairs, 12 benign prompts and
9 strengths (0-2), timed against one generation, both medians of interleaved runs in one process.

The check runs three ways by default, interleaved: with Wan's zero-padded text collapsed to one key (the node's
default, ``nodes/check_fastpath.py``), on every padding row as ComfyUI does, and collapsed with the sampler's
negative prompt as one more row (guided collateral, as the shipped workflows run it) (``--paths``). The tiny CLIP gets
its tokenizer's end token, so ComfyUI zeroes the padding rows as it does with the real UMT5-XXL, whose tokenizer ends a
prompt with the model's end token (1); the tiny pile-T5 tokenizer ends with 2, which the Wan model does not know, so
without this its padding rows would hold the encoder's output for the pad token (``--unpadded-text``: nothing to
collapse, the setting of the bench's earlier figures).

Unlearning Audit (``--paths audit``) reads Apply Unlearning's MODEL at strength 1 against the model on the same pairs
and prompts with the negative prompt: two forwards of every row, whatever the grid.

    python bench/check_perf.py [--repeats 3] [--size 128 64] [--threads 1] [--paths collapsed full guided audit]
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
from host_models import tiny_wan_clip, zero_padded  # noqa: E402

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
GRID = "0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2"
#: --paths -> run_unlearning_check(collapse_padded_text=..., negative=the generation's negative prompt or None);
#: "guided": the node's default path with the sampler's negative prompt connected (one more row), as the shipped
#: workflows run it.
PATHS = {"collapsed": (True, False), "full": (False, False), "guided": (True, True)}
#: --paths audit: Unlearning Audit of Apply Unlearning's MODEL (strength 1) against the model, on the same validation
#: pairs and benign prompts with the sampler's negative prompt (as the side-by-side workflow runs it: two forwards of
#: every row, no strength grid).
AUDIT = "audit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, nargs="+", default=[128, 64], help="check latent sizes (pixels, square)")
    parser.add_argument("--timesteps", default="0.1")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default); on a shared machine 1 keeps other jobs from "
                             "stalling every parallel op")
    parser.add_argument("--paths", nargs="+", choices=[*PATHS, AUDIT], default=[*PATHS, AUDIT],
                        help="the check with the padded text collapsed (the node's default) and/or on every row, "
                             "and/or Unlearning Audit of the edited model")
    parser.add_argument("--unpadded-text", action="store_true",
                        help="keep the tiny CLIP's padding rows nonzero (nothing to collapse)")
    parser.add_argument("--negative-prompt", default="",
                        help="the generation's negative prompt, which the guided path also reads (default empty; Wan's "
                             "own default negative prompt is some 80 words)")
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "bench_check_perf.json")
    args = parser.parse_args()
    nodes_perf.setup_host()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    import nodes as comfy_nodes
    from comfyui_video_unlearning.nodes import audit as audit_node
    from comfyui_video_unlearning.nodes import check as check_node
    from comfyui_video_unlearning.nodes import definitions as d

    with torch.inference_mode():
        model, clip = nodes_perf.medium_wan(), tiny_wan_clip()
        if not args.unpadded_text:
            clip = zero_padded(clip)
        positive = clip.encode_from_tokens_scheduled(clip.tokenize("a Rolex watch on a table"))
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(args.negative_prompt))
        latent = {"samples": torch.zeros(1, 16, 3, 16, 16)}  # 9 frames of 128 x 128, as nodes_perf
        estimation = d.PairEncoder.execute(clip, nodes_perf.rolex_pairs(), nodes_perf.NEUTRAL, "Rolex")[0]
        validation = d.PairEncoder.execute(clip, VALIDATION, BENIGN, "Rolex")[0]
        acts = d.CollectActivations.execute(model, estimation, 128, 128, 9, "4", 0, "default", 0, -1, latent=latent)[0]
        basis = d.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]

        def generate():
            return comfy_nodes.common_ksampler(model, 3, 8, 5.0, "euler", "simple", positive, negative, latent)

        notes = {}

        edited = d.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "safe_mean")[0]

        def check(size, path):
            notes[path, size] = {}
            if path == AUDIT:
                return audit_node.run_unlearning_audit(model, edited, validation, width=size, height=size, length=1,
                                                       timesteps=args.timesteps, seed=0, negative=negative, cfg=5.0,
                                                       notes=notes[path, size])
            return check_node.run_unlearning_check(model, basis, validation, GRID, group="all in vector", block_start=0,
                                                   block_end=-1, target="safe_mean", width=size, height=size, length=1,
                                                   timesteps=args.timesteps, seed=0,
                                                   collapse_padded_text=PATHS[path][0],
                                                   negative=negative if PATHS[path][1] else None, cfg=5.0,
                                                   notes=notes[path, size])[0]

        runs = [(path, size) for size in args.size for path in args.paths]
        generate()
        results = {(path, size): check(size, path) for path, size in runs}  # warm up
        generation, checks = [], {run: [] for run in runs}
        # This process's CPU seconds too: other jobs on a shared machine disturb them far less than the wall clock.
        generation_cpu, checks_cpu = [], {run: [] for run in runs}
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits all alike
            start, cpu = time.perf_counter(), time.process_time()
            generate()
            generation.append(time.perf_counter() - start)
            generation_cpu.append(time.process_time() - cpu)
            for run in runs:
                start, cpu = time.perf_counter(), time.process_time()
                check(run[1], run[0])
                checks[run].append(time.perf_counter() - start)
                checks_cpu[run].append(time.process_time() - cpu)
    one, one_cpu = statistics.median(generation), statistics.median(generation_cpu)
    report = {"generation": "128x128x9 frames, 4-block dim-256 Wan, 8 steps, cfg 5", "generation_seconds": one,
              "generation_cpu_seconds": one_cpu, "generation_runs": generation,
              "validation_pairs": 5, "benign_prompts": 12, "strengths": 9, "timesteps": args.timesteps,
              "threads": torch.get_num_threads(), "text_padding": "nonzero" if args.unpadded_text else "zero",
              "negative_prompt_words": len(args.negative_prompt.split()),
              "paths": {path: {} for path in args.paths}}
    for path, size in runs:
        run, result = (path, size), results[path, size]
        seconds, cpu = statistics.median(checks[run]), statistics.median(checks_cpu[run])
        report["paths"][path][size] = {"seconds": seconds, "over_generation": seconds / one, "cpu_seconds": cpu,
                                       "cpu_over_generation": cpu / one_cpu, "runs": checks[run],
                                       "forwards": result.forwards, "recommended": getattr(result, "recommended", None),
                                       "padded_text": notes[run]["padded_text"]}
        rows, node = (23, "audit") if path == AUDIT else (22 + PATHS[path][1], "check")
        print(f"{node} ({path}) at {size}x{size}x1, {result.forwards} forwards of up to {rows} prompts: "
              f"{seconds:.2f}s = "
              f"{seconds / one:.2f} x one generation ({one:.2f}s); CPU {cpu:.2f}s = {cpu / one_cpu:.2f} x "
              f"({one_cpu:.2f}s); padded text collapsed: {notes[run]['padded_text']}")
    report["checks"] = report["paths"][args.paths[0]]  # the first path's, under the key earlier reports used
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
