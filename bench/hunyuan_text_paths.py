"""Where HunyuanVideo's prompt reaches the video, and what each layer group leaves of it, on the tiny HunyuanVideo
(a benchmark, not a test). RANDOM weights: the shares are this toy's, not a real model's, and they move with the setup
(the second setup shows how much).

HunyuanVideo reads the prompt two ways: CLIP-L's pooled vector through ``vector_in`` into the modulation of every
block, and the text tokens through ``txt_in`` (the token refiner) into the text stream of the double blocks, which is
then concatenated with the video tokens and read by every single-stream block (``linear1`` reads both). The groups
``txt_mlp.0`` (default) and ``txt_attn.qkv`` edit the text stream inside the double blocks only; what the text
residual still carries past them reaches the video in the single blocks. ``txt_in`` edits the text where it enters the
model (``txt_in.input_embedder``, and ``txt_in.c_embedder.in_layer``, which reads the mean of the same rows).

The model, text stand-in and setups are bench/pooled_paths.py's (the host tests' tiny HunyuanVideo; the pooled
output is the mean of the prompt's token rows). For each setup:

(a) shares of a held-out pair's prediction difference d = prediction(unsafe) - prediction(safe): 1 - |d'| / |d|, where
    d' is the same difference with the unsafe side given the safe side's
    - ``single text``: text rows at the input of the first single block (a pre-hook swaps in the safe side's text
      rows and their rotary embedding, sigma by sigma; the video rows stay the unsafe side's);
    - ``pooled``: vector_in output (as pooled_paths.py);
    - ``both``: both at once (what is left of d then went through the double blocks' video tokens only).
    |.| is the root sum of squares over the pairs.
(b) ``left``: |d| after Apply Unlearning at strength 1 ('all in vector', every block, target safe_mean) over |d|
    before, for the vector of each group in ``GROUPS`` (those the adapter has); ``token path left``: the same for d'
    of ``pooled`` (what reaches the video through the text tokens alone, the pooled vector replayed on both models);
    and the single-text share of what is left. For ``txt_in``, also how much of each held pair's token-mean difference
    lies in the vector's span (what the vector was fitted on), and for pairs of equal token count how much of their
    rows' difference, row by row (the part the edit removes from the text the model reads).
(c) Unlearning Check on the ``all`` vector, strength grid 0, 1, 'layer groups' sweep: each group's removed share at
    strength 1, and all its layers'.
(a) and (b) are also measured on held pairs whose sides have the same token count (``same_length``): the safe side
replaces "Rolex" with another brand of as many tokens (``BRANDS``; asserted) instead of the generic word. HunyuanVideo
reads each prompt's own token rows, so in "a Rolex watch | a watch" the unsafe side has more text rows for the video to
attend to, a difference no edit of a direction removes (docs/benchmarks.md "Where the proxy misleads", token counts); the
equal-length pairs tell whether that is what the text groups leave. Setup A's are bench/text_paths.py's
``HELD_SAME_LENGTH``.

    python bench/hunyuan_text_paths.py [--setups A B] [--json out/hunyuan_text_paths.json]

Both setups: 4.5 min on this project's 2 CPU cores shared with other work (41 s idle before the equal-length pairs
doubled (a) and (b); not measured idle since). Prints a table; writes ``out/hunyuan_text_paths.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

# SMOKE: pooled_paths.py's tiny setting, which the host test runs this bench on
from pooled_paths import (SETUPS, SMOKE, check_on_all, chosen_setups, family_and_text, setup_host,  # noqa: E402,F401
                          total)

FAMILY = "hunyuan_video"
TARGET = "safe_mean"
#: The groups whose vectors are applied in (b), in the table's order (a group the adapter lacks is skipped).
GROUPS = ("txt_mlp.0", "txt_attn.qkv", "txt_in", "vector_in", "all")
#: (a)'s replays: name -> which of (single text, pooled vector) the unsafe side takes from the safe side.
REPLAYS = {"single text": (True, False), "pooled": (False, True), "both": (True, True)}
#: The concept word of every setup's held pairs, and the brands that stand for it on the safe side of the equal-length
#: pairs, in turn (each as many tokens as "Rolex" in the tiny tests' pile-T5 tokenizer: measure() checks each pair).
CONCEPT = "Rolex"
BRANDS = ("Seiko", "Casio", "Timex", "Omega")


def _tokens(conditioning) -> int:
    return conditioning[0][0].shape[1]


def differences(model, held, latent, sigmas, seed: int) -> list[dict]:
    """Per held pair: ``{"d": unsafe - safe, name: the same with the safe side's replayed parts}`` for ``REPLAYS``."""
    from comfyui_video_unlearning.nodes.check import comfy_forward

    diffusion = model.model.diffusion_model
    single, pool = diffusion.single_blocks[0], diffusion.vector_in

    def run(conditioning, *hooks):
        # a fresh forward each time: one that has seen the rows would replay them past the hooks
        handles = [register(fn) for register, fn in hooks]
        try:
            return comfy_forward(model, latent, sigmas, seed, [])([conditioning], None)
        finally:
            for handle in handles:
                handle.remove()

    out = []
    for unsafe, safe in held:
        safe_text, safe_pe, safe_pool = [], [], []
        text_count = _tokens(safe)

        def keep_text(_module, args, kwargs):
            safe_text.append(args[0][:, -text_count:].clone())
            safe_pe.append(kwargs["pe"].clone())

        p_safe = run(safe, (lambda fn: single.register_forward_pre_hook(fn, with_kwargs=True), keep_text),
                     (pool.register_forward_hook, lambda _m, _a, output: safe_pool.append(output.clone())))
        row = {"d": run(unsafe) - p_safe}
        unsafe_count = _tokens(unsafe)
        for name, (text_too, pooled_too) in REPLAYS.items():
            texts, pes, pools = iter(safe_text), iter(safe_pe), iter(safe_pool)  # one per model call (sigma), in order

            def swap_text(_module, args, kwargs):
                video = args[0][:, :-unsafe_count]  # the text rows are last (torch.cat((img, txt), 1))
                # the text rows' rotary positions come with them: HunyuanVideo gives every text row the same id
                return (torch.cat([video, next(texts)], 1), *args[1:]), {**kwargs, "pe": next(pes)}

            hooks = []
            if text_too:
                hooks.append((lambda fn: single.register_forward_pre_hook(fn, with_kwargs=True), swap_text))
            if pooled_too:
                hooks.append((pool.register_forward_hook, lambda _m, _a, _output: next(pools)))
            row[name] = run(unsafe, *hooks) - p_safe
        out.append(row)
    return out


def same_length(held: tuple[str, ...]) -> tuple[str, ...]:
    """``held``'s pairs with the safe side replaced by the unsafe side with ``CONCEPT`` swapped for a brand (``BRANDS``
    in turn): the sides then differ in the concept word alone."""
    pairs = []
    for i, line in enumerate(held):
        unsafe = line.split("|")[0].strip()
        if CONCEPT not in unsafe:
            raise ValueError(f"held pair {line!r} has no {CONCEPT!r} on its unsafe side to replace: write one that has")
        pairs.append(f"{unsafe} | {unsafe.replace(CONCEPT, BRANDS[i % len(BRANDS)])}")
    return tuple(pairs)


def in_span(basis, held) -> list[float]:
    """Per held pair: how much of its text's difference (the token means, as txt_in's record pools them) lies in the
    txt_in vector's span, |(m_u - m_s) U| / |m_u - m_s|: the part of the mean the edit removes (the edit acts on
    each row: ``rows_in_span``)."""
    u = basis.subspace("txt_in.input_embedder").double()  # [d, c]
    shares = []
    for unsafe, safe in held:
        difference = unsafe[0][0][0].double().mean(0) - safe[0][0][0].double().mean(0)  # [d]
        shares.append(float((difference @ u).norm() / difference.norm()))
    return shares


def rows_in_span(basis, held) -> list[float]:
    """Per held pair of equal token count: how much of its text rows' difference lies in the txt_in vector's span,
    |(R_u - R_s) U| / |R_u - R_s| over all rows (Frobenius): what the edit removes from the rows the model reads, row by
    row, where ``in_span`` measures their mean, which the vector was fitted on."""
    u = basis.subspace("txt_in.input_embedder").double()  # [d, c]
    shares = []
    for unsafe, safe in held:
        difference = unsafe[0][0][0].double() - safe[0][0][0].double()  # [tokens, d]
        shares.append(float((difference @ u).norm() / difference.norm()))
    return shares


def norm(diffs, key: str) -> float:
    return total([(d[key],) for d in diffs], 0)


def left_of(base, after) -> dict:
    """What an edit leaves (``after``'s differences) of the unedited ones (``base``): of d, of its text-token path, and
    the single-text share of what is left."""
    left = norm(after, "d")
    return {"left": left / norm(base, "d"), "token_path_left": norm(after, "pooled") / norm(base, "pooled"),
            "single_text_share_of_left": 1 - norm(after, "single text") / left}


def measure(setup) -> dict:
    import comfy.model_management

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.adapters import adapter_for
    from comfyui_video_unlearning.nodes.collect import empty_latent, sigmas_for

    frames = setup.frames[FAMILY]
    torch.manual_seed(setup.seed)
    model, text = family_and_text(FAMILY, setup.model_seed)
    latent = empty_latent(model, setup.width, setup.height, frames)
    sigmas = sigmas_for(model, [float(s) for s in setup.timesteps.split(",")])
    encoded = definitions.PairEncoder.execute(text, "\n".join(setup.pairs), "\n".join(setup.neutral), "Rolex")[0]

    def encode(lines):
        return [(definitions._encode(text, u.strip()), definitions._encode(text, s.strip()))
                for u, s in (line.split("|") for line in lines)]

    held = encode(setup.held)
    held_same = encode(same_length(setup.held))
    for line, (unsafe, safe) in zip(same_length(setup.held), held_same):
        if _tokens(unsafe) != _tokens(safe):
            raise ValueError(f"equal-length pair {line!r} has {_tokens(unsafe)} and {_tokens(safe)} tokens: choose "
                             f"brands in BRANDS that tokenize to as many tokens as {CONCEPT!r}")
    base = differences(model, held, latent, sigmas, setup.seed)
    base_same = differences(model, held_same, latent, sigmas, setup.seed)
    before = norm(base, "d")
    result = {"setup": setup.name, "target": TARGET, "frames": frames, "d_before": before,
              "shares": {name: 1 - norm(base, name) / before for name in REPLAYS},
              "same_length": {"pairs": list(same_length(setup.held)), "d_before": norm(base_same, "d"),
                              "shares": {name: 1 - norm(base_same, name) / norm(base_same, "d") for name in REPLAYS}},
              "groups": {}}
    groups = [g for g in GROUPS if g == "all" or g in adapter_for(model).groups]
    vectors = {}
    for group in groups:
        acts = definitions.CollectActivations.execute(model, encoded, setup.width, setup.height, frames,
                                                      setup.timesteps, setup.seed, group, 0, -1)[0]
        vectors[group] = basis = definitions.RefusalVectorNode.execute(acts, "cpca", setup.rank, 1.0)[0]
        patched = definitions.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, TARGET)[0]
        after = differences(patched, held, latent, sigmas, setup.seed)
        after_same = differences(patched, held_same, latent, sigmas, setup.seed)
        comfy.model_management.unload_all_models()
        result["groups"][group] = {"layers": list(basis.layers), **left_of(base, after),
                                   "same_length": left_of(base_same, after_same)}
        if group == "txt_in":
            result["groups"][group]["held_in_span"] = in_span(basis, held)
            result["groups"][group]["same_length"]["held_in_span"] = in_span(basis, held_same)
            result["groups"][group]["same_length"]["rows_in_span"] = rows_in_span(basis, held_same)
    result.update(check_on_all(model, text, vectors["all"], setup, frames, TARGET))
    return result


