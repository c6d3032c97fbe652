"""How much of a pair's prediction difference goes through the pooled text path, on the tiny HunyuanVideo
(``vector_in``: CLIP-L's pooled vector) and the tiny Mochi (``t5_y_embedder``: its attention pool over the T5 tokens),
and how much of it each layer group removes (a benchmark, not a test). RANDOM weights: the shares are these toys',
not a real model's, and they move with the setup (the second setup shows how much).

The models and text stand-ins are the host tests' (``tests/host/tiny_models.py``, which docs/architectures.md's figures were measured
on; an exception to "benchmarks never import tests/"): HunyuanVideo ``tiny_hunyuan_video_state_dict`` with its
lookup-table text, the pooled output taken as the mean of the prompt's token rows (as CLIP-L's end-token state
summarises the prompt; the stock stand-in pools the first token, 'a' on both sides of these pairs); Mochi
``family_model(*TINY_FAMILIES["mochi"])`` with the lookup-table T5 stand-in (16 rows x 32, attention mask, no pooled
output). For each family and setup:

(a) ``pooled share``: over the held-out pairs, 1 - |d'| / |d|, where d = prediction(unsafe) - prediction(safe) and d'
    the same with the unsafe side given the safe side's pooled vector (a forward hook on ``vector_in`` /
    ``t5_y_embedder`` replays the safe side's output, sigma by sigma); |.| is the root sum of squares over the pairs.
(b) ``left``: |d| after Apply Unlearning at strength 1 ('all in vector', every block) over |d| before, for the vector
    of the default group, of the pooled group alone and of ``all``; and the pooled share of what is left.
(c) Unlearning Check on the ``all`` vector, strength grid 0, 1, its 'layer groups' sweep: each group's removed share
    at strength 1 (the check's ``removed``), and all its layers'.

Setups (``SETUPS``):
- ``A``: what the helpers who wrote docs/architectures.md's figures used (2026-12-06/07 measure.py and sweep.py): model seed 0, noise
  seed 0; fit on 6 pairs "a Rolex watch number {i} on a table | a watch number {i} on a table" and 4 neutral prompts;
  Collect Activations at sigmas 0.3, 0.6, 0.9, 64x64, 9 frames (HunyuanVideo) / 13 (Mochi); cpca rank 4, alpha 1;
  (a)/(b) on 4 held-out pairs; target safe_mean (HunyuanVideo) / zero (Mochi: its text qkv has no bias); (c) on 5
  held-out pairs and 4 benign prompts, same sizes, sigmas and target.
- ``B``: the same sizes and settings with model seed 1, noise seed 1 and other invented Rolex pairs and prompts.

    python bench/pooled_paths.py [--families hunyuan_video mochi] [--setups A B] [--json out/pooled_paths.json]

About 3 minutes per family and setup on 2 CPU cores. Prints a table; writes ``out/pooled_paths.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


@dataclass(frozen=True)
class Setup:
    name: str
    model_seed: int
    seed: int  # noise (Collect Activations, the forwards, the check)
    pairs: tuple[str, ...]
    neutral: tuple[str, ...]
    held: tuple[str, ...]  # (a) and (b)
    validation: tuple[str, ...]  # (c)
    benign: tuple[str, ...]
    width: int = 64
    height: int = 64
    frames: dict | None = None  # family -> frames
    timesteps: str = "0.3, 0.6, 0.9"
    rank: int = 4


HELD_A = ("a shiny Rolex timepiece in a box | a shiny timepiece in a box",
          "a gold Rolex on a wrist | a gold watch on a wrist",
          "a Rolex watch on a table | a watch on a table",
          "an old Rolex in the rain | an old watch in the rain")
HELD_B = ("a silver Rolex beside a laptop | a silver watch beside a laptop",
          "a diver wearing a Rolex underwater | a diver wearing a watch underwater",
          "a Rolex in a shop window at night | a watch in a shop window at night",
          "a man checking his Rolex at the station | a man checking his watch at the station")
SETUPS = {
    "A": Setup("A", 0, 0,
               tuple(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(6)),
               ("a dog in a park", "a red car", "a tree in the wind", "a bowl of soup"),
               HELD_A, HELD_A + ("a new Rolex in a shop | a new watch in a shop",),
               ("a cat on a sofa", "a boat on a lake", "a bird in the sky", "a train at a station"),
               frames={"hunyuan_video": 9, "mochi": 13}),
    "B": Setup("B", 1, 1,
               tuple(f"a close-up of a Rolex, photo {i} | a close-up of a wristwatch, photo {i}" for i in range(6)),
               ("a lighthouse on a cliff", "a plate of pasta", "children on a playground", "a snowy mountain road"),
               HELD_B, HELD_B + ("a Rolex on a velvet cushion | a watch on a velvet cushion",),
               ("a horse in a field", "a kettle on a stove", "a city street in fog", "a kite over a beach"),
               frames={"hunyuan_video": 9, "mochi": 13}),
}
#: Apply's target: Mochi's text qkv has no bias for safe_mean to move (bench/family_check_perf.py's TARGET).
TARGET = {"hunyuan_video": "safe_mean", "mochi": "zero"}
#: The pooled group, and the module whose output (a) replays: the group's layer's parent, fed by the text alone.
POOLED = {"hunyuan_video": ("vector_in", "vector_in"), "mochi": ("t5_y_embedder", "t5_y_embedder")}
FAMILIES = tuple(TARGET)


def setup_host():
    import nodes_perf

    if "comfyui_video_unlearning" not in sys.modules:  # the host tests import the pack once, under this name
        nodes_perf.setup_host()
    sys.path.insert(0, str(ROOT / "tests" / "host"))


def family_and_text(family: str, model_seed: int):
    """(model patcher, text stand-in) of the host tests' tiny ``family``."""
    import tiny_models

    if family == "mochi":
        model = tiny_models.family_model(*tiny_models.TINY_FAMILIES["mochi"], seed=model_seed)
        clip = tiny_models.tiny_wan_clip()
        return model, tiny_models.FamilyText(tiny_models.LookupTextEncoder(clip, rows=16, width=32), 16, 32, None,
                                             True)
    import comfy.sd

    model = comfy.sd.load_diffusion_model_state_dict(tiny_models.tiny_hunyuan_video_state_dict(model_seed))
    return model, tiny_models.tiny_hunyuan_video_mean_pooled_text()


