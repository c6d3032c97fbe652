"""The per-family tables of ``nodes/adapters.py`` read back rule by rule: how each layer's input is measured (one
timestep, pooled over the prompt's tokens, judged pair by pair, read once for a group), which blocks a range means,
and how a family's VAE compresses a video. Each test pins a rule whose wrong version gave no host-test failure in the
mutation test of 2026-12-07 (a text-stream layer no longer judged pair by pair, block_start -1 taken silently, a
pooled row token-masked)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def adapters(pack):
    from comfyui_video_unlearning.nodes import adapters

    return adapters


T, F = True, False
#: family -> layer suffix -> (timestep independent, read per text token, per token with a CLIP-vision output,
#: text side (judged pair by pair), shared input)
RULES = {
    "wan": {
        "cross_attn.k": (T, T, T, T, "text_embedding"), "cross_attn.v": (T, T, T, T, "text_embedding"),
        # an image-to-video Wan's image keys read the image's tokens when the conditioning carries a vision output
        "cross_attn.k_img": (T, T, F, T, "text_embedding"), "cross_attn.v_img": (T, T, F, T, "text_embedding"),
        "cross_attn.o": (F, F, F, F, ""), "ffn.0": (F, F, F, F, ""),
    },
    "hunyuan_video": {
        # its text stream has no padding: never token-masked, but the text's own rows, judged pair by pair
        "txt_mlp.0": (F, F, F, T, ""), "txt_attn.qkv": (F, F, F, T, ""),
        "vector_in.in_layer": (T, F, F, T, ""),  # one pooled row per prompt: no token mask fits it
        # the text where it enters: one record; the token rows pooled over the prompt's, their mean one row per prompt
        "txt_in.input_embedder": (T, T, T, T, "txt_in"), "txt_in.c_embedder.in_layer": (T, F, F, T, "txt_in"),
    },
    "ltxv": {
        "attn2.to_k": (T, T, T, T, "caption_projection"), "attn2.to_v": (T, T, T, T, "caption_projection"),
        "attn2.to_out.0": (F, F, F, F, ""),
    },
    "mochi": {
        "mlp_y.w1": (F, T, T, T, ""), "attn.qkv_y": (F, T, T, T, ""),
        "t5_y_embedder.to_out": (T, F, F, T, ""),
    },
    "cosmos_predict2": {
        "cross_attn.k_proj": (T, T, T, T, "context"), "cross_attn.v_proj": (T, T, T, T, "context"),
        "cross_attn.output_proj": (F, F, F, F, ""),
    },
    "cosmos1": {  # sub-block 1 of each block is the cross-attention; .0 is the Linear inside to_k / to_v / to_out
        "blocks.1.block.attn.to_k.0": (T, T, T, T, "context"), "blocks.1.block.attn.to_v.0": (T, T, T, T, "context"),
        "blocks.1.block.attn.to_out.0": (F, F, F, F, ""),
    },
}
#: family -> (blocks, default group, top-level layers, batches_text_masks); block 3's name is ``{blocks}.3``, Cosmos
#: 1.0's ``blocks.block3`` (``BLOCK_3``)
TABLE = {
    "wan": ("blocks", "cross_attn.k+v", (), T),
    "hunyuan_video": ("double_blocks", "txt_mlp.0",
                      ("vector_in.in_layer", "txt_in.input_embedder", "txt_in.c_embedder.in_layer"), F),
    "ltxv": ("transformer_blocks", "attn2.to_k+to_v", (), T),
    "mochi": ("blocks", "attn.qkv_y", ("t5_y_embedder.to_out",), F),
    "cosmos_predict2": ("blocks", "cross_attn.k_proj+v_proj", (), T),
    "cosmos1": ("blocks", "cross_attn.to_k+to_v", (), T),
}
BLOCK_3 = {"cosmos1": "blocks.block3"}


@pytest.mark.parametrize("family", list(RULES))
def test_each_layer_is_measured_by_its_familys_rule(adapters, family):
    adapter = adapters.adapter_named(family)
    blocks, default, top, batches = TABLE[family]
    assert (adapter.blocks, adapter.default_group, adapter.top_level_names(), adapter.batches_text_masks) == \
        (blocks, default, top, batches)
    assert set(adapter.suffixes("all")) == set(RULES[family])
    block = BLOCK_3.get(family, f"{blocks}.3")
    assert adapter.block_key(3) == block
    names = [suffix if suffix in top else f"{block}.{suffix}" for suffix in RULES[family]]
    assert [adapters.layer_suffix(name) for name in names] == list(RULES[family])
    independent = adapter.timestep_independent_layers(names)
    tokens = adapter.text_token_layers(names)
    image_tokens = adapter.text_token_layers(names, image=True)
    side = adapter.text_side_layers(names)
    shared = {name: source for source, layers in adapter.shared_inputs(names).items() for name in layers}
    got = {adapters.layer_suffix(name): (name in independent, name in tokens, name in image_tokens, name in side,
                                         shared.get(name, "")) for name in names}
    assert got == RULES[family]
    assert adapter.is_timestep_independent([n for n in names if RULES[family][adapters.layer_suffix(n)][0]])
    assert not adapter.is_timestep_independent(names)


@pytest.mark.parametrize("name, block, suffix", [
    ("blocks.3.cross_attn.k", "blocks.3", "cross_attn.k"),
    ("double_blocks.12.txt_mlp.0", "double_blocks.12", "txt_mlp.0"),
    ("vace_blocks.0.cross_attn.v", "vace_blocks.0", "cross_attn.v"), ("vector_in.in_layer", None, "vector_in.in_layer"),
    ("t5_y_embedder.to_out", None, "t5_y_embedder.to_out"), ("txt_in.input_embedder", None, "txt_in.input_embedder"),
    # Cosmos 1.0's blocks are a ModuleDict keyed block0, block1 ...
    ("blocks.block3.blocks.1.block.attn.to_k.0", "blocks.block3", "blocks.1.block.attn.to_k.0"),
    ("txt_in.c_embedder.in_layer", None, "txt_in.c_embedder.in_layer")])
def test_a_layer_is_its_block_and_its_suffix_or_outside_the_blocks(adapters, name, block, suffix):
    assert (adapters.block_of(name), adapters.layer_suffix(name)) == (block, suffix)
    assert name == (suffix if block is None else f"{block}.{suffix}")
    from comfyui_video_unlearning.core.basis import block_index

    assert block_index(name) == (None if block is None else int(block.rsplit(".", 1)[1].removeprefix("block")))


@pytest.mark.parametrize("start, end, expected", [(0, -1, (0, 3)), (1, 1, (1, 1)), (2, 3, (2, 3)), (3, -1, (3, 3))])
def test_a_block_range_is_inclusive_and_minus_one_is_the_last_block(adapters, start, end, expected):
    assert adapters.block_range(4, start, end) == expected


@pytest.mark.parametrize("start, end, message", [
    (-1, 2, "block_start -1 is below 0: set block_start to 0"),
    (4, -1, "block_start 4 is beyond the last block: lower block_start to 3 or less"),
    (5, 1, "block_start 5 is beyond the last block: lower block_start to 1 or less"),
    (0, 4, "block_end 4 is beyond the last block: set block_end to -1 (the last block) or to 3 or less"),
    (3, 1, "block_start 3 is after block_end 1: swap them (block_start 1, block_end 3)"),
])
def test_a_block_range_outside_the_model_is_refused_with_the_bound_to_change(adapters, start, end, message):
    with pytest.raises(ValueError, match="does not fit this model's blocks 0..3") as error:
        adapters.block_range(4, start, end)
    assert message in str(error.value)


@pytest.mark.parametrize("family, spatial, temporal", [("wan", 8, 4), ("hunyuan_video", 8, 4), ("ltxv", 32, 8),
                                                       ("mochi", 8, 6), ("cosmos_predict2", 8, 4),
                                                       ("cosmos1", 8, 8)])
def test_a_latent_has_one_frame_for_the_first_and_one_per_temporal_step_after(adapters, family, spatial, temporal):
    geometry = adapters.adapter_named(family).latent
    assert (geometry.spatial, geometry.temporal) == (spatial, temporal)
    for length, frames in ((1, 1), (temporal, 1), (temporal + 1, 2), (2 * temporal + 1, 3)):
        assert geometry.shape(16, 64 * spatial, 32 * spatial, length) == [1, 16, frames, 32, 64]


#: node, input, source, as the require_* checks name them
WHERE = ("Collect Activations", "pairs", "Pair Encoder")


def _patcher(class_name, diffusion, latent_channels=16):
    """A stand-in MODEL: what the require_* checks read (the class name, the diffusion model, the latent format)."""
    import types

    base = type(class_name, (), {})()
    base.diffusion_model = diffusion
    latent = types.SimpleNamespace(latent_channels=latent_channels)
    return types.SimpleNamespace(model=base, get_model_object=lambda name: latent)


def test_a_prompt_without_a_pooled_output_is_refused_only_where_the_model_reads_one(adapters):
    import torch

    with_vector_in = torch.nn.Module()
    with_vector_in.vector_in = torch.nn.Module()
    with_vector_in.vector_in.in_layer = torch.nn.Linear(4, 4)
    prompts = [[[torch.zeros(1, 3, 4), {"pooled_output": torch.zeros(1, 4)}]], [[torch.zeros(1, 3, 4), {}]]]
    with pytest.raises(ValueError, match=r"no pooled_output \(1 of 2 prompts\).*'vector_in.in_layer'"):
        adapters.require_pooled_text(_patcher("HunyuanVideo", with_vector_in), prompts, *WHERE)
    # a variant whose vector_in is None reads no pooled text: nothing to ask for
    adapters.require_pooled_text(_patcher("HunyuanVideo", torch.nn.Module()), prompts, *WHERE)
    # Mochi makes its pooled row from the context: no pooled_output needed either
    mochi = torch.nn.Module()
    mochi.t5_y_embedder = torch.nn.Module()
    mochi.t5_y_embedder.to_out = torch.nn.Linear(4, 4)
    adapters.require_pooled_text(_patcher("GenmoMochi", mochi), prompts, *WHERE)


@pytest.mark.parametrize("family", list(RULES))
def test_a_layer_is_of_its_own_group_and_only_mochis_text_stream_was_pooled_over_the_padding(adapters, family):
    """Until 2026-12-06 Mochi's text-stream layers (mlp_y.w1, attn.qkv_y) were pooled over all 256 T5 rows: a vector
    of them that records no measurement is refused. No other group, Mochi's pooled T5 text included, was."""
    adapter = adapters.adapter_named(family)
    pooled = {"mlp_y.w1", "attn.qkv_y"} if family == "mochi" else set()
    for suffix in RULES[family]:
        name = suffix if suffix in adapter.top_level_names() else f"{adapter.block_key(3)}.{suffix}"
        group = adapter.group_of(name)
        assert suffix in group.suffixes and group in adapter.groups.values(), name
        assert group.padding_pooled_until == ("2026-12-06" if suffix in pooled else ""), name
    assert adapter.group_of(f"{adapter.block_key(3)}.norm_no_such_layer") is None


@pytest.mark.parametrize("family", list(RULES))
def test_only_cosmos1s_layers_read_the_batch_token_major(adapters, family):
    """Cosmos 1.0's blocks run in (T H W B D) order and its cross-attention reads the text as (M B D): its adapter says
    so, and the recorder moves the batch first; every other family's layers read [batch, tokens, d]."""
    assert adapters.adapter_named(family).batch_dim == (-2 if family == "cosmos1" else 0)
