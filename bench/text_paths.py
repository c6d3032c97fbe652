"""Does every path from the prompt to the prediction go through a layer the default group edits? (a benchmark, not a
test; docs/benchmarks.md "Where the proxy misleads", token counts). RANDOM weights: the shares are these toys', not a real model's.

The models are the host tests' tiny ones (``tests/host/tiny_models.py``, ``test_adapters.TINY_VACE``; an exception to
"benchmarks never import tests/", as ``bench/pooled_paths.py``). For each model and 4 held-out Rolex pairs (the setup
A of ``bench/pooled_paths.py``):
  d        = pred(unsafe) - pred(safe), at sigmas 0.3/0.6/0.9 (comfy_forward, one prompt per call, fresh each time)
  around   = |d'| / |d| with the unsafe side fed the safe side's INPUT at every default-group layer (all blocks,
             VACE side blocks included): what reaches the prediction around the default layers
  +pooled  = the same, also replaying Mochi's t5_y_embedder output
  +mask    = the same, also giving the unsafe row the safe row's attention_mask: every text-derived tensor replayed,
             must be 0 if the path list is complete
  left     = |d| after Apply Unlearning (default vector, cpca rank 4, strength 1, 0..-1) over |d| before;
  left_around = the part of that which goes around the default layers (replay on the patched model), over |d| before
Pairs whose sides have the same token count (``HELD_SAME_LENGTH``) are measured beside them on LTX-Video and Mochi.

    python bench/text_paths.py [names...]

About 25 minutes for every model on 2 CPU cores. Prints one line per model; writes ``out/text_paths_<names>.json``.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

PAIRS = tuple(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(6))
NEUTRAL = ("a dog in a park", "a red car", "a tree in the wind", "a bowl of soup")
HELD = ("a shiny Rolex timepiece in a box | a shiny timepiece in a box",
        "a gold Rolex on a wrist | a gold watch on a wrist",
        "a Rolex watch on a table | a watch on a table",
        "an old Rolex in the rain | an old watch in the rain")
#: the same-length control: the safe side replaces the word instead of dropping it
#: (each word 2 tokens, as "Rolex", in the tiny tests' pile-T5 tokenizer: asserted below)
HELD_SAME_LENGTH = ("a shiny Rolex timepiece in a box | a shiny Seiko timepiece in a box",
                    "a gold Rolex on a wrist | a gold Casio on a wrist",
                    "a Rolex watch on a table | a Timex watch on a table",
                    "an old Rolex in the rain | an old Omega in the rain")
SIGMAS = "0.3, 0.6, 0.9"

WAN_BASE = {"image_model": "wan2.1", "dim": 128, "ffn_dim": 256, "num_layers": 2, "num_heads": 1, "in_dim": 16,
            "out_dim": 16, "text_dim": 4096, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1),
            "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}


def setup_host():
    import nodes_perf

    nodes_perf.setup_host()
    sys.path.insert(0, str(ROOT / "tests" / "host"))


def specs():
    import comfy.sd
    import tiny_models as tiny
    from test_adapters import TINY_VACE

    clip = tiny.tiny_wan_clip()
    wan_text = tiny.LookupTextEncoder(clip)

    def fam(name, rows, width):
        return tiny.FamilyText(tiny.LookupTextEncoder(clip, rows=rows, width=width), rows, width, None, True)

    vision = types.SimpleNamespace(penultimate_hidden_states=torch.randn(
        1, 257, 1280, generator=torch.Generator().manual_seed(5)))
    return {
        "wan_t2v": (lambda: tiny.load_tiny_wan(), wan_text, "safe_mean", 9, None),
        "wan22_ti2v_5b": (lambda: tiny.load_tiny_wan(state=tiny.tiny_wan22_5b_state_dict()), wan_text, "safe_mean",
                          9, None),
        "wan_i2v": (lambda: tiny.load_tiny_wan(state=tiny.tiny_wan_state_dict(i2v=True)), wan_text, "safe_mean", 9,
                    None),
        "wan_i2v+clipvision": (lambda: tiny.load_tiny_wan(state=tiny.tiny_wan_state_dict(i2v=True)), wan_text,
                               "safe_mean", 9, vision),
        "wan_vace": (lambda: tiny.family_model("WAN21_Vace", TINY_VACE), wan_text, "safe_mean", 9, None),
        "wan_camera": (lambda: tiny.family_model("WAN21_Camera", {**WAN_BASE, "model_type": "camera", "in_dim": 32}),
                       wan_text, "safe_mean", 9, None),
        "wan_s2v": (lambda: tiny.family_model("WAN22_S2V", {**WAN_BASE, "model_type": "s2v"}), wan_text, "safe_mean",
                    9, None),
        "wan_animate": (lambda: tiny.family_model("WAN22_Animate", {**WAN_BASE, "model_type": "animate",
                                                                    "in_dim": 36}), wan_text, "safe_mean", 9, None),
        "wan_humo": (lambda: tiny.family_model("WAN21_HuMo", {**WAN_BASE, "model_type": "humo"}), wan_text,
                     "safe_mean", 9, None),
        "ltxv": (lambda: tiny.family_model(*tiny.TINY_FAMILIES["ltxv"]), fam("ltxv", 32, 32), "safe_mean", 9, None),
        "mochi": (lambda: tiny.family_model(*tiny.TINY_FAMILIES["mochi"]), fam("mochi", 16, 32), "zero", 13, None),
        "cosmos_predict2": (lambda: tiny.family_model(*tiny.TINY_FAMILIES["cosmos_predict2"]),
                            fam("cosmos", 32, 32), "zero", 9, None),
        "cosmos1": (lambda: tiny.family_model(*tiny.TINY_FAMILIES["cosmos1"]), fam("cosmos", 32, 32), "zero", 9,
                    None),
    }


def forward(model, latent, sigmas, row):
    from comfyui_video_unlearning.nodes.check import comfy_forward

    return comfy_forward(model, latent, sigmas, 0, [])([row], None)


def replayed(model, latent, sigmas, unsafe, safe, inputs=(), outputs=(), mask=False):
    """The unsafe prediction with the safe side's input at ``inputs`` and output at ``outputs`` (modules), call by
    call, and with the safe row's attention_mask when ``mask``."""
    diffusion = model.model.diffusion_model
    seen = {name: [] for name in (*inputs, *outputs)}
    handles = []
    for name in inputs:
        handles.append(diffusion.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: seen[name].append(args[0].clone())))
    for name in outputs:
        handles.append(diffusion.get_submodule(name).register_forward_hook(
            lambda _m, _a, out, name=name: seen[name].append(out.clone())))
    try:
        p_safe = forward(model, latent, sigmas, safe)
    finally:
        for h in handles:
            h.remove()
    calls = {name: iter(values) for name, values in seen.items()}
    handles = []
    for name in inputs:
        handles.append(diffusion.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: (next(calls[name]), *args[1:])))
    for name in outputs:
        handles.append(diffusion.get_submodule(name).register_forward_hook(
            lambda _m, _a, _out, name=name: next(calls[name])))
    row = unsafe
    if mask:
        row = [[c, {**extras, "attention_mask": safe[i][1].get("attention_mask")}] for i, (c, extras) in
               enumerate(unsafe)]
    try:
        p_same = forward(model, latent, sigmas, row)
    finally:
        for h in handles:
            h.remove()
    for name, it in calls.items():
        assert next(it, None) is None, f"{name}: calls differ between the sides"
    return p_same - p_safe


