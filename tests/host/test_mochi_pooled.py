"""Mochi's pooled text path: ``t5_y_embedder`` (an attention pool over the prompt's T5 tokens) is added to the timestep
embedding that modulates every block, so a concept carried there reaches the video whatever the text stream's edit
does. The layer group "t5_y_embedder" (the pool's output projection ``to_out``, outside the blocks) measures and edits
it, on the tiny Mochi (``tiny_models.TINY_FAMILIES["mochi"]``, random weights) with the tests' T5 stand-in (16 rows
of 32 features and an attention mask, no pooled output: Mochi's T5 gives none and the model needs none)."""

from __future__ import annotations

import pytest
import torch
from pooled_edit import (BENIGN, NEUTRAL, PAIRS, VALIDATION, assert_apply_removes_the_pooled_difference,
                         assert_exported_lora_patches_as_apply, held_out_check, measure_group, weight_key)

LAYER = "t5_y_embedder.to_out"
KEY = weight_key(LAYER)
#: What layers = all took before t5_y_embedder joined it: the text stream (the last block has no mlp_y).
TEXT_STREAM = ["blocks.0.mlp_y.w1", "blocks.0.attn.qkv_y", "blocks.1.attn.qkv_y"]

pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.fixture(scope="module")
def mochi(pack, tiny):
    with torch.inference_mode():
        return tiny.family_model(*tiny.TINY_FAMILIES["mochi"])


@pytest.fixture(scope="module")
def text(tiny, clip):
    """Mochi's T5 as its ComfyUI encoder gives it: 16 padded rows, an attention mask, no pooled_output."""
    return tiny.FamilyText(tiny.LookupTextEncoder(clip, rows=16, width=32), 16, 32, None, True)


@pytest.fixture(scope="module")
def measured(pack, mochi, text):
    """Pair Encoder -> Collect Activations (group "t5_y_embedder") -> Low-Rank Refusal Vector; the encoded pairs too."""
    return measure_group(mochi, text, "t5_y_embedder", 32, 7)


def pooled_inputs(mochi, sides):
    """The input of t5_y_embedder.to_out (the attention pool's output, one row per prompt) for each conditioning, as
    the model's forward computes it from the context and its attention mask."""
    pool = mochi.model.diffusion_model.t5_y_embedder
    seen = []
    handle = pool.to_out.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().double()))
    try:
        for cond in sides:
            context, extras = cond[0]
            pool(context.to(pool.to_out.weight.dtype), extras["attention_mask"])
    finally:
        handle.remove()
    return torch.cat(seen)


def test_the_group_is_the_top_level_pool_projection_whatever_the_block_range(pack, mochi):
    from comfyui_video_unlearning.nodes.adapters import GROUP_CHOICES, adapter_for, layers_for

    adapter = adapter_for(mochi)
    assert "t5_y_embedder" in GROUP_CHOICES and adapter.default_group == "attn.qkv_y"
    assert layers_for(mochi, "t5_y_embedder") == [LAYER]
    assert layers_for(mochi, "t5_y_embedder", 1, 1) == [LAYER]  # not inside a block: any range includes it
    assert layers_for(mochi, "default") == ["blocks.0.attn.qkv_y", "blocks.1.attn.qkv_y"]  # the default is unchanged
    assert layers_for(mochi, "all") == [LAYER, *TEXT_STREAM]
    # one row per prompt, the text's alone: measured at one timestep, never token-masked, judged pair by pair
    assert adapter.timestep_independent_layers([LAYER]) == [LAYER]
    assert adapter.text_token_layers([LAYER]) == [] and adapter.text_side_layers([LAYER]) == [LAYER]
    assert adapter.main_block(mochi.model.diffusion_model, LAYER) is None


def test_apply_removes_the_pooled_difference_along_the_vector(pack, mochi, measured, effective_weights):
    """The vector is fitted on the pool's own rows (not masked as the text stream's token rows are), W' maps the pairs'
    pooled difference, along the refusal directions, to nearly zero, strength 0 is the identity, and only
    t5_y_embedder.to_out is patched."""
    encoded, acts, basis = measured
    assert tuple(acts.layers) == tuple(basis.layers) == (LAYER,) and len(acts.sigmas) == 1
    unsafe, safe = pooled_inputs(mochi, encoded.unsafe), pooled_inputs(mochi, encoded.safe)
    torch.testing.assert_close(basis[LAYER].safe_mean.double(), safe.mean(0), rtol=1e-5, atol=1e-6)
    assert_apply_removes_the_pooled_difference(mochi, basis, LAYER, unsafe, safe, effective_weights)


