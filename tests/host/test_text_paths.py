"""Every path from the prompt to the prediction passes through a layer the pack edits: given the safe side's inputs at
every layer of ``all``, the unsafe side's prediction is the safe side's, exactly, on each family's tiny model (a pair
of equal token count, so that the attention mask and the sequence length are the same on both sides). Where the
default group covers every path (Wan, LTX-Video, Cosmos Predict2, Cosmos 1.0) its layers alone do it; on HunyuanVideo
and Mochi the default leaves the pooled text path (docs/architectures.md, "Pooled text paths"), which is why ``all``
exists. A new text path in an adapter, or a layer left out of a group, fails here. The replay is
bench/text_paths.py's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from script_module import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench"
PAIR = "a gold Rolex on a wrist | a gold Casio on a wrist"  # each brand two tokens in the tiny tests' tokenizer


def _bench(name: str):
    return load_script(BENCH / f"{name}.py", f"{name}_bench")


@pytest.mark.parametrize("family, default_covers", [
    ("wan_t2v", True), ("wan_vace", True), ("ltxv", True), ("cosmos_predict2", True), ("cosmos1", True),
    ("mochi", False), ("hunyuan_video", False)])
def test_the_safe_inputs_of_the_edited_layers_give_the_safe_prediction(pack, family, default_covers):
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.adapters import layers_for
    from comfyui_video_unlearning.nodes.collect import empty_latent, sigmas_for

    paths = _bench("text_paths")
    torch.manual_seed(0)
    if family == "hunyuan_video":
        model, text = _bench("pooled_paths").family_and_text("hunyuan_video", 0)
        frames, vision = 9, None
    else:
        build, text, _target, frames, vision = paths.specs()[family]
        model = build()
    unsafe, safe = (definitions._with_vision(definitions._encode(text, side.strip()), vision) for side in
                    PAIR.split("|"))
    assert unsafe[0][0].shape == safe[0][0].shape  # the same token count: the replay fits row for row
    latent = empty_latent(model, 64, 64, frames)
    sigmas = sigmas_for(model, [0.6])
    with torch.inference_mode():
        difference = paths.forward(model, latent, sigmas, unsafe) - paths.forward(model, latent, sigmas, safe)
        left = {group: paths.replayed(model, latent, sigmas, unsafe, safe, layers_for(model, group)).norm()
                / difference.norm() for group in ("default", "all")}
    assert difference.norm() > 0
    assert left["all"] == 0, left
    assert (left["default"] == 0) == default_covers, left
