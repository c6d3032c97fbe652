"""HunyuanVideo's pooled text path: the CLIP-L vector ``y`` goes through ``vector_in`` into the timestep embedding that
modulates every block, so a concept carried there reaches the video whatever the text stream's edit does. The layer
group "vector_in" (its first linear, outside the blocks) measures and edits it, on the tiny HunyuanVideo that
ComfyUI's detection loads (``tiny_models.tiny_hunyuan_video_state_dict``, random weights)."""

from __future__ import annotations

import pytest
import torch
from pooled_edit import (BENIGN, NEUTRAL, PAIRS, VALIDATION, assert_apply_removes_the_pooled_difference,
                         assert_exported_lora_patches_as_apply, held_out_check, measure_group, weight_key)

LAYER = "vector_in.in_layer"
TEXT_INPUT = ("txt_in.input_embedder", "txt_in.c_embedder.in_layer")  # the group txt_in, in 'all' too
KEY = weight_key(LAYER)

pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.fixture(scope="module")
def hunyuan(pack, tiny):
    import comfy.sd

    with torch.inference_mode():
        return comfy.sd.load_diffusion_model_state_dict(tiny.tiny_hunyuan_video_state_dict())


@pytest.fixture(scope="module")
def text(tiny):
    """The HunyuanVideo text stand-in whose pooled output is the mean of the prompt's token rows."""
    return tiny.tiny_hunyuan_video_mean_pooled_text()


@pytest.fixture(scope="module")
def measured(pack, hunyuan, text):
    """Pair Encoder -> Collect Activations (group "vector_in") -> Low-Rank Refusal Vector; the encoded pairs too."""
    return measure_group(hunyuan, text, "vector_in", 64, 9)


def test_the_group_is_the_top_level_layer_whatever_the_block_range(pack, hunyuan):
    from comfyui_video_unlearning.nodes.adapters import GROUP_CHOICES, adapter_for, layers_for

    adapter = adapter_for(hunyuan)
    assert "vector_in" in GROUP_CHOICES and adapter.default_group == "txt_mlp.0"
    assert layers_for(hunyuan, "vector_in") == [LAYER]
    assert layers_for(hunyuan, "vector_in", 0, 0) == [LAYER]  # not inside a block: any range includes it
    assert layers_for(hunyuan, "default") == ["double_blocks.0.txt_mlp.0"]  # the default is unchanged
    # the text input (txt_in, since 2026-12-07) after it: the top-level layers in the order they joined 'all'
    assert layers_for(hunyuan, "all") == [LAYER, *TEXT_INPUT, "double_blocks.0.txt_mlp.0",
                                          "double_blocks.0.txt_attn.qkv"]
    # one row per prompt, the text's alone: measured at one timestep, never token-masked, judged pair by pair
    assert adapter.timestep_independent_layers([LAYER]) == [LAYER]
    assert adapter.text_token_layers([LAYER]) == [] and adapter.text_side_layers([LAYER]) == [LAYER]
    assert adapter.main_block(hunyuan.model.diffusion_model, LAYER) is None


def test_apply_removes_the_pooled_difference_along_the_vector(pack, hunyuan, measured, effective_weights):
    """W' maps the pairs' pooled difference, along the refusal directions, to nearly zero (the edit of W (I - U U^T)),
    strength 0 is the identity, and only vector_in.in_layer is patched."""
    encoded, acts, basis = measured
    assert tuple(acts.layers) == tuple(basis.layers) == (LAYER,) and len(acts.sigmas) == 1
    unsafe = torch.cat([c[0][1]["pooled_output"] for c in encoded.unsafe]).double()
    safe = torch.cat([c[0][1]["pooled_output"] for c in encoded.safe]).double()
    assert_apply_removes_the_pooled_difference(hunyuan, basis, LAYER, unsafe, safe, effective_weights)


def test_the_exported_lora_patches_vector_in_through_comfyuis_loader(pack, hunyuan, measured, effective_weights,
                                                                       tmp_path):
    _, _, basis = measured
    assert_exported_lora_patches_as_apply(hunyuan, basis, LAYER, tmp_path, "pooled/hunyuan", effective_weights)


def test_the_check_runs_with_the_group_and_with_all(pack, hunyuan, measured, text):
    from comfyui_video_unlearning.nodes import definitions

    encoded, _, basis = measured
    check = held_out_check(hunyuan, text, "safe_mean", 1)

    strength, _, table = check(basis, "vector_in", "none")
    assert strength in (0.0, 1.0) and "1 layers (vector_in)" in table
    # "all", swept by groups: the top-level layer is a group of its own beside the text stream's
    acts = definitions.CollectActivations.execute(hunyuan, encoded, 32, 32, 1, "0.5", 0, "all", 0, -1)[0]
    assert acts.layers[0] == LAYER
    every = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    _, _, table = check(every, "all in vector", "layer groups")
    assert all(f"  {group}: 1: " in table for group in ("vector_in", "txt_mlp.0", "txt_attn.qkv"))
    _, _, table = check(every, "all in vector", "block halves")
    assert "the 2 checked layers in blocks (and 3 outside them) lie in one block (block 0)" in table
    # in no block: a block range that holds none of the vector's blocks still edits it
    applied = definitions.ApplyUnlearning.execute(hunyuan, every, 1.0, True, "vector_in", 0, 0, "safe_mean")[0]
    assert {key for key in applied.patches if key.endswith(".weight")} == {KEY}