def test_the_exported_lora_patches_the_pool_through_comfyuis_loader(pack, mochi, measured, effective_weights,
                                                                    tmp_path):
    _, _, basis = measured
    assert_exported_lora_patches_as_apply(mochi, basis, LAYER, tmp_path, "pooled/mochi", effective_weights)


def test_the_check_runs_with_the_group_and_with_all(pack, mochi, measured, text):
    from comfyui_video_unlearning.nodes import definitions

    encoded, _, basis = measured
    check = held_out_check(mochi, text, "zero", 7)

    strength, _, table = check(basis, "t5_y_embedder", "none")
    assert strength in (0.0, 1.0) and "1 layers (t5_y_embedder)" in table
    _, _, table = check(basis, "t5_y_embedder", "block halves")
    line, = [line for line in table.splitlines() if "sweep 'block halves' not run" in line]
    assert f"none of the 1 checked layers lies in a block ({LAYER!r} is outside" in line and "'layer groups'" in line
    # "all", swept by groups: the top-level layer is a group of its own beside the text stream's
    acts = definitions.CollectActivations.execute(mochi, encoded, 32, 32, 7, "0.5", 0, "all", 0, -1)[0]
    assert list(acts.layers) == [LAYER, *TEXT_STREAM]
    every = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    _, _, table = check(every, "all in vector", "layer groups")
    assert all(f"  {group}: " in table for group in ("t5_y_embedder", "mlp_y.w1", "attn.qkv_y")), table
    _, _, table = check(every, "all in vector", "block halves")
    assert "not run" not in table and "  blocks 0-0: " in table and "  blocks 1-1: " in table, table
    # in no block: a block range that holds none of the vector's blocks' layers of the group still edits it
    applied = definitions.ApplyUnlearning.execute(mochi, every, 1.0, True, "t5_y_embedder", 1, 1, "zero")[0]
    assert {key for key in applied.patches if key.endswith(".weight")} == {KEY}


def test_no_pooled_output_is_demanded_for_mochis_pool(pack, mochi, text):
    """The pool reads the T5 context the model is given, not a pooled_output of the text encoder (Mochi's T5 gives
    none): the HunyuanVideo refusal ("no pooled_output ... Connect ...") must not fire for it, whatever the group."""
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.adapters import adapter_for, require_pooled_text

    encoded = definitions.PairEncoder.execute(text, PAIRS, NEUTRAL, "Rolex")[0]
    assert all(cond[0][1].get("pooled_output") is None for cond in encoded.unsafe)
    adapter = adapter_for(mochi)
    assert adapter.groups["t5_y_embedder"].pooled_text and not adapter.groups["t5_y_embedder"].conditioning_input
    require_pooled_text(mochi, [*encoded.unsafe, *encoded.safe], "Collect Activations", "pairs", "Pair Encoder")
    for group in ("t5_y_embedder", "all"):
        acts = definitions.CollectActivations.execute(mochi, encoded, 32, 32, 1, "0.5", 0, group, 0, -1)[0]
        assert LAYER in acts.layers


def test_the_chart_of_all_names_the_blocks_as_with_the_default(pack, mochi, measured):
    from comfyui_video_unlearning.nodes import definitions, plot

    acts = definitions.CollectActivations.execute(mochi, measured[0], 32, 32, 1, "0.5", 0, "all", 0, -1)[0]
    every = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    labels = [bar["label"] for bar in plot.chart_data(every)["bars"]]
    assert labels == [LAYER, "block 0 · mlp_y.w1", "block 0 · attn.qkv_y", "block 1 · attn.qkv_y"], labels