def norm(diffs) -> float:
    return float(sum(float(d.double().norm()) ** 2 for d in diffs) ** 0.5)


def measure(name, build, text, target, frames, vision) -> dict:
    import comfy.model_management

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.adapters import adapter_for, layers_for
    from comfyui_video_unlearning.nodes.collect import empty_latent, sigmas_for

    torch.manual_seed(0)
    model = build()
    adapter = adapter_for(model)
    default = layers_for(model, "default")
    pooled = ["t5_y_embedder"] if adapter.family == "mochi" else []
    has_mask = adapter.family in ("ltxv", "mochi")
    latent = empty_latent(model, 64, 64, frames)
    sigmas = sigmas_for(model, [float(s) for s in SIGMAS.split(",")])

    def enc(prompt):
        return definitions._with_vision(definitions._encode(text, prompt.strip()), vision)

    def pairs_of(lines):
        return [(enc(u), enc(s)) for u, s in (line.split("|") for line in lines)]

    def analyse(m, held, same_length=False):
        out = {}
        if same_length:
            for u, s in held:
                assert int(u[0][1]["attention_mask"].sum()) == int(s[0][1]["attention_mask"].sum()), "token counts"
        d = [forward(m, latent, sigmas, u) - forward(m, latent, sigmas, s) for u, s in held]
        out["d"] = norm(d)
        out["around"] = norm([replayed(m, latent, sigmas, u, s, default) for u, s in held])
        if pooled:
            out["pooled_only"] = norm([replayed(m, latent, sigmas, u, s, (), pooled) for u, s in held])
            out["around_pooled"] = norm([replayed(m, latent, sigmas, u, s, default, pooled) for u, s in held])
        if has_mask:
            out["all_replayed"] = norm([replayed(m, latent, sigmas, u, s, default, pooled, True) for u, s in held])
        comfy.model_management.unload_all_models()
        return out

    result = {"name": name, "class": type(model.model).__name__, "family": adapter.family,
              "default_layers": default, "target": target}
    with torch.inference_mode():
        base = analyse(model, pairs_of(HELD))
        result["before"] = base
        if has_mask:
            result["same_length_before"] = analyse(model, pairs_of(HELD_SAME_LENGTH), True)
        encoded = definitions.PairEncoder.execute(text, "\n".join(PAIRS), "\n".join(NEUTRAL), "Rolex")[0]
        groups = ["default"] + (["all"] if adapter.family in ("ltxv", "mochi") else [])
        for group in groups:
            acts = definitions.CollectActivations.execute(model, encoded, 64, 64, frames, SIGMAS, 0, group, 0, -1)[0]
            basis = definitions.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]
            patched = definitions.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1,
                                                          target)[0]
            after = analyse(patched, pairs_of(HELD))
            result[f"after_{group}"] = after
            if has_mask:
                result[f"same_length_after_{group}"] = analyse(patched, pairs_of(HELD_SAME_LENGTH), True)
            comfy.model_management.unload_all_models()
    return result