def test_a_conditioning_without_pooled_output_is_refused_naming_the_remedy(pack, hunyuan, measured, text, tiny):
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import UnlearningCheck

    no_pooled = tiny.FamilyText(text.inner, None, text.width, None, False)
    encoded = definitions.PairEncoder.execute(no_pooled, PAIRS, NEUTRAL, "Rolex")[0]
    with pytest.raises(ValueError, match=r"Collect Activations: pairs: .*no pooled_output \(16 of 16 prompts\).*"
                                         r"vector_in\.in_layer.*clip_l"):
        definitions.CollectActivations.execute(hunyuan, encoded, 64, 64, 9, "2", 0, "vector_in", 0, -1)
    held_out = definitions.PairEncoder.execute(no_pooled, VALIDATION, BENIGN, "Rolex")[0]
    with pytest.raises(ValueError, match=r"Unlearning Check: validation_pairs: .*no pooled_output"):
        UnlearningCheck.execute(hunyuan, measured[2], "0, 1", "vector_in", 0, -1, "safe_mean", "none", 64, 64, 9,
                                "0.5", 0, validation_pairs=held_out)


def test_a_prompt_without_pooled_output_is_refused_whatever_the_group(pack, hunyuan, measured, text, tiny):
    """ComfyUI's HunyuanVideo forward feeds y through vector_in on every call, so the text-stream groups fail without a
    pooled output as vector_in does: refused before any forward, naming the input and the text encoder to connect,
    never "choose another group" (which led straight to torch's "'NoneType' object is not subscriptable")."""
    import nodes as comfy_nodes

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import UnlearningCheck

    no_pooled = tiny.FamilyText(text.inner, None, text.width, None, False)
    encoded = definitions.PairEncoder.execute(no_pooled, PAIRS, NEUTRAL, "Rolex")[0]
    remedy = (r"every forward, whatever the layer group.*"
              r"llava_llama3 \+ clip_l through DualCLIPLoader, type hunyuan_video")
    for group in ("txt_mlp.0", "txt_attn.qkv", "all"):
        with pytest.raises(ValueError, match=r"Collect Activations: pairs: .*no pooled_output \(16 of 16 prompts\).*"
                                             + remedy) as refused:
            definitions.CollectActivations.execute(hunyuan, encoded, 32, 32, 1, "0.5", 0, group, 0, -1)
        assert "choose a layer group" not in str(refused.value)
    # the check: validation pairs with it, but the sampler's negative without it, on the default group
    default = definitions.RefusalVectorNode.execute(
        definitions.CollectActivations.execute(hunyuan, measured[0], 32, 32, 1, "0.5", 0, "txt_mlp.0", 0, -1)[0],
        "cpca", 2, 1.0)[0]
    held_out = definitions.PairEncoder.execute(text, VALIDATION, BENIGN, "Rolex")[0]
    negative = comfy_nodes.CLIPTextEncode().encode(no_pooled, "blurry, low quality")[0]
    with pytest.raises(ValueError, match=r"Unlearning Check: negative: .*no pooled_output, .*" + remedy):
        UnlearningCheck.execute(hunyuan, default, "0, 1", "txt_mlp.0", 0, -1, "safe_mean", "none", 32, 32, 1, "0.5",
                                0, validation_pairs=held_out, negative=negative, cfg=6.0)
    no_pooled_held_out = definitions.PairEncoder.execute(no_pooled, VALIDATION, BENIGN, "Rolex")[0]
    with pytest.raises(ValueError, match=r"Unlearning Check: validation_pairs: .*no pooled_output \(8 of 8 prompts\)"):
        UnlearningCheck.execute(hunyuan, default, "0, 1", "txt_mlp.0", 0, -1, "safe_mean", "none", 32, 32, 1, "0.5",
                                0, validation_pairs=no_pooled_held_out)