def test_an_all_vector_from_before_the_pool_joined_is_told_to_be_computed_again(pack, mochi, measured, text):
    """A Mochi vector of layers = all saved before t5_y_embedder joined the group covers the text stream only. Combine
    with one computed today, and Apply with 'all in vector' or 'all', say that it lacks the pool's layer, name Mochi's
    pooled T5 path (not HunyuanVideo's CLIP-L) and ask to compute it again."""
    from comfyui_video_unlearning.core.basis import RefusalBasis
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.collect import collect_activations, empty_latent

    acts = collect_activations(mochi, measured[0], empty_latent(mochi, 32, 32, 1), "0.5", 0, TEXT_STREAM,
                               {"layer_group": "all"})
    old = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    nike = definitions.PairEncoder.execute(
        text, "\n".join(f"a Nike shoe number {i} on a table | a shoe number {i} on a table" for i in range(6)),
        NEUTRAL, "Nike")[0]
    new = definitions.RefusalVectorNode.execute(
        definitions.CollectActivations.execute(mochi, nike, 32, 32, 1, "0.5", 0, "all", 0, -1)[0], "cpca", 2, 1.0)[0]
    assert list(old.layers) == TEXT_STREAM and list(new.layers) == [LAYER, *TEXT_STREAM]
    with pytest.raises(ValueError, match=r"because Rolex lacks 't5_y_embedder\.to_out', a layer outside the blocks.*"
                                         r"Compute it again"):
        RefusalBasis.combine([old, new])
    for layers in ("all in vector", "all"):
        with pytest.raises(ValueError, match=r"\(Rolex\) lacks 't5_y_embedder\.to_out'.*\(Mochi's pooled T5 text\) "
                                             r"would be left unedited.*layers = all before 't5_y_embedder\.to_out' "
                                             r"joined that group on 2026-12-07 \(its measurement records layers = "
                                             r"all\)\. Compute it again") as refused:
            definitions.ApplyUnlearning.execute(mochi, old, 1.0, True, layers, 0, -1, "zero")
        assert "HunyuanVideo" not in str(refused.value) and "CLIP" not in str(refused.value)
    # a group without the pooled path still applies the old vector
    applied = definitions.ApplyUnlearning.execute(mochi, old, 1.0, True, "attn.qkv_y", 0, -1, "zero")[0]
    assert {key for key in applied.patches if key.endswith(".weight")} == {
        f"diffusion_model.{layer}.weight" for layer in TEXT_STREAM[1:]}


def test_a_default_vector_on_the_last_block_applies_under_all(pack, mochi, measured, text):
    """Mochi's last block has attn.qkv_y and no mlp_y, so there a vector of the default group covers every kind of block
    layer 'all' takes. It records layer_group "default" and never meant to cover the pool: 'all' and 'all in vector'
    on blocks 1..1 apply it. (Guessed from the layer kinds, both were refused as an old 'all' vector, and computing it
    again, as the message asked, gave the same refusal.)"""
    from comfyui_video_unlearning.nodes import definitions

    acts = definitions.CollectActivations.execute(mochi, measured[0], 32, 32, 1, "0.5", 0, "default", 0, -1)[0]
    default = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    assert default.measurement["layer_group"] == "default"
    assert list(default.layers) == ["blocks.0.attn.qkv_y", "blocks.1.attn.qkv_y"]
    for layers in ("all in vector", "all"):
        applied = definitions.ApplyUnlearning.execute(mochi, default, 1.0, True, layers, 1, 1, "zero")[0]
        assert {key for key in applied.patches if key.endswith(".weight")} == {
            "diffusion_model.blocks.1.attn.qkv_y.weight"}, layers


def test_an_old_all_vector_of_the_last_block_only_is_told_to_be_computed_again(pack, mochi, measured, tmp_path):
    """An 'all' vector from before t5_y_embedder joined the group, collected on the last block only, holds just
    blocks.1.attn.qkv_y: its layer kinds do not cover block 0's mlp_y, so the guess from layer kinds applied it on
    blocks 0..-1 without a word, the pool unedited. Its measurement records layers = all: it is refused, also as
    saved to a file and loaded."""
    from comfyui_video_unlearning.core.basis import RefusalBasis
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.collect import collect_activations, empty_latent

    acts = collect_activations(mochi, measured[0], empty_latent(mochi, 32, 32, 1), "0.5", 0, ["blocks.1.attn.qkv_y"],
                               {"layer_group": "all", "block_start": 1, "block_end": -1})
    old = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    old.save(tmp_path / "old.safetensors")
    loaded = RefusalBasis.load(tmp_path / "old.safetensors")
    assert loaded.measurement["layer_group"] == "all"
    for layers, vector in (("all", old), ("all in vector", old), ("all", loaded)):
        with pytest.raises(ValueError, match=r"\(Rolex\) lacks 't5_y_embedder\.to_out', which the chosen layers "
                                             r".*\(Mochi's pooled T5 text\) would be left unedited.*its measurement "
                                             r"records layers = all.*Compute it again"):
            definitions.ApplyUnlearning.execute(mochi, vector, 1.0, True, layers, 0, -1, "zero")


