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


# Old vectors told by structure (Wan VACE) and by a missing measurement (Mochi's text stream): each test below pins a
# rule whose wrong version gave no host-test failure in the mutation test of commit baf5c5d (2026-12-07).

#: the main-block and VACE-block layer names of the tiny VACE model (4 blocks; VACE block 0 is injected into block 0,
#: VACE block 1 into block 2, none into blocks 1 and 3), k and v
MAIN_KV = [f"blocks.{b}.cross_attn.{n}" for b in range(4) for n in ("k", "v")]
VACE_KV = [f"vace_blocks.{b}.cross_attn.{n}" for b in range(2) for n in ("k", "v")]


def _fitted(model, layers, concept="Rolex", measurement=None):
    """A rank-1 vector of ``layers`` of ``model`` fitted on random pairs, without fingerprint, with the
    ``measurement`` Collect Activations records (none: a vector from before 2026-12-06, or one built without it)."""
    from comfyui_video_unlearning.core.refusal import RefusalFitter
    from comfyui_video_unlearning.nodes.adapters import adapter_for

    fitter = RefusalFitter()
    generator = torch.Generator().manual_seed(len(concept))
    for name in layers:
        width = model.model.diffusion_model.get_submodule(name).weight.shape[1]
        safe = torch.randn(6, width, generator=generator)
        fitter.update(name, safe + torch.randn(width, generator=generator), safe)
    basis = fitter.fit(rank=1, concept=concept, model_family=adapter_for(model).family)
    return dataclasses.replace(basis, measurement=measurement or {})


@pytest.fixture(scope="module")
def vace(pack):
    from test_adapters import TINY_VACE
    from tiny_models import family_model

    return family_model("WAN21_Vace", TINY_VACE)


@pytest.fixture(scope="module")
def mochi(pack):
    from tiny_models import TINY_FAMILIES, family_model

    return family_model(*TINY_FAMILIES["mochi"])


def test_a_vace_layer_is_asked_for_only_where_the_vector_edits_its_main_blocks_layer_of_that_kind(patching, vace):
    from comfyui_video_unlearning.nodes.adapters import adapter_named

    wan, diffusion = adapter_named("wan"), vace.model.diffusion_model
    chosen = patching.layers_for(vace, "default", 0, -1)
    assert sorted(chosen) == sorted(MAIN_KV + VACE_KV)

    def left_out(vector_layers, chosen=chosen):
        layers = [layer for layer in vector_layers if layer in chosen]
        return patching.side_blocks_left_out(wan, diffusion, chosen, layers, vector_layers)

    assert left_out(MAIN_KV) == VACE_KV  # an old vector: the main blocks only
    assert left_out(MAIN_KV + VACE_KV) == []  # a fresh one
    assert left_out(MAIN_KV + VACE_KV[:-1]) == VACE_KV[-1:]  # one lacking only some VACE layers
    # a fresh vector of blocks 1 and 3, into which no VACE block is injected, is asked for none
    assert left_out([layer for layer in MAIN_KV if layer.split(".")[1] in "13"]) == []
    # by kind: a vector of block 0's key alone is asked for VACE block 0's key, not its value
    assert left_out(["blocks.0.cross_attn.k"]) == ["vace_blocks.0.cross_attn.k"]
    # a block range without VACE blocks chosen asks for none, whatever the vector lacks
    assert left_out(MAIN_KV, patching.layers_for(vace, "default", 3, 3)) == []
    assert patching.side_blocks_left_out(adapter_named("mochi"), diffusion, chosen, MAIN_KV, MAIN_KV) == []


def test_a_vace_vector_lacking_one_vace_layer_is_refused_naming_it(patching, vace):
    """Not only the old vector of the main blocks alone: one VACE layer missing leaves the concept a way through."""
    vector = _fitted(vace, MAIN_KV + VACE_KV[:-1], measurement={"layer_group": "default"})
    with pytest.raises(ValueError, match=r"^Apply Unlearning: this refusal vector \(Rolex\) edits this Wan VACE "
                                         r"model's main blocks but not the VACE blocks injected into them "
                                         r"\('vace_blocks\.1\.cross_attn\.v'\), which"):
        patching.select_layers(vace, vector, patching.ALL_IN_VECTOR, 0, -1)
    assert patching.select_layers(vace, _fitted(vace, MAIN_KV + VACE_KV), patching.ALL_IN_VECTOR, 0, -1) == \
        MAIN_KV + VACE_KV


