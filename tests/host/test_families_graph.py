"""Collect Activations, Low-Rank Refusal Vector, Unlearning Check, Apply Unlearning and Unlearning Audit run on every
family's tiny model (ComfyUI's own model classes; text from a lookup table of the family's context width), not only on
Wan."""

from __future__ import annotations

import pytest
import torch

from test_adapters import TINY, tiny_model
from tiny_models import FamilyText

PAIRS = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
VALIDATION = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5))
NEUTRAL = "a dog in a park\na red car\na tree in the wind\na bowl of soup"
BENIGN = "a cat on a sofa\na boat on a lake\na bird in the sky\na train at a station"

#: The edit's target per family: the default layers of Mochi (text qkv), Cosmos Predict2 and Cosmos 1.0
#: (cross-attention k/v) have no bias for "safe_mean" to move.
TARGET = {"mochi": "zero", "cosmos_predict2": "zero", "cosmos1": "zero"}

#: Per family, what its ComfyUI text encoder hands the model: context rows (None: as many as the prompt's tokens, no
#: padding, as HunyuanVideo's Llama gives), context width, pooled width (None: no pooled output), attention mask (T5
#: encoders of LTXV, Mochi and Cosmos return one; HunyuanVideo's drops its mask when nothing is masked). Cosmos's
#: oldt5_xxl pads to 512 zero rows (here 32, the tiny width).
TEXT = {
    "hunyuan_video": (None, 64, 32, False),
    "ltxv": (32, 32, None, True),
    "mochi": (16, 32, None, True),
    "cosmos_predict2": (32, 32, None, True),
    "cosmos1": (32, 32, None, True),
}

pytestmark = pytest.mark.usefixtures("inference_mode")


def family_text(tiny, clip, rows, width, pooled, mask):
    """The real tokenizer with a lookup table (``tiny_models.LookupTextEncoder``: a row per token id, zeros after the
    end token) in place of the encoder, shaped as a family's own encoder output (a row of :data:`TEXT`)."""
    return FamilyText(tiny.LookupTextEncoder(clip, rows=rows or 64, width=width), rows, width, pooled, mask)


def measure_check_apply(model, text, target: str):
    """The graph up to the edit, at 64x64x9: Pair Encoder (the pairs, and held-out pairs with benign prompts) -> Collect
    Activations -> Low-Rank Refusal Vector -> Unlearning Check (with a negative prompt) -> Apply Unlearning at 1.
    Returns the activations, the vector, the check's (strength, chart, table), the patched clone and the negative."""
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import UnlearningCheck

    encoded = definitions.PairEncoder.execute(text, PAIRS, NEUTRAL, "Rolex")[0]
    held_out = definitions.PairEncoder.execute(text, VALIDATION, BENIGN, "Rolex")[0]
    activations = definitions.CollectActivations.execute(model, encoded, 64, 64, 9, "2", 0, "default", 0, -1)[0]
    basis = definitions.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    negative = text.encode_from_tokens_scheduled(text.tokenize("blurry"))
    out = UnlearningCheck.execute(model, basis, "0, 0.5, 1", "default", 0, -1, target, "none", 64, 64, 9, "0.1", 0,
                                  validation_pairs=held_out, negative=negative, cfg=5.0)
    patched = definitions.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, target)[0]
    return activations, basis, out.args, patched, negative


@pytest.mark.parametrize("family", list(TEXT))
def test_the_graph_runs_on_every_family(family, pack, wan, clip, tiny, tmp_path):
    import comfy.model_management
    import folder_paths
    import nodes as comfy_nodes

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.audit import UnlearningAudit
    from comfyui_video_unlearning.nodes.collect import empty_latent

    assert set(TEXT) == set(TINY) - {"wan"}
    model = tiny_model(family, wan)
    text = family_text(tiny, clip, *TEXT[family])
    target = TARGET.get(family, "safe_mean")
    try:
        activations, basis, (strength, _, table), patched, negative = measure_check_apply(model, text, target)
        positive = text.encode_from_tokens_scheduled(text.tokenize("a Rolex watch on a table"))
        latent = {"samples": empty_latent(model, 64, 64, 9)}

        def generate(m):
            return comfy_nodes.common_ksampler(m, 3, 2, 2.0, "euler", "simple", positive, negative, latent)[0]["samples"]

        before, unlearned, after = generate(model), generate(patched), generate(model)
        # the exported LoRA's keys are ones ComfyUI's stock loader maps onto this family's model (it drops others)
        folder_paths.add_model_folder_path("loras", str(tmp_path), is_default=True)
        definitions.ExportLoRA.execute(model, basis, 1.0, target, f"families/{family}")
        loaded = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, f"families/{family}_00001.safetensors",
                                                                        1.0)[0]
        via_lora = generate(loaded)
        # Unlearning Audit reads the exported LoRA, loaded by ComfyUI, as it reads Apply Unlearning's MODEL
        held_out = definitions.PairEncoder.execute(text, VALIDATION, BENIGN, "Rolex")[0]
        audits = [UnlearningAudit.execute(model, edited, held_out, 64, 64, 9, "0.1", 0, negative=negative,
                                          cfg=5.0).args for edited in (patched, loaded)]
    finally:
        comfy.model_management.unload_all_models()
    assert audits[1][:2] == pytest.approx(audits[0][:2], rel=1e-3, abs=1e-5)
    assert audits[0][1] > 0 and "guided collateral" in audits[0][2]  # the edit moves the prediction
    assert set(loaded.patches) == set(patched.patches) and patched.patches
    torch.testing.assert_close(via_lora, unlearned, rtol=1e-4, atol=1e-5)
    assert activations.family == family and basis.model_family == family
    assert "guided" in table and strength in (0.0, 0.5, 1.0)
    assert torch.equal(before, after) and not torch.equal(before, unlearned)