def test_a_combined_vector_is_judged_by_its_concepts_recorded_groups(pack, mochi, measured, text, tmp_path):
    """A combined vector records each concept's measurement in combined_from: two old 'all' vectors combined are
    refused under 'all'; two default vectors combined apply on the last block."""
    from comfyui_video_unlearning.core.basis import RefusalBasis
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.collect import collect_activations, empty_latent

    nike = definitions.PairEncoder.execute(
        text, "\n".join(f"a Nike shoe number {i} on a table | a shoe number {i} on a table" for i in range(6)),
        NEUTRAL, "Nike")[0]
    old = [definitions.RefusalVectorNode.execute(collect_activations(
        mochi, encoded, empty_latent(mochi, 32, 32, 1), "0.5", 0, ["blocks.1.attn.qkv_y"], {"layer_group": "all"}),
        "cpca", 2, 1.0)[0] for encoded in (measured[0], nike)]
    both = RefusalBasis.combine(old)
    assert not both.measurement and [e["measurement"]["layer_group"] for e in both.combined_from] == ["all", "all"]
    both.save(tmp_path / "both.safetensors")
    for vector in (both, RefusalBasis.load(tmp_path / "both.safetensors")):
        with pytest.raises(ValueError, match=r"lacks 't5_y_embedder\.to_out'.*Compute it again"):
            definitions.ApplyUnlearning.execute(mochi, vector, 1.0, True, "all", 0, -1, "zero")
    default = RefusalBasis.combine([definitions.RefusalVectorNode.execute(definitions.CollectActivations.execute(
        mochi, encoded, 32, 32, 1, "0.5", 0, "default", 0, -1)[0], "cpca", 2, 1.0)[0]
        for encoded in (measured[0], nike)])
    applied = definitions.ApplyUnlearning.execute(mochi, default, 1.0, True, "all", 1, 1, "zero")[0]
    assert {key for key in applied.patches if key.endswith(".weight")} == {"diffusion_model.blocks.1.attn.qkv_y.weight"}


def test_a_combined_vector_with_an_unrecorded_concept_is_refused_for_its_recorded_all(pack, mochi, measured, text):
    """An old 'all' vector that records layers = all, combined with one that records no group (a file from before
    2026-12-06): the recorded 'all' is not lost to the other's silence. The last-block vectors' layer kinds do not
    cover block 0's mlp_y, so the guess from layer kinds applied the combination on blocks 0..-1 without a word, the
    pool unedited (recorded_groups gave None as soon as one concept recorded nothing)."""
    import dataclasses

    from comfyui_video_unlearning.core.basis import RefusalBasis
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.collect import collect_activations, empty_latent
    from comfyui_video_unlearning.nodes.patching import recorded_groups

    nike = definitions.PairEncoder.execute(
        text, "\n".join(f"a Nike shoe number {i} on a table | a shoe number {i} on a table" for i in range(6)),
        NEUTRAL, "Nike")[0]
    rolex, unrecorded = [definitions.RefusalVectorNode.execute(collect_activations(
        mochi, encoded, empty_latent(mochi, 32, 32, 1), "0.5", 0, ["blocks.1.attn.qkv_y"], {"layer_group": "all"}),
        "cpca", 2, 1.0)[0] for encoded in (measured[0], nike)]
    unrecorded = dataclasses.replace(unrecorded, measurement={})
    both = RefusalBasis.combine([rolex, unrecorded])
    for layers in ("all in vector", "all"):
        with pytest.raises(ValueError, match=r"lacks 't5_y_embedder\.to_out'.*the measurement of 1 of the 2 concepts "
                                             r"it combines records layers = all.*Compute it again"):
            definitions.ApplyUnlearning.execute(mochi, both, 1.0, True, layers, 0, -1, "zero")
    assert recorded_groups(both) == ["all", None]