def test_only_mochis_text_stream_layers_were_pooled_over_the_padding(patching):
    from comfyui_video_unlearning.nodes.adapters import adapter_named

    mochi = adapter_named("mochi")
    layers = ["blocks.0.mlp_y.w1", "blocks.1.attn.qkv_y", "t5_y_embedder.to_out", "blocks.0.attn.qkv_x"]
    assert patching.padding_pooled_layers(mochi, layers) == layers[:2]
    for family in ("wan", "hunyuan_video", "ltxv", "cosmos_predict2", "cosmos1"):
        adapter = adapter_named(family)
        names = [f"{adapter.block_key(0)}.{suffix}" for suffix in adapter.suffixes("all")] + list(
            adapter.top_level_names())
        assert patching.padding_pooled_layers(adapter, names) == [], family


def test_each_concept_of_a_combined_vector_records_its_own_measurement(patching, basis):
    recorded = {"layer_group": "default"}
    assert patching.recorded_measurements(dataclasses.replace(basis, measurement=recorded)) == [recorded]
    assert patching.recorded_measurements(dataclasses.replace(basis, measurement={})) == [{}]
    combined = dataclasses.replace(basis, measurement={}, combined_from=(
        {"concept": "Rolex", "measurement": recorded}, {"concept": "Nike"}, {"concept": "Omega", "measurement": None}))
    assert patching.recorded_measurements(combined) == [recorded, {}, {}]


def test_a_mochi_vector_without_measurement_is_refused_only_where_it_edits_the_text_stream(patching, mochi):
    """The chosen layers decide: Mochi's pooled T5 text (t5_y_embedder.to_out) was never pooled over the padding, and
    a combined vector is judged concept by concept (its own measurement is empty)."""
    from comfyui_video_unlearning.core.basis import RefusalBasis

    old = _fitted(mochi, ["blocks.0.attn.qkv_y", "t5_y_embedder.to_out"])
    with pytest.raises(ValueError, match=r"^Apply Unlearning: this refusal vector \(Rolex\) edits this mochi model's "
                                         r"text-stream layers \('blocks\.0\.attn\.qkv_y'\) and it records no "
                                         r"measurement, which"):
        patching.select_layers(mochi, old, patching.ALL_IN_VECTOR, 0, -1)
    # the pooled T5 text alone was never pooled over the padding: its edit is applied
    assert patching.select_layers(mochi, old, "t5_y_embedder", 0, -1) == ["t5_y_embedder.to_out"]
    assert patching.select_layers(mochi, _fitted(mochi, ["t5_y_embedder.to_out"]), patching.ALL_IN_VECTOR, 0, -1) == \
        ["t5_y_embedder.to_out"]
    # a combined vector: accepted when every concept records its measurement, refused when one does not
    layers = ["blocks.0.attn.qkv_y", "blocks.1.attn.qkv_y"]
    rolex, nike = (_fitted(mochi, layers, concept, {"layer_group": "default"}) for concept in ("Rolex", "Nike"))
    assert patching.select_layers(mochi, RefusalBasis.combine([rolex, nike]), patching.ALL_IN_VECTOR, 0, -1) == layers
    unrecorded = dataclasses.replace(nike, measurement={})
    with pytest.raises(ValueError, match=r"^Apply Unlearning: this refusal vector \(Rolex \+ Nike\) edits this mochi "
                                         r"model's text-stream layers \('blocks\.0\.attn\.qkv_y'\.\.\.\) and the "
                                         r"measurement of 1 of the 2 concepts it combines is not recorded"):
        patching.select_layers(mochi, RefusalBasis.combine([rolex, unrecorded]), patching.ALL_IN_VECTOR, 0, -1)


def test_a_vector_of_another_family_is_never_asked_for_a_measurement(patching, wan, basis):
    """Vectors from before measurements were recorded stay valid where no layer was pooled over the padding."""
    from comfyui_video_unlearning.core.basis import RefusalBasis

    unrecorded = dataclasses.replace(basis, measurement={})
    assert patching.select_layers(wan, unrecorded, patching.ALL_IN_VECTOR, 0, -1) == basis.layers
    assert patching.select_layers(wan, RefusalBasis.combine([unrecorded, unrecorded]), "default", 0, -1) == \
        basis.layers
