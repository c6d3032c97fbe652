"""What Apply Unlearning and Export Unlearning as LoRA refuse, edit and write (``nodes/patching.py``), rule by rule:
each test pins a rule whose wrong version gave no host-test failure in the mutation test of 2026-12-07 (a vector of
another width applied, an image key left out of the check)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

# the same fixtures: the pairs, the nodes, a rank-1 vector of the tiny Wan's default group (k/v of blocks 0 and 1)
from test_storage import NEUTRAL, PAIRS, basis, nodes  # noqa: F401

pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.fixture(scope="module")
def patching(pack):
    from comfyui_video_unlearning.nodes import patching

    return patching


def test_a_vector_of_another_width_is_refused_naming_both_widths(patching, wan, basis):
    """Without a fingerprint (a vector saved before fingerprints, or one stripped of it) the width is what tells a
    vector of another model size; applied, its edit fails deep inside torch or, worse, fits by chance."""
    layer = basis.layers[0]
    record = basis[layer]
    narrow = dataclasses.replace(record, vector=record.vector[..., :64], basis=record.basis[:64],
                                 direction=record.direction[..., :64], safe_mean=record.safe_mean[..., :64],
                                 subspace=torch.linalg.qr(record.subspace[:64])[0])
    other = dataclasses.replace(basis.select([layer]), records={layer: narrow}, model_fingerprint="")
    with pytest.raises(ValueError, match=f"layer '{layer}' reads 128 features in this model but the refusal vector "
                                         "was measured with 64: it belongs to a different model size"):
        patching.select_layers(wan, other, patching.ALL_IN_VECTOR, 0, -1)


def test_the_image_keys_of_every_block_with_a_text_key_or_value_are_checked(patching):
    from comfyui_video_unlearning.nodes.adapters import adapter_named

    diffusion = torch.nn.Module()
    diffusion.blocks = torch.nn.ModuleList()
    for _ in range(2):
        block = torch.nn.Module()
        block.cross_attn = torch.nn.Module()
        for name in ("k", "v", "k_img", "v_img"):
            setattr(block.cross_attn, name, torch.nn.Linear(4, 4))
        diffusion.blocks.append(block)
    wan = adapter_named("wan")
    # block 1 is chosen through its value alone: its image keys are left out all the same
    layers = ["blocks.0.cross_attn.k", "blocks.1.cross_attn.v"]
    assert patching.image_keys_left_out(wan, diffusion, layers, layers + ["blocks.0.cross_attn.k_img"]) == \
        ["blocks.0.cross_attn.v_img", "blocks.1.cross_attn.k_img", "blocks.1.cross_attn.v_img"]
    every = [f"blocks.{i}.cross_attn.{n}" for i in range(2) for n in ("k", "v", "k_img", "v_img")]
    assert patching.image_keys_left_out(wan, diffusion, layers, every) == []
    assert patching.image_keys_left_out(adapter_named("ltxv"), diffusion, layers, layers) == []


def test_a_pooled_layer_is_missed_only_by_a_vector_of_every_chosen_kind(patching):
    chosen = ["vector_in.in_layer", "double_blocks.0.txt_mlp.0", "double_blocks.0.txt_attn.qkv"]
    every_kind = ["double_blocks.1.txt_mlp.0", "double_blocks.1.txt_attn.qkv"]
    assert patching.top_level_left_out(chosen, every_kind) == ["vector_in.in_layer"]
    assert patching.top_level_left_out(chosen, every_kind[:1]) == []  # one group's vector never meant the pooled path
    assert patching.top_level_left_out(chosen, every_kind + ["vector_in.in_layer"]) == []


def test_the_fingerprint_reads_every_layer_of_the_vector(patching, wan, basis, tiny):
    """Two checkpoints that differ only in the vector's last layer: its edit is refused on the other one."""
    state = tiny.tiny_wan_state_dict(0)
    key = next(k for k in state if k.endswith(f"{basis.layers[-1]}.weight"))
    state[key] = state[key] + 1e-2
    other = tiny.load_tiny_wan(state=state)
    assert patching.weights_fingerprint(other, basis.layers) != patching.weights_fingerprint(wan, basis.layers)
    with pytest.raises(ValueError, match="measured on other weights"):
        patching.select_layers(other, basis, patching.ALL_IN_VECTOR, 0, -1)