def line(r) -> str:
    b = r["before"]
    parts = [f"{r['name']:20s} {r['class']:14s} |d| {b['d']:.4f}  around default {b['around'] / b['d']:7.2%}"]
    if "pooled_only" in b:
        parts.append(f"pooled only {b['pooled_only'] / b['d']:6.2%}")
    if "around_pooled" in b:
        parts.append(f"+pooled {b['around_pooled'] / b['d']:6.2%}")
    if "all_replayed" in b:
        parts.append(f"+mask {b['all_replayed'] / b['d']:.1e}")
    for key in ("after_default", "after_all"):
        if key in r:
            a = r[key]
            extra = f" (around {a['around'] / b['d']:.2%}" + (
                f", around+pooled {a['around_pooled'] / b['d']:.2%})" if "around_pooled" in a else ")")
            parts.append(f"{key}: left {a['d'] / b['d']:.0%}{extra}")
    for key in ("same_length_before", "same_length_after_default", "same_length_after_all"):
        if key in r:
            s = r[key]
            ref = r["same_length_before"]["d"]
            parts.append(f"{key}: |d|/ref {s['d'] / ref:.0%} around {s['around'] / ref:.2%}"
                         + (f" +pooled {s['around_pooled'] / ref:.2%} pooled only {s['pooled_only'] / ref:.2%}"
                            if "around_pooled" in s else ""))
    return "\n    ".join(parts)


def main(argv):
    setup_host()
    table = specs()
    names = argv or list(table)
    results = []
    out = ROOT / "out" / ("text_paths_" + "_".join(names) + ".json")
    out.parent.mkdir(exist_ok=True)
    for name in names:
        r = measure(name, *table[name])
        results.append(r)
        sys.stdout.write(line(r) + "\n")
        sys.stdout.flush()
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
