"""HunyuanVideo's text where it enters the model: the layer group "txt_in" edits ``txt_in.input_embedder`` (each token
row) and ``txt_in.c_embedder.in_layer`` (the rows' mean, which the model takes itself), outside the blocks. The text
stream the double blocks' groups edit is concatenated with the video tokens and read by every single block, which no
other group edits; this group edits the text before any of it. On the tiny HunyuanVideo that ComfyUI's detection loads
(``tiny_models.tiny_hunyuan_video_state_dict``, random weights)."""

from __future__ import annotations

import pytest
import torch
from pooled_edit import (BENIGN, NEUTRAL, VALIDATION, assert_exported_lora_patches_as_apply, held_out_check,
                         measure_group, weight_key)

# the same fixtures: the tiny HunyuanVideo, and its text stand-in whose pooled output is the mean of the prompt's rows
from test_hunyuan_pooled import hunyuan, text  # noqa: F401

TOKENS = "txt_in.input_embedder"
MEAN = "txt_in.c_embedder.in_layer"
LAYERS = (TOKENS, MEAN)
TEXT_STREAM = ["double_blocks.0.txt_mlp.0", "double_blocks.0.txt_attn.qkv"]

pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.fixture(scope="module")
def measured(pack, hunyuan, text):
    """Pair Encoder -> Collect Activations (group "txt_in") -> Low-Rank Refusal Vector; the encoded pairs too."""
    return measure_group(hunyuan, text, "txt_in", 64, 9)


def _token_rows(conditionings) -> list[torch.Tensor]:
    """Each prompt's text rows ``[tokens, d]`` float64, as the model reads them (no padding: its own count)."""
    return [cond[0][0][0].double() for cond in conditionings]


def test_the_group_is_the_text_input_whatever_the_block_range(pack, hunyuan):
    from comfyui_video_unlearning.nodes.adapters import GROUP_CHOICES, adapter_for, layers_for

    adapter = adapter_for(hunyuan)
    assert "txt_in" in GROUP_CHOICES and adapter.default_group == "txt_mlp.0"
    assert layers_for(hunyuan, "txt_in") == layers_for(hunyuan, "txt_in", 0, 0) == list(LAYERS)
    assert layers_for(hunyuan, "default") == ["double_blocks.0.txt_mlp.0"]  # the default is unchanged
    # vector_in joined 'all' first: Apply's refusal of an old 'all' vector names the first top-level layer it lacks
    assert layers_for(hunyuan, "all") == ["vector_in.in_layer", *LAYERS, *TEXT_STREAM]
    # the text's alone: measured at one timestep and replayed by the check, judged pair by pair, one record
    assert adapter.timestep_independent_layers(LAYERS) == list(LAYERS)
    assert adapter.text_side_layers(LAYERS) == list(LAYERS)
    assert adapter.shared_inputs(LAYERS) == {"txt_in": list(LAYERS)}
    # the token rows are pooled over the prompt's tokens; the mean embedder reads one row per prompt: no token mask
    assert adapter.text_token_layers(LAYERS) == [TOKENS]
    assert [adapter.main_block(hunyuan.model.diffusion_model, name) for name in LAYERS] == [None, None]
    assert adapter.top_level_group(TOKENS) is adapter.top_level_group(MEAN) is adapter.groups["txt_in"]


def test_collect_measures_the_text_once_and_its_mean_is_what_the_model_reads(pack, hunyuan, measured):
    """One timestep, one shared record, whose safe mean is the safe prompts' token mean: the very row the model's
    c_embedder reads (its text has no padding, so the model's unmasked mean is the prompt's)."""
    from comfyui_video_unlearning.nodes.check import comfy_forward
    from comfyui_video_unlearning.nodes.collect import empty_latent

    encoded, acts, basis = measured
    assert tuple(acts.layers) == tuple(basis.layers) == LAYERS and len(acts.sigmas) == 1
    assert basis.shared_inputs() == {"txt_in": list(LAYERS)} and basis[TOKENS] is basis[MEAN]
    safe_means = torch.stack([rows.mean(0) for rows in _token_rows(encoded.safe)])  # [pairs, d]
    torch.testing.assert_close(basis.target(TOKENS).double(), safe_means.mean(0), rtol=1e-5, atol=1e-6)

    seen = []
    layer = hunyuan.model.diffusion_model.get_submodule(MEAN)
    handle = layer.register_forward_pre_hook(lambda _module, args: seen.append(args[0].double().clone()))
    try:
        comfy_forward(hunyuan, empty_latent(hunyuan, 32, 32, 1), [0.5], 0, [])([encoded.unsafe[0]], None)
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0][0], _token_rows(encoded.unsafe[:1])[0].mean(0), rtol=1e-5, atol=1e-6)


