"""Cost of the Unlearning Check on every family, not only Wan (a benchmark, not a test; ratios in one process).

``bench/check_perf.py`` times the check against one generation on Wan. HunyuanVideo and Mochi cannot stack prompts
of different token counts into one exact model call (``nodes.conditioning.can_share_a_call``), so their check makes
up to one model call per prompt and strength instead of one per strength. This times, per family, on a model of
about ``medium_wan``'s size built by ComfyUI's own classes (``host_models.MEDIUM_FAMILIES``, random weights) with text
shaped as the family's ComfyUI encoder gives it (``host_models.MEDIUM_TEXT``: HunyuanVideo's prompts at their own
token counts, the T5 families' padded with a mask):

- one generation: 128x128x9 frames, 8 steps, cfg 5, euler (``common_ksampler``);
- the check as the shipped workflows run it: 5 validation pairs, 12 benign prompts and the sampler's negative
  prompt, 9 strengths (0-2), one timestep, 64x64x1 (the node's default);
- how many model calls the check made (a forward pre-hook on the diffusion model counts them).

Medians of interleaved runs; CPU seconds beside the wall clock.

    python bench/family_check_perf.py [--families wan hunyuan_video ltxv mochi cosmos_predict2 cosmos1] [--repeats 3]
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

import nodes_perf  # noqa: E402  (setup_host, rolex_pairs, NEUTRAL)
from check_perf import BENIGN, GRID, VALIDATION  # noqa: E402  (the Wan bench's prompts and grid, reused as is)
from host_models import (  # noqa: E402
    MEDIUM_FAMILIES, MEDIUM_TEXT, FamilyText, family_model, medium_wan, tiny_wan_clip, zero_padded,
)

FAMILIES = ("wan",) + tuple(MEDIUM_FAMILIES)
#: Mochi's text qkv and the Cosmos families' cross-attention k/v have no bias for "safe_mean" to move.
TARGET = {"mochi": "zero", "cosmos_predict2": "zero", "cosmos1": "zero"}


class Prepared:
    """A family's model (Wan as ``bench/check_perf.py`` runs it, the others medium-sized) and text encoder, a prompt
    and the empty negative, the validation pairs, and a refusal vector fitted by the nodes from the Rolex pairs."""

    def __init__(self, family: str, clip):
        from comfyui_video_unlearning.nodes import definitions as d

        self.target = TARGET.get(family, "safe_mean")
        if family == "wan":
            self.model, self.text = medium_wan(), clip
        else:
            config_class, unet = MEDIUM_FAMILIES[family]
            self.model = family_model(config_class, unet, scale=0.02)
            self.text = FamilyText(clip, *MEDIUM_TEXT[family])
        encode = self.text.encode_from_tokens_scheduled
        self.positive = encode(self.text.tokenize("a Rolex watch on a table"))
        self.negative = encode(self.text.tokenize(""))
        estimation = d.PairEncoder.execute(self.text, nodes_perf.rolex_pairs(), nodes_perf.NEUTRAL, "Rolex")[0]
        self.validation = d.PairEncoder.execute(self.text, VALIDATION, BENIGN, "Rolex")[0]
        acts = d.CollectActivations.execute(self.model, estimation, 128, 128, 9, "4", 0, "default", 0, -1)[0]
        self.basis = d.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]

    def check(self, size: int = 64):
        """Unlearning Check as the shipped workflows run it (the negative prompt at cfg 5), at ``size`` x ``size``
        x 1."""
        from comfyui_video_unlearning.nodes.check import run_unlearning_check

        return run_unlearning_check(self.model, self.basis, self.validation, GRID, group="all in vector",
                                    block_start=0, block_end=-1, target=self.target, width=size, height=size,
                                    length=1, timesteps="0.1", seed=0, negative=self.negative, cfg=5.0)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=64, help="the check's latent size (pixels, square)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "bench_family_check_perf.json")
    args = parser.parse_args()
    nodes_perf.setup_host()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    import nodes as comfy_nodes
    from comfyui_video_unlearning.nodes.collect import empty_latent

    runs = {}
    with torch.inference_mode():
        clip = zero_padded(tiny_wan_clip())
        for family in args.families:
            prepared = Prepared(family, clip)
            latent = {"samples": empty_latent(prepared.model, 128, 128, 9)}
            calls = [0]
            prepared.model.model.diffusion_model.register_forward_pre_hook(
                lambda *_, calls=calls: calls.__setitem__(0, calls[0] + 1))

            def generate(p=prepared, latent=latent):
                return comfy_nodes.common_ksampler(p.model, 3, 8, 5.0, "euler", "simple", p.positive, p.negative,
                                                   latent)

            def check(p=prepared):
                return p.check(args.size)

            generate()
            calls[0] = 0
            result = check()  # warm-up, and the calls one check makes
            runs[family] = {"generate": generate, "check": check, "calls": calls[0], "result": result,
                            "rows": [cond[0][0].shape[1] for cond in (*prepared.validation.unsafe,
                                                                      *prepared.validation.safe,
                                                                      *prepared.validation.neutral)],
                            "times": {"generation": [], "check": []}, "cpu": {"generation": [], "check": []}}
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits all alike
            for run in runs.values():
                for name in ("generation", "check"):
                    start, cpu = time.perf_counter(), time.process_time()
                    run["generate" if name == "generation" else "check"]()
                    run["times"][name].append(time.perf_counter() - start)
                    run["cpu"][name].append(time.process_time() - cpu)

    report = {"generation": "128x128x9 frames, 8 steps, cfg 5, euler", "check": f"{args.size}x{args.size}x1, 5 "
              "validation pairs, 12 benign prompts, the negative prompt, 9 strengths, one timestep",
              "threads": torch.get_num_threads(), "families": {}}
    for family, run in runs.items():
        generation, check = (statistics.median(run["times"][n]) for n in ("generation", "check"))
        generation_cpu, check_cpu = (statistics.median(run["cpu"][n]) for n in ("generation", "check"))
        report["families"][family] = {
            "generation_seconds": generation, "check_seconds": check, "over_generation": check / generation,
            "cpu_over_generation": check_cpu / generation_cpu, "model_calls": run["calls"],
            "forwards": run["result"].forwards, "recommended": run["result"].recommended,
            "token_counts": sorted(set(run["rows"])), "runs": run["times"], "cpu_runs": run["cpu"]}
        print(f"{family}: check {check:.2f}s = {check / generation:.2f} x one generation ({generation:.2f}s); "
              f"CPU {check_cpu / generation_cpu:.2f} x; {run['calls']} model calls for "
              f"{run['result'].forwards} forwards; text rows {sorted(set(run['rows']))}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