def test_the_chart_of_all_names_the_blocks_as_with_the_default(pack, hunyuan, measured):
    """With layers = all the vector starts with the block-less vector_in.in_layer: the chart still calls the double
    blocks "block 0", as it does for the default group, not "double_block 0" (a second block list's naming)."""
    from comfyui_video_unlearning.nodes import definitions, plot

    encoded = measured[0]
    acts = definitions.CollectActivations.execute(hunyuan, encoded, 32, 32, 1, "0.5", 0, "all", 0, -1)[0]
    every = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    assert every.layers[0] == LAYER
    labels = [bar["label"] for bar in plot.chart_data(every)["bars"]]
    # the text input's two layers share one record: one bar, first, which says that c_embedder reads the rows' mean
    # (it said both "share this input")
    assert labels == [f"text context: {TEXT_INPUT[0]} reads its rows, {TEXT_INPUT[1]} their mean: one fit", LAYER,
                      "block 0 · txt_mlp.0", "block 0 · txt_attn.qkv"], labels


def test_block_halves_on_a_vector_outside_the_blocks_points_to_the_layer_groups_sweep(pack, hunyuan, measured, text):
    """A vector of vector_in alone lies in no block: widening block_start..block_end can never give it halves, so the
    skip line says so and points to the 'layer groups' sweep with a vector of layers = all."""
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import UnlearningCheck

    held_out = definitions.PairEncoder.execute(text, VALIDATION, BENIGN, "Rolex")[0]
    table = UnlearningCheck.execute(hunyuan, measured[2], "0, 1", "vector_in", 0, -1, "safe_mean", "block halves", 32,
                                    32, 1, "0.5", 0, validation_pairs=held_out).args[2]
    line, = [line for line in table.splitlines() if "sweep 'block halves' not run" in line]
    assert "none of the 1 checked layers lies in a block" in line and LAYER in line, line
    assert "'layer groups'" in line and "layers = all" in line and "block_start" not in line, line


def test_an_all_vector_from_before_vector_in_joined_is_told_to_be_computed_again(pack, hunyuan, measured, text):
    """A vector of layers = all saved before vector_in joined the group covers the two text-stream layers only. Combine
    with a vector of layers = all computed today said "compute them with the same layer group and block range", which
    the user did; Apply edited the text stream alone and left the pooled path unedited without a word. Both now say
    that the old vector was computed before the layer joined the group, and to compute it again."""
    from comfyui_video_unlearning.core.basis import RefusalBasis
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.collect import collect_activations, empty_latent

    text_stream = ["double_blocks.0.txt_mlp.0", "double_blocks.0.txt_attn.qkv"]  # what 'all' took before 2026-12-06
    acts = collect_activations(hunyuan, measured[0], empty_latent(hunyuan, 32, 32, 1), "0.5", 0, text_stream,
                               {"layer_group": "all"})
    old = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    nike = definitions.PairEncoder.execute(
        text, "\n".join(f"a Nike shoe number {i} on a table | a shoe number {i} on a table" for i in range(6)),
        NEUTRAL, "Nike")[0]
    new = definitions.RefusalVectorNode.execute(
        definitions.CollectActivations.execute(hunyuan, nike, 32, 32, 1, "0.5", 0, "all", 0, -1)[0], "cpca", 2, 1.0)[0]
    assert list(old.layers) == text_stream and list(new.layers) == [LAYER, *TEXT_INPUT, *text_stream]
    assert old.model_fingerprint != new.model_fingerprint  # each covers its own layers
    with pytest.raises(ValueError, match=r"fingerprints differ .* because Rolex lacks 'vector_in\.in_layer', a layer "
                                         r"outside the blocks.*Rolex was computed before 'vector_in\.in_layer' was "
                                         r"part of the layer group\. Compute it again") as refused:
        RefusalBasis.combine([old, new])
    assert "cover different layers" not in str(refused.value)

    for layers in ("all in vector", "all"):
        with pytest.raises(ValueError, match=r"\(Rolex\) lacks 'vector_in\.in_layer'.*"
                                             r"\(HunyuanVideo's pooled CLIP-L text\) would be left unedited.*before "
                                             r"'vector_in\.in_layer' joined that group on 2026-12-06.*Compute it again "
                                             r"with Collect Activations"):
            definitions.ApplyUnlearning.execute(hunyuan, old, 1.0, True, layers, 0, -1, "safe_mean")
    # a group without the pooled path still applies the old vector; a vector of one group is not an old 'all' one
    applied = definitions.ApplyUnlearning.execute(hunyuan, old, 1.0, True, "txt_mlp.0", 0, -1, "safe_mean")[0]
    assert {key for key in applied.patches if key.endswith(".weight")} == {f"diffusion_model.{text_stream[0]}.weight"}
    default = definitions.RefusalVectorNode.execute(
        definitions.CollectActivations.execute(hunyuan, nike, 32, 32, 1, "0.5", 0, "default", 0, -1)[0], "cpca", 2,
        1.0)[0]
    applied = definitions.ApplyUnlearning.execute(hunyuan, default, 1.0, True, "all in vector", 0, -1, "safe_mean")[0]
    assert {key for key in applied.patches if key.endswith(".weight")} == {f"diffusion_model.{text_stream[0]}.weight"}