def test_apply_removes_the_text_along_the_vector_at_both_layers(pack, hunyuan, measured, effective_weights):
    """Each pair's difference (the token means' and every token row's), along the refusal directions, maps to nearly
    zero at both layers, and the rest of it is untouched; strength 0 is the identity; only the two layers are
    patched."""
    from comfyui_video_unlearning.nodes import definitions

    encoded, _, basis = measured
    keys = [weight_key(name) for name in LAYERS]
    u = basis.subspace(TOKENS).double()  # [d, c]
    unsafe, safe = _token_rows(encoded.unsafe), _token_rows(encoded.safe)
    pooled = torch.stack([a.mean(0) for a in unsafe]) - torch.stack([b.mean(0) for b in safe])  # [pairs, d]
    rows = torch.cat(unsafe) - torch.cat(unsafe).mean(0)  # every token row, about the rows' mean: [tokens, d]
    patched = definitions.ApplyUnlearning.execute(hunyuan, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    assert set(patched.patches) == set(keys)
    edited, unedited = effective_weights(patched, keys), effective_weights(hunyuan, keys)
    for key in keys:
        w, w_edit = unedited[key].double(), edited[key].double()
        for difference in (pooled, rows):
            along = difference @ u @ u.T
            assert (along.norm(dim=1) > 0).all()
            ratio = (along @ w_edit.T).norm(dim=1) / (along @ w.T).norm(dim=1)
            assert ratio.max() < 1e-5, (key, ratio)
            outside = difference - along
            torch.testing.assert_close(outside @ w_edit.T, outside @ w.T, rtol=1e-4, atol=1e-5)

    unchanged = definitions.ApplyUnlearning.execute(hunyuan, basis, 0.0, True, "txt_in", 0, -1, "zero")[0]
    assert not set(keys) & set(unchanged.patches)
    for key, weight in effective_weights(unchanged, keys).items():
        torch.testing.assert_close(weight, unedited[key], rtol=0, atol=0)


def test_the_edited_model_reads_the_text_as_if_projected_before_it_entered(pack, hunyuan, measured):
    """Target safe_mean: the patched model on a prompt predicts what the unedited model predicts on the prompt's rows
    projected, x - (x - mu) U U^T, since the mean of the projected rows is the projected mean; the whole text path
    (the double blocks and the text rows beside the video in the single blocks) sees the edited text."""
    import comfy.model_management

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import comfy_forward
    from comfyui_video_unlearning.nodes.collect import empty_latent, sigmas_for

    encoded, _, basis = measured
    u, mu = basis.subspace(TOKENS).float(), basis.target(TOKENS).float()
    latent = empty_latent(hunyuan, 32, 32, 5)
    sigmas = sigmas_for(hunyuan, [0.3, 0.8])
    patched = definitions.ApplyUnlearning.execute(hunyuan, basis, 1.0, True, "txt_in", 0, -1, "safe_mean")[0]
    for prompt in encoded.unsafe[:2]:
        (context, extras), = prompt
        projected = [[context - (context - mu) @ u @ u.T, extras]]
        try:
            edited = comfy_forward(patched, latent, sigmas, 0, [])([prompt], None)
            plain = comfy_forward(hunyuan, latent, sigmas, 0, [])([prompt], None)
            expected = comfy_forward(hunyuan, latent, sigmas, 0, [])([projected], None)
        finally:
            comfy.model_management.unload_all_models()
        assert (edited - plain).norm() > 100 * (edited - expected).norm()
        torch.testing.assert_close(edited, expected, rtol=1e-4, atol=1e-4)


def test_the_exported_lora_patches_both_layers_through_comfyuis_loader(pack, hunyuan, measured, effective_weights,
                                                                       tmp_path):
    assert_exported_lora_patches_as_apply(hunyuan, measured[2], LAYERS, tmp_path, "text_input/hunyuan",
                                          effective_weights)


def test_the_check_runs_with_the_group_and_with_all(pack, hunyuan, measured, text):
    from comfyui_video_unlearning.nodes import definitions

    encoded, _, basis = measured
    check = held_out_check(hunyuan, text, "safe_mean", 1)

    strength, _, table = check(basis, "txt_in", "none")
    assert strength in (0.0, 1.0) and "2 layers (txt_in)" in table
    acts = definitions.CollectActivations.execute(hunyuan, encoded, 32, 32, 1, "0.5", 0, "all", 0, -1)[0]
    every = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    assert list(every.layers) == ["vector_in.in_layer", *LAYERS, *TEXT_STREAM]
    _, _, table = check(every, "all in vector", "layer groups")
    swept = [line.split(":")[0].strip() for line in table.splitlines() if line.startswith("  ")]
    assert {"txt_in", "vector_in", "txt_mlp.0", "txt_attn.qkv"} <= set(swept), table
    _, _, table = check(every, "all in vector", "block halves")
    assert "the 2 checked layers in blocks (and 3 outside them) lie in one block (block 0)" in table
    # in no block: a block range that holds none of the vector's blocks still edits the text input
    applied = definitions.ApplyUnlearning.execute(hunyuan, every, 1.0, True, "txt_in", 0, 0, "safe_mean")[0]
    assert {key for key in applied.patches if key.endswith(".weight")} == {weight_key(name) for name in LAYERS}


def test_an_all_vector_from_before_txt_in_joined_is_told_to_be_computed_again(pack, hunyuan, measured, text, tmp_path):
    """A vector of layers = all computed before txt_in joined the group (2026-12-07) covers vector_in and the text
    stream. Apply, the check and Export refuse it under all / all in vector, naming the text path it would leave
    unedited; Combine with a vector computed today says the same; a group without txt_in still applies it."""
    from comfyui_video_unlearning.core.basis import RefusalBasis
    from comfyui_video_unlearning.nodes import definitions, patching
    from comfyui_video_unlearning.nodes.check import UnlearningCheck
    from comfyui_video_unlearning.nodes.collect import collect_activations, empty_latent

    before = ["vector_in.in_layer", *TEXT_STREAM]  # what 'all' took from 2026-12-06
    acts = collect_activations(hunyuan, measured[0], empty_latent(hunyuan, 32, 32, 1), "0.5", 0, before,
                               {"layer_group": "all"})
    old = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    lacks = (r"this refusal vector \(Rolex\) lacks 'txt_in\.input_embedder', which {taker}: the path through it "
             r"\(HunyuanVideo's text tokens, which the single blocks read beside the video\) would be left unedited.*"
             r"computed with layers = all before 'txt_in\.input_embedder' joined that group on 2026-12-07 \(its "
             r"measurement records layers = all\)")
    for layers in ("all in vector", "all"):
        with pytest.raises(ValueError, match=r"^Apply Unlearning: " + lacks.format(
                taker=rf"the chosen layers \('{layers}'\) take")):
            definitions.ApplyUnlearning.execute(hunyuan, old, 1.0, True, layers, 0, -1, "safe_mean")
    held_out = definitions.PairEncoder.execute(text, VALIDATION, NEUTRAL, "Rolex")[0]
    with pytest.raises(ValueError, match=r"^Unlearning Check: " + lacks.format(
            taker=r"the chosen layers \('all in vector'\) take")):
        UnlearningCheck.execute(hunyuan, old, "0,1", "all in vector", 0, -1, "safe_mean", "none", 32, 32, 1, "0.5", 0,
                                held_out)
    with pytest.raises(ValueError, match=r"^Export Unlearning as LoRA: " + lacks.format(taker="layers = all takes")):
        patching.export_lora(hunyuan, old, str(tmp_path / "never.safetensors"))

    nike = definitions.PairEncoder.execute(
        text, "\n".join(f"a Nike shoe number {i} on a table | a shoe number {i} on a table" for i in range(6)),
        NEUTRAL, "Nike")[0]
    new = definitions.RefusalVectorNode.execute(
        definitions.CollectActivations.execute(hunyuan, nike, 32, 32, 1, "0.5", 0, "all", 0, -1)[0], "cpca", 2, 1.0)[0]
    with pytest.raises(ValueError, match=r"because Rolex lacks 'txt_in\.input_embedder', a layer outside the blocks.*"
                                         r"Compute it again"):
        RefusalBasis.combine([old, new])
    # two vectors of today's 'all' combine (one shared record each), and the combination edits the text input too
    rolex = definitions.RefusalVectorNode.execute(
        definitions.CollectActivations.execute(hunyuan, measured[0], 32, 32, 1, "0.5", 0, "all", 0, -1)[0], "cpca", 2,
        1.0)[0]
    combined = RefusalBasis.combine([rolex, new])
    assert combined.shared_inputs() == {"txt_in": list(LAYERS)}
    applied = definitions.ApplyUnlearning.execute(hunyuan, combined, 1.0, True, "all", 0, -1, "safe_mean")[0]
    assert {key for key in applied.patches if key.endswith(".weight")} == \
        {weight_key(name) for name in ("vector_in.in_layer", *LAYERS, *TEXT_STREAM)}
    # a group without the text input still applies the old vector
    applied = definitions.ApplyUnlearning.execute(hunyuan, old, 1.0, True, "vector_in", 0, -1, "safe_mean")[0]
    assert {key for key in applied.patches if key.endswith(".weight")} == {weight_key("vector_in.in_layer")}


def test_choosing_txt_in_for_a_vector_without_it_names_a_remedy_that_runs(pack, hunyuan, measured, text):
    """Yesterday's 'all' vector (vector_in and the text stream) under layers 'txt_in' was told to choose 'all in
    vector', which then refused it for lacking txt_in: now Apply and the check say to compute a vector with the group.
    A vector of another group (vector_in) is told both: compute one with txt_in, or choose 'all in vector', which
    runs."""
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import UnlearningCheck
    from comfyui_video_unlearning.nodes.collect import collect_activations, empty_latent

    encoded = measured[0]
    acts = collect_activations(hunyuan, encoded, empty_latent(hunyuan, 32, 32, 1), "0.5", 0,
                               ["vector_in.in_layer", *TEXT_STREAM], {"layer_group": "all"})
    old = definitions.RefusalVectorNode.execute(acts, "cpca", 2, 1.0)[0]
    remedy = (r"compute a vector with Collect Activations' layers 'txt_in' \(or 'all'\): this one holds none of its "
              r"layers")
    with pytest.raises(ValueError, match=r"^Apply Unlearning: no layer of the refusal vector .*" + remedy) as refused:
        definitions.ApplyUnlearning.execute(hunyuan, old, 1.0, True, "txt_in", 0, -1, "safe_mean")
    assert "all in vector" not in str(refused.value)
    held_out = definitions.PairEncoder.execute(text, VALIDATION, BENIGN, "Rolex")[0]
    with pytest.raises(ValueError, match=r"^Unlearning Check: no layer of the refusal vector .*" + remedy) as refused:
        UnlearningCheck.execute(hunyuan, old, "0, 1", "txt_in", 0, -1, "safe_mean", "none", 32, 32, 1, "0.5", 0,
                                held_out)
    assert "all in vector" not in str(refused.value)
    definitions.ApplyUnlearning.execute(hunyuan, measured[2], 1.0, True, "txt_in", 0, -1, "safe_mean")  # followed

    pooled = definitions.RefusalVectorNode.execute(
        definitions.CollectActivations.execute(hunyuan, encoded, 32, 32, 1, "0.5", 0, "vector_in", 0, -1)[0], "cpca",
        2, 1.0)[0]
    with pytest.raises(ValueError, match=remedy + r"; or choose layers 'all in vector' to edit the vector's own "
                                          r"layers$"):
        definitions.ApplyUnlearning.execute(hunyuan, pooled, 1.0, True, "txt_in", 0, -1, "safe_mean")
    definitions.ApplyUnlearning.execute(hunyuan, pooled, 1.0, True, "all in vector", 0, -1, "safe_mean")