def test_a_vector_that_records_no_group_gets_one_verdict_whatever_the_block_range(pack, mochi, measured, tmp_path):
    """A vector saved before 2026-12-06 records no layer group and is judged by its layer kinds, taken from the chosen
    layers in the blocks it covers. Taken from every chosen block, the same last-block vector (blocks.1.attn.qkv_y)
    was refused on blocks 1..1 and applied on 0..-1 (block 0's mlp_y not covered), and exported, the pool unedited.
    An unrecorded default vector of both blocks (attn.qkv_y, no mlp_y) still applies."""
    import dataclasses

    from comfyui_video_unlearning.nodes import definitions, patching
    from comfyui_video_unlearning.nodes.collect import collect_activations, empty_latent

    acts = collect_activations(mochi, measured[0], empty_latent(mochi, 32, 32, 1), "0.5", 0, ["blocks.1.attn.qkv_y"],
                               {"layer_group": "all"})
    old = dataclasses.replace(definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0], measurement={})
    for layers in ("all in vector", "all"):
        for block_start, block_end in ((0, -1), (1, 1)):
            with pytest.raises(ValueError, match=r"lacks 't5_y_embedder\.to_out'.*records no layer group"):
                definitions.ApplyUnlearning.execute(mochi, old, 1.0, True, layers, block_start, block_end, "zero")
    with pytest.raises(ValueError, match=r"lacks 't5_y_embedder\.to_out'"):
        patching.export_lora(mochi, old, str(tmp_path / "old.safetensors"), target="zero")
    default = dataclasses.replace(definitions.RefusalVectorNode.execute(definitions.CollectActivations.execute(
        mochi, measured[0], 32, 32, 1, "0.5", 0, "default", 0, -1)[0], "cpca", 2, 1.0)[0], measurement={})
    assert patching.top_level_left_out(patching.layers_for(mochi, "all"), default.layers) == []
    # not as an old 'all' vector: as one pooled over the T5 padding, as every Mochi vector without a measurement was
    with pytest.raises(ValueError, match=r"^Apply Unlearning: .*text-stream layers .*records no measurement"):
        definitions.ApplyUnlearning.execute(mochi, default, 1.0, True, "all", 0, -1, "zero")


def test_a_vector_pooled_over_the_t5_padding_is_refused(pack, mochi, measured, text, tmp_path, apply_check_export):
    """Until 2026-12-06 (commit b9ca53a) Mochi's text-stream layers were pooled over all 256 T5 rows, padding the model
    never attends to (about 50 degrees off a pair's difference on the tiny model), and vectors record their
    measurement only since that evening: a Mochi vector of those layers without one was pooled the old way (or built
    without Collect Activations). Applied, checked and exported without a word before; Apply, Check and Export refuse
    it, also saved and loaded, and combined with a fresh one (Combine takes them: the combination is refused). The
    fresh vector runs in all three."""
    import dataclasses
    import re

    from comfyui_video_unlearning.core.basis import RefusalBasis
    from comfyui_video_unlearning.nodes import definitions

    encoded = measured[0]
    fresh = definitions.RefusalVectorNode.execute(definitions.CollectActivations.execute(
        mochi, encoded, 32, 32, 1, "0.5", 0, "default", 0, -1)[0], "cpca", 2, 1.0)[0]
    assert fresh.measurement["layer_group"] == "default"
    old = dataclasses.replace(fresh, measurement={})
    old.save(tmp_path / "old.safetensors")
    loaded = RefusalBasis.load(tmp_path / "old.safetensors")
    assert not loaded.measurement
    nike = definitions.PairEncoder.execute(
        text, "\n".join(f"a Nike shoe number {i} on a table | a shoe number {i} on a table" for i in range(6)),
        NEUTRAL, "Nike")[0]
    combined = RefusalBasis.combine([old, definitions.RefusalVectorNode.execute(definitions.CollectActivations.execute(
        mochi, nike, 32, 32, 1, "0.5", 0, "default", 0, -1)[0], "cpca", 2, 1.0)[0]])
    validation = definitions.PairEncoder.execute(text, VALIDATION, BENIGN, "Rolex")[0]
    message = (r"this refusal vector \({concept}\) edits this mochi model's text-stream layers "
               r"\('blocks\.0\.attn\.qkv_y'\.\.\.\) and {which}, which Collect Activations has stored with every "
               r"vector since 2026-12-06: it was computed before 2026-12-06, when those layers were pooled over all "
               r"256 padded T5 rows instead of the prompt's own tokens .*, or built without Collect Activations\. "
               r"Compute it again with Collect Activations, which now pools them over the prompt's own tokens")
    for node, (run, remedy) in apply_check_export(mochi, validation, 32, 1).items():
        for vector, concept, which in ((old, "Rolex", "it records no measurement"),
                                       (loaded, "Rolex", "it records no measurement"),
                                       (combined, "Rolex \\+ Nike", "the measurement of 1 of the 2 concepts it "
                                                                      "combines is not recorded")):
            with pytest.raises(ValueError, match=f"^{re.escape(node)}: "
                                                 f"{message.format(concept=concept, which=which)}{re.escape(remedy)}$"):
                run(vector)
        run(fresh)