@pytest.mark.parametrize("family", list(TEXT))
def test_a_batch_of_prompts_predicts_what_one_call_per_prompt_does(family, pack, wan, clip, tiny):
    """The check's forward on prompts of different token counts equals each prompt evaluated alone: stacked where
    the family's model reads the batch as it reads one prompt (LTX-Video's batch of masks, Cosmos), one call each
    where it cannot (HunyuanVideo's prompts of their own lengths, Mochi's masks)."""
    import comfy.model_management

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.adapters import adapter_for
    from comfyui_video_unlearning.nodes.check import comfy_forward
    from comfyui_video_unlearning.nodes.collect import empty_latent, sigmas_for
    from comfyui_video_unlearning.nodes.conditioning import can_share_a_call

    model = tiny_model(family, wan)
    text = family_text(tiny, clip, *TEXT[family])
    rows = [definitions._encode(text, prompt) for prompt in ("a Rolex watch on a table", "a watch", "a red car")]
    latent = empty_latent(model, 64, 64, 9)
    forward = comfy_forward(model, latent, sigmas_for(model, [0.3, 0.7]), 0, [])
    try:
        together = forward(rows, None)
        alone = torch.cat([forward([row], None) for row in rows])
    finally:
        comfy.model_management.unload_all_models()
    shares = can_share_a_call(rows, batches_text_masks=adapter_for(model).batches_text_masks)
    assert shares == (family in ("ltxv", "cosmos_predict2", "cosmos1"))
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", list(TEXT))
def test_the_checks_negative_row_is_the_negative_prompt_the_sampler_reads(family, pack, wan, clip, tiny):
    """The check's negative row keeps the negative prompt's own attention mask and pooled output (it once took the
    first benign prompt's: LTX-Video's mask cut a long negative to a short prompt's tokens, Mochi's prediction was
    off by 9 %, HunyuanVideo's pooled output was another prompt's), so its prediction is the sampler's uncond."""
    import comfy.model_management

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import comfy_forward, negative_row
    from comfyui_video_unlearning.nodes.collect import empty_latent, sigmas_for

    model = tiny_model(family, wan)
    text = family_text(tiny, clip, *TEXT[family])
    benign = list(definitions.PairEncoder.execute(text, VALIDATION, "a cat\na boat on a lake", "")[0].neutral)
    negative = definitions._encode(text, "blurry, low quality, worst quality, jpeg artifacts, static, dull")
    row = negative_row(negative, benign)
    forward = comfy_forward(model, empty_latent(model, 64, 64, 9), sigmas_for(model, [0.5]), 0, [])
    try:
        check_row, sampler_row = forward([row], None), forward([negative], None)
    finally:
        comfy.model_management.unload_all_models()
    for key, value in negative[0][1].items():
        assert row[0][1][key] is value
    torch.testing.assert_close(check_row, sampler_row, rtol=0, atol=0)