def test_a_vector_that_records_no_layer_group_is_judged_by_its_layer_kinds(pack, hunyuan, measured):
    """A vector saved before 2026-12-06 records no layer group: one that covers every kind of block layer 'all' takes
    (the text stream) is taken for an old 'all' vector and refused, saying why it was judged so; one that records
    "all" is refused on its record."""
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.collect import collect_activations, empty_latent

    text_stream = ["double_blocks.0.txt_mlp.0", "double_blocks.0.txt_attn.qkv"]
    for settings, why in (({}, r"it edits every kind of this hunyuan_video model's block layers .* records no layer "
                                r"group"), ({"layer_group": "all"}, r"its measurement records layers = all")):
        acts = collect_activations(hunyuan, measured[0], empty_latent(hunyuan, 32, 32, 1), "0.5", 0, text_stream,
                                   settings)
        vector = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
        assert vector.measurement.get("layer_group") == settings.get("layer_group")
        with pytest.raises(ValueError, match=r"lacks 'vector_in\.in_layer'.*" + why):
            definitions.ApplyUnlearning.execute(hunyuan, vector, 1.0, True, "all", 0, -1, "safe_mean")


def test_the_old_all_refusal_names_the_day_the_layer_joined_and_the_node_that_refuses(pack, hunyuan, measured, text,
                                                                                       tmp_path):
    """A vector that records layers = all is from 2026-12-06 at the earliest (groups are recorded since then), the day
    vector_in joined: the refusal says "before 'vector_in.in_layer' joined that group on 2026-12-06", not "computed
    with layers = all before 2026-12-06". Apply Unlearning, Unlearning Check and Export Unlearning as LoRA each start
    it with their name (Export and the check gave Apply's text verbatim); Export, which has no layers input, speaks of
    layers = all instead of "the chosen layers ('all in vector')" and says to export the vector computed again."""
    from comfyui_video_unlearning.nodes import definitions, patching
    from comfyui_video_unlearning.nodes.check import UnlearningCheck
    from comfyui_video_unlearning.nodes.collect import collect_activations, empty_latent

    text_stream = ["double_blocks.0.txt_mlp.0", "double_blocks.0.txt_attn.qkv"]
    acts = collect_activations(hunyuan, measured[0], empty_latent(hunyuan, 32, 32, 1), "0.5", 0, text_stream,
                               {"layer_group": "all"})
    old = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    joined = (r"computed with layers = all before 'vector_in\.in_layer' joined that group on 2026-12-06 \(its "
              r"measurement")
    lacks = r"this refusal vector \(Rolex\) lacks 'vector_in\.in_layer', which "
    with pytest.raises(ValueError, match=r"^Apply Unlearning: " + lacks + r"the chosen layers \('all'\) take.*"
                                         + joined) as refused:
        definitions.ApplyUnlearning.execute(hunyuan, old, 1.0, True, "all", 0, -1, "zero")
    assert "before 2026-12-06" not in str(refused.value)
    with pytest.raises(ValueError, match=r"^Unlearning Check: " + lacks + r"the chosen layers \('all in vector'\) "
                                         r"take.*" + joined):
        UnlearningCheck.execute(hunyuan, old, "0,1", "all in vector", 0, -1, "zero", "none", 32, 32, 1, "0.5", 0,
                                definitions.PairEncoder.execute(text, VALIDATION, NEUTRAL, "Rolex")[0])
    with pytest.raises(ValueError, match=r"^Export Unlearning as LoRA: " + lacks + r"layers = all takes.*" + joined
                                         + r".*Compute it again with Collect Activations .* and export that "
                                         r"vector$") as refused:
        patching.export_lora(hunyuan, old, str(tmp_path / "never.safetensors"), target="zero")
    assert "chosen layers" not in str(refused.value)


def test_the_audit_names_a_negative_without_pooled_output(pack, hunyuan, text, tiny):
    """Unlearning Audit reads every row through HunyuanVideo's vector_in as the check does: a negative prompt from a
    text encoder without a pooled output is refused naming ``negative``, not the validation pairs read beside it."""
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.audit import UnlearningAudit

    held_out = definitions.PairEncoder.execute(text, VALIDATION, BENIGN, "Rolex")[0]
    no_pooled = tiny.FamilyText(text.inner, None, text.width, None, False)
    negative = no_pooled.encode_from_tokens_scheduled(no_pooled.tokenize("blurry"))
    with pytest.raises(ValueError, match=r"Unlearning Audit: negative: .*no pooled_output"):
        UnlearningAudit.execute(hunyuan, hunyuan, held_out, 64, 64, 9, "0.5", 0, negative=negative, cfg=5.0)