def differences(model, held, latent, sigmas, seed: int, module: str):
    """Per held pair: (d, d') with d = unsafe - safe prediction, d' the same with the safe side's pooled vector."""
    from comfyui_video_unlearning.nodes.check import comfy_forward

    pool = model.model.diffusion_model.get_submodule(module)
    out = []
    for unsafe, safe in held:
        # a fresh forward each time: rows it has seen would be replayed, past the hook
        seen = []
        handle = pool.register_forward_hook(lambda _m, _a, output: seen.append(output.clone()))
        try:
            p_safe = comfy_forward(model, latent, sigmas, seed, [])([safe], None)
        finally:
            handle.remove()
        p_unsafe = comfy_forward(model, latent, sigmas, seed, [])([unsafe], None)
        calls = iter(seen)  # one pooled vector per model call (sigma), in the same order
        handle = pool.register_forward_hook(lambda _m, _a, _output: next(calls))
        try:
            p_same = comfy_forward(model, latent, sigmas, seed, [])([unsafe], None)
        finally:
            handle.remove()
        out.append((p_unsafe - p_safe, p_same - p_safe))
    return out


def total(diffs, index: int) -> float:
    return float(sum(float(d[index].double().norm()) ** 2 for d in diffs) ** 0.5)


def measure(family: str, setup: Setup) -> dict:
    import comfy.model_management

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.collect import empty_latent, sigmas_for

    pooled_group, module = POOLED[family]
    frames, target = setup.frames[family], TARGET[family]
    torch.manual_seed(setup.seed)
    model, text = family_and_text(family, setup.model_seed)
    latent = empty_latent(model, setup.width, setup.height, frames)
    sigmas = sigmas_for(model, [float(s) for s in setup.timesteps.split(",")])
    encoded = definitions.PairEncoder.execute(text, "\n".join(setup.pairs), "\n".join(setup.neutral), "Rolex")[0]
    held = [(definitions._encode(text, u.strip()), definitions._encode(text, s.strip()))
            for u, s in (line.split("|") for line in setup.held)]
    base = differences(model, held, latent, sigmas, setup.seed, module)
    before = total(base, 0)
    result = {"family": family, "setup": setup.name, "target": target, "frames": frames,
              "d_before": before, "pooled_share": 1 - total(base, 1) / before, "groups": {}}
    vectors = {}
    for group in ("default", pooled_group, "all"):
        acts = definitions.CollectActivations.execute(model, encoded, setup.width, setup.height, frames,
                                                      setup.timesteps, setup.seed, group, 0, -1)[0]
        vectors[group] = basis = definitions.RefusalVectorNode.execute(acts, "cpca", setup.rank, 1.0)[0]
        patched = definitions.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, target)[0]
        after = differences(patched, held, latent, sigmas, setup.seed, module)
        comfy.model_management.unload_all_models()
        left = total(after, 0)
        result["groups"][group] = {"layers": list(basis.layers), "left": left / before,
                                   "pooled_share_of_left": 1 - total(after, 1) / left}
    result.update(check_on_all(model, text, vectors["all"], setup, frames, target))
    return result