def test_mochis_text_stream_is_pooled_over_the_prompts_own_tokens(pack, wan, clip, tiny):
    """Mochi pads its T5 context to a fixed length and attends to the prompt's tokens only; its text-stream layers
    (timestep-dependent, so not replayed or measured at one timestep) are still pooled over those tokens alone. Pooled
    over every row, as until 2026-12-06, the pair difference turned by about 50 degrees on the tiny model."""
    from comfyui_video_unlearning.nodes import definitions

    model = tiny_model("mochi", wan)
    text = family_text(tiny, clip, *TEXT["mochi"])
    encoded = definitions.PairEncoder.execute(text, PAIRS, NEUTRAL, "Rolex")[0]
    block = model.model.diffusion_model.blocks[0].attn.qkv_y
    seen = []
    handle = block.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().double().clone()))
    try:
        activations = definitions.CollectActivations.execute(model, encoded, 32, 32, 1, "1", 0, "default", 0, 0)[0]
    finally:
        handle.remove()
    basis = definitions.RefusalVectorNode.execute(activations, "mean", 1, 1.0)[0]
    # one call per prompt (Mochi crops a call to one token count): pair i's unsafe side, then its safe side
    masks = [side[0][1]["attention_mask"][0].bool() for side in encoded.safe]
    safe = torch.stack([seen[2 * i + 1][0][mask].mean(0) for i, mask in enumerate(masks)])
    assert all(not mask.all() for mask in masks), "the tiny prompts must leave padding rows"
    torch.testing.assert_close(basis["blocks.0.attn.qkv_y"].safe_mean.double(), safe.mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config_class, channels", [("CosmosT2V", 16), ("CosmosI2V", 17)])
def test_cosmos1s_token_major_text_is_pooled_per_prompt_over_its_own_tokens(config_class, channels, pack, clip, tiny):
    """Cosmos 1.0's cross-attention reads the text as (M B D), the batch second (its blocks run token-major). Collect
    Activations records one row per prompt, its own tokens' mean (the encoder's mask), in one call for all prompts:
    read as [batch, tokens, d], the recorder took the text rows for the batch and the prompts for tokens. The chart
    names its blocks by their index. The same for video2world (ComfyUI's CosmosI2V, the same model class: a 17th input
    channel for the start frames' mask, which it fills itself when no image is given)."""
    from comfyui_video_unlearning.nodes import definitions

    model = tiny.family_model(config_class, {**tiny.TINY_FAMILIES["cosmos1"][1], "in_channels": channels})
    assert type(model.model).__name__ == "CosmosVideo" and model.model.image_to_video == (channels == 17)
    text = family_text(tiny, clip, *TEXT["cosmos1"])
    encoded = definitions.PairEncoder.execute(text, PAIRS, NEUTRAL, "Rolex")[0]
    layer = "blocks.block1.blocks.1.block.attn.to_v.0"
    shapes = []
    handle = model.model.diffusion_model.get_submodule(layer).register_forward_pre_hook(
        lambda _module, args: shapes.append(tuple(args[0].shape)))
    try:
        activations = definitions.CollectActivations.execute(model, encoded, 64, 64, 9, "1", 0, "default", 0, -1)[0]
    finally:
        handle.remove()
    prompts = 2 * len(encoded.pairs) + len(encoded.neutral)
    assert shapes == [(TEXT["cosmos1"][0], prompts, TEXT["cosmos1"][1])]  # (M B D): all prompts in one call
    fitted = definitions.RefusalVectorNode.execute(activations, "mean", 1, 1.0)
    basis = fitted[0]
    masks = [side[0][1]["attention_mask"][0].bool() for side in encoded.safe]
    assert all(not mask.all() for mask in masks), "the tiny prompts must leave padding rows"
    safe = torch.stack([side[0][0][0][mask].double().mean(0) for side, mask in zip(encoded.safe, masks)])
    torch.testing.assert_close(basis[layer].safe_mean.double(), safe.mean(0), rtol=1e-5, atol=1e-6)
    # the chart reads block0, block1 as the blocks (it read 'blocks.block1.block 1' for the second)
    bars = fitted.ui["video_unlearning_chart"][0]["bars"]
    assert [bar["label"] for bar in bars] == [
        "text context: blocks 0-1 blocks.1.block.attn.to_k.0+blocks.1.block.attn.to_v.0 share this input"]


def test_one_call_each_measures_what_a_masked_batch_does(pack, wan, clip, tiny):
    """The same prompts given two ways to LTX-Video: each at its own token count (one call per prompt, the recorder's
    token mask taken row by row) and padded to one length with an attention mask (one stacked call).
    Collect Activations fits the same vector and Unlearning Check reports the same figures."""
    import comfy.model_management

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import run_unlearning_check

    model = tiny_model("ltxv", wan)
    results = {}
    try:
        for name, shape in (("own lengths", (None, 32, None, True)), ("padded, masked", (32, 32, None, True))):
            text = family_text(tiny, clip, *shape)
            encoded = definitions.PairEncoder.execute(text, PAIRS, NEUTRAL, "Rolex")[0]
            held_out = definitions.PairEncoder.execute(text, VALIDATION, BENIGN, "Rolex")[0]
            activations = definitions.CollectActivations.execute(model, encoded, 64, 64, 9, "2", 0, "default", 0,
                                                                 -1)[0]
            basis = definitions.RefusalVectorNode.execute(activations, "mean", 1, 1.0)[0]
            check, _ = run_unlearning_check(model, basis, held_out, "0, 1, 2", group="default", block_start=0,
                                            block_end=-1, target="safe_mean", width=64, height=64, length=9,
                                            timesteps="0.3", seed=0)
            results[name] = basis, check
    finally:
        comfy.model_management.unload_all_models()
    (own, own_check), (padded, padded_check) = results["own lengths"], results["padded, masked"]
    layer = "transformer_blocks.0.attn2.to_k"
    torch.testing.assert_close(own[layer].vector, padded[layer].vector, rtol=1e-4, atol=1e-6)
    assert own_check.efficacy == pytest.approx(padded_check.efficacy, abs=1e-4)
    assert own_check.collateral_prediction == pytest.approx(padded_check.collateral_prediction, rel=1e-3, abs=1e-6)
    assert own_check.efficacy[2] > own_check.efficacy[1] > 0


@pytest.mark.parametrize("config_class, channels", [("HunyuanVideoI2V", 33), ("HunyuanVideoSkyreelsI2V", 32)])
def test_the_graph_runs_on_hunyuan_video_image_to_video(config_class, channels, pack, clip, tiny):
    """HunyuanVideo's image-to-video models (ComfyUI's classes for the I2V release, 33 input channels, and SkyReels,
    32) take the start image as latent channels concatenated to the noise. The pairs are measured without one (the
    model reads a zero image, as ComfyUI gives it when no image is set); sampling with the image that
    ``HunyuanImageToVideo`` ("v1 (concat)") attaches changes only on the patched clone."""
    import comfy.model_management
    import nodes as comfy_nodes

    from comfyui_video_unlearning.nodes.collect import empty_latent

    model = tiny.family_model(config_class, {**tiny.TINY_FAMILIES["hunyuan_video"][1], "in_channels": channels})
    assert type(model.model).__name__ == config_class
    text = family_text(tiny, clip, *TEXT["hunyuan_video"])
    patch_inputs = []  # the latent the model's patch embedding reads: noise and image channels
    hook = model.model.diffusion_model.img_in.register_forward_pre_hook(lambda m, a: patch_inputs.append(a[0].shape[1]))
    try:
        _, basis, (strength, _, table), patched, negative = measure_check_apply(model, text, "safe_mean")
        latent = empty_latent(model, 64, 64, 9)
        image = torch.randn(1, 16, 1, *latent.shape[-2:], generator=torch.Generator().manual_seed(0))
        mask = torch.ones(1, 1, *latent.shape[-3:])
        mask[:, :, :1] = 0.0
        start = {"concat_latent_image": image, "concat_mask": mask}
        positive = [[c, {**extras, **start}] for c, extras in
                    text.encode_from_tokens_scheduled(text.tokenize("a Rolex watch on a table"))]

        def generate(m):
            return comfy_nodes.common_ksampler(m, 3, 2, 2.0, "euler", "simple", positive, negative,
                                               {"samples": latent})[0]["samples"]

        before, unlearned, after = generate(model), generate(patched), generate(model)
    finally:
        hook.remove()
        comfy.model_management.unload_all_models()
    assert set(patch_inputs) == {channels}
    assert basis.model_family == "hunyuan_video" and "guided" in table and strength in (0.0, 0.5, 1.0)
    assert torch.equal(before, after) and not torch.equal(before, unlearned)


@pytest.mark.parametrize("family", list(TEXT))
def test_a_pair_written_the_other_way_round_is_named_on_every_family(family, pack, wan, clip, tiny):
    """Low-Rank Refusal Vector judges each pair at the text-side inputs, a text stream included: HunyuanVideo's
    txt_mlp.0 / txt_attn.qkv were not counted as text-side, and its notes were dropped (a review's measure: shares
    -1.52, no note)."""
    from comfyui_video_unlearning.nodes import definitions as nodes

    lines = [f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5)]
    lines[2] = "a watch number 2 on a table | a Rolex watch number 2 on a table"
    model = tiny_model(family, wan)
    text = tiny.LookupTextEncoder(clip) if family == "wan" else family_text(tiny, clip, *TEXT[family])
    with torch.inference_mode():
        encoded = nodes.PairEncoder.execute(text, "\n".join(lines), "a dog\na red car\na tree\na bowl of soup",
                                            "Rolex")[0]
        activations = nodes.CollectActivations.execute(model, encoded, 64, 64, 9, "2", 0, "default", 0, -1)[0]
        notes = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0).ui["video_unlearning_chart"][0][
            "pair_notes"]
    assert len(notes) == 1 and notes[0].startswith("line 3:") and "swapped" in notes[0], (family, notes)