def test_a_vector_fingerprinted_in_the_form_before_2026_12_06_is_still_accepted(patching, wan, basis):
    """Vectors saved before 2026-12-06 hashed the weights' dtype too: the same weights, so the same model."""
    old = patching.weights_fingerprint(wan, basis.layers, with_dtype=True)
    assert old != basis.model_fingerprint
    saved_then = dataclasses.replace(basis, model_fingerprint=old)
    assert patching.select_layers(wan, saved_then, patching.ALL_IN_VECTOR, 0, -1) == basis.layers


@pytest.fixture(scope="module")
def subspace(nodes, wan, clip):
    """A rank-2 subspace vector of the tiny Wan's default group: its LoRA has rank 2, where alpha = rank matters."""
    with torch.inference_mode():
        encoded = nodes.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
        activations = nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
        return nodes.RefusalVectorNode.execute(activations, "cpca", 2, 1.0, "subspace")[0]


def test_a_rank_two_lora_loads_through_comfyui_as_the_apply_edit(patching, wan, subspace, tmp_path, effective_weights):
    import comfy.sd
    import comfy.utils

    assert subspace.rank == 2
    path = str(tmp_path / "rank2.safetensors")
    patching.export_lora(wan, subspace, path, strength=0.7, target="safe_mean")
    loaded = comfy.sd.load_lora_for_models(wan, None, comfy.utils.load_torch_file(path), 1.0, 0)[0]
    applied = patching.apply_unlearning(wan, subspace, strength=0.7, target="safe_mean")[0]
    keys = [f"diffusion_model.{layer}.{w}" for layer in subspace.layers for w in ("weight", "bias")]
    assert set(loaded.patches) == set(applied.patches) == set(keys)
    via_lora, via_apply = effective_weights(loaded, keys), effective_weights(applied, keys)
    base = effective_weights(wan, keys)
    for key in keys:
        assert (via_apply[key] - base[key]).abs().max() > 1e-4, key  # the edit is there
        assert (via_lora[key] - via_apply[key]).abs().max() <= 1e-5, key


def test_a_narrowed_export_names_the_whole_vectors_fingerprint_and_its_strength(patching, wan, basis, tmp_path):
    """Block 1 only: the file still carries the fingerprint the vector was measured with (what Unlearning Check and a
    reader compare), and the strength it was exported at."""
    path = str(tmp_path / "narrow.safetensors")
    metadata = patching.export_lora(wan, basis, path, strength=0.3, target="zero", group="default", block_start=1,
                                    block_end=1)
    assert json.loads(metadata["video_unlearning_layers"]) == ["blocks.1.cross_attn.k", "blocks.1.cross_attn.v"]
    assert metadata["video_unlearning_model_fingerprint"] == basis.model_fingerprint
    assert metadata["video_unlearning_strength"] == "0.3"


def test_an_apply_edit_added_again_at_another_strength_does_not_cover_a_new_edit(patching, wan, basis):
    """Covering edits are those applied whole: the same patch added at strength_patch 0.5 (or with strength_model
    scaled) removes half its subspace, so a new edit must remove that subspace again."""
    layer = basis.layers[0]
    key = f"diffusion_model.{layer}.weight"
    patch = patching.apply_unlearning(wan, basis, target="zero")[0].patches[key][-1][1]
    whole = wan.clone()
    whole.add_patches({key: patch}, 1.0)
    assert patching.covering_edits(whole, layer, 1.0) == ([patch], [])
    for strength_patch, strength_model in ((0.5, 1.0), (1.0, 0.5)):
        scaled = wan.clone()
        scaled.add_patches({key: patch}, strength_patch, strength_model)
        assert patching.covering_edits(scaled, layer, 1.0) == ([], [patch])


def test_a_block_range_before_the_vectors_blocks_is_named_as_what_to_change(patching, wan, basis):
    """Block 0 chosen (block_end 0), the vector in block 1 only: the remedy names the vector's blocks, not only the
    layer choice it already has."""
    second = basis.select([layer for layer in basis.layers if layer.startswith("blocks.1.")])
    with pytest.raises(ValueError, match="no layer of the refusal vector") as error:
        patching.select_layers(wan, second, patching.ALL_IN_VECTOR, 0, 0)
    assert "the vector's layers lie in blocks 1..1: set block_start and block_end to include them" in str(error.value)