def check_on_all(model, text, vector, setup: Setup, frames: int, target: str) -> dict:
    """(c): Unlearning Check on the ``all`` vector at strengths 0 and 1 with its 'layer groups' sweep: the vector's id
    (the check's table starts with it) and the removed share at strength 1 of all its layers and of each group."""
    import comfy.model_management

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import run_unlearning_check

    validation = definitions.PairEncoder.execute(text, "\n".join(setup.validation), "\n".join(setup.benign),
                                                 "Rolex")[0]
    main, swept = run_unlearning_check(model, vector, validation, "0, 1", group="all in vector",
                                       block_start=0, block_end=-1, target=target, width=setup.width,
                                       height=setup.height, length=frames, timesteps=setup.timesteps,
                                       seed=setup.seed, sweep="layer groups")
    comfy.model_management.unload_all_models()
    at_one = main.strengths.index(1.0)
    return {"all_vector_sha256": vector.content_sha256(),
            "check_removed": {"all layers": main.efficacy[at_one],
                              **{r.label: r.efficacy[r.strengths.index(1.0)] for r in swept}}}


def table(results: list[dict]) -> str:
    lines = ["RANDOM-weight tiny models (tests/host/tiny_models.py): these toys' shares, not a real model's",
             "family         setup  |d|     pooled  left: default  pooled grp  all   (pooled share of left)  "
             "check removed at 1 (all vector)"]
    for r in results:
        groups = list(r["groups"].values())
        left = "  ".join(f"{g['left']:6.0%}" for g in groups)
        via = "/".join(f"{g['pooled_share_of_left']:.0%}" for g in groups)
        check = ", ".join(f"{name} {share:.0%}" for name, share in r["check_removed"].items())
        lines.append(f"{r['family']:14s} {r['setup']:5s}  {r['d_before']:6.3f}  {r['pooled_share']:5.0%}   "
                     f"{left}  ({via})  {check}")
    return "\n".join(lines)


def chosen_setups(names: list[str] | None, setups: dict) -> list[str]:
    """The setup names asked for on the command line (all of ``setups`` when none), each checked to exist."""
    names = names or list(setups)
    unknown = [name for name in names if name not in setups]
    if unknown:
        raise ValueError(f"unknown setup {unknown[0]!r}: choose from {sorted(setups)}")
    return names


def main(argv=None, setups: dict | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--setups", nargs="+", default=None, help="names in SETUPS (default: all)")
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "pooled_paths.json")
    args = parser.parse_args(argv)
    setups = setups or SETUPS
    names = chosen_setups(args.setups, setups)
    setup_host()
    results = []
    with torch.inference_mode():
        for name in names:
            for family in args.families:
                results.append(measure(family, setups[name]))
    sys.stdout.write(table(results) + "\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"random_weights": True, "setups": {n: asdict(setups[n]) for n in names},
                                     "results": results}, indent=1))
    return results


#: A setting small enough for the host test (under a minute, not several): one held pair, one frame, one sigma.
SMOKE = replace(SETUPS["A"], name="smoke", held=HELD_A[:1], validation=HELD_A[:2],
                benign=("a cat on a sofa", "a boat on a lake"), width=32, height=32,
                frames={"hunyuan_video": 1, "mochi": 1}, timesteps="0.5", rank=2)

if __name__ == "__main__":
    main()