def table(results: list[dict]) -> str:
    lines = ["RANDOM-weight tiny HunyuanVideo (tests/host/tiny_models.py): this toy's shares, not a real model's"]

    def left_line(group, g, indent):
        lines.append(f"{indent}left by {group:13s} {g['left']:6.1%}, of the token path {g['token_path_left']:6.1%}  "
                     f"(single-text share of what is left {g['single_text_share_of_left']:.0%})")
        if "held_in_span" in g:
            lines.append(f"{indent}  held pairs' token-mean difference in the vector's span: "
                         + ", ".join(f"{share:.0%}" for share in g["held_in_span"]))
        if "rows_in_span" in g:
            lines.append(f"{indent}  their rows' difference in the vector's span: "
                         + ", ".join(f"{share:.0%}" for share in g["rows_in_span"]))

    for r in results:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in r["shares"].items())
        lines.append(f"setup {r['setup']}: |d| {r['d_before']:.3f}; through: {shares}")
        for group, g in r["groups"].items():
            left_line(group, g, "  ")
        same = r["same_length"]
        shares = ", ".join(f"{name} {share:.0%}" for name, share in same["shares"].items())
        lines.append(f"  held pairs of equal token count: |d| {same['d_before']:.3f}; through: {shares}")
        for group, g in r["groups"].items():
            left_line(group, g["same_length"], "    ")
        check = ", ".join(f"{name} {share:.0%}" for name, share in r["check_removed"].items())
        lines.append(f"  check on the all vector, removed at strength 1: {check}")
    return "\n".join(lines)


def main(argv=None, setups: dict | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", nargs="+", default=None, help="names in SETUPS (default: all)")
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "hunyuan_text_paths.json")
    args = parser.parse_args(argv)
    setups = setups or SETUPS
    names = chosen_setups(args.setups, setups)
    setup_host()
    with torch.inference_mode():
        results = [measure(setups[name]) for name in names]
    sys.stdout.write(table(results) + "\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"random_weights": True, "setups": {n: asdict(setups[n]) for n in names},
                                     "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
