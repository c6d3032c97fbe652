"""The Unlearning Audit node on a real ComfyUI, in process, with the tiny Wan 2.1 of the host fixtures: an edited MODEL
read against its original, whoever made the edit."""

from __future__ import annotations

import pytest
import torch

from test_check_node import BENIGN, PAIRS, VALIDATION, NEUTRAL  # noqa: F401  (the check's own pairs)

pytestmark = pytest.mark.usefixtures("inference_mode")
TIMESTEPS = "0.1, 0.4"


@pytest.fixture(scope="module")
def nodes(pack):
    from comfyui_video_unlearning.nodes import audit, check, definitions

    return definitions, check, audit


@pytest.fixture(scope="module")
def basis(nodes, wan, clip):
    definitions, _, _ = nodes
    with torch.inference_mode():
        encoded = definitions.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
        acts = definitions.CollectActivations.execute(wan, encoded, 64, 64, 1, "2", 0, "default", 0, -1)[0]
        return definitions.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]


@pytest.fixture(scope="module")
def validation(nodes, clip):
    definitions, _, _ = nodes
    with torch.inference_mode():
        return definitions.PairEncoder.execute(clip, VALIDATION, BENIGN, "Rolex")[0]


def audit(nodes, original, edited, validation, **extra):
    _, _, audit_module = nodes
    return audit_module.UnlearningAudit.execute(original, edited, validation, 64, 64, 1, TIMESTEPS, 0, **extra)


def applied(nodes, wan, basis, strength, target="zero"):
    definitions, _, _ = nodes
    return definitions.ApplyUnlearning.execute(wan, basis, strength, True, "default", 0, -1, target)[0]


def test_the_original_against_itself_reads_nothing_and_says_so(nodes, wan, validation):
    out = audit(nodes, wan, wan, validation)
    removed, collateral, table = out.args if hasattr(out, "args") else out
    assert (removed, collateral) == (0.0, 0.0)
    assert "nothing was edited" in table
    shown = out.ui if isinstance(out.ui, dict) else out.ui.as_dict()
    assert shown["video_unlearning_audit"][0]["table"] == table


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_apply_unlearnings_output_reads_as_the_check_reads_that_strength(nodes, wan, basis, validation, strength):
    """The audit of Apply Unlearning's MODEL (weight patches, run by ComfyUI) equals Unlearning Check's prediction
    figures at that strength (its hooks): one edit, two ways of running it."""
    _, check, audit_module = nodes
    edited = applied(nodes, wan, basis, strength)
    result = audit_module.run_unlearning_audit(wan, edited, validation, width=64, height=64, length=1,
                                               timesteps=TIMESTEPS, seed=0, collapse_padded_text=False)
    removed, collateral = result.removed, result.collateral
    # the node's default cuts Wan's zero text padding, as the check does: exact in maths, rounding apart
    cut = audit(nodes, wan, edited, validation).args
    assert cut[:2] == pytest.approx((removed, collateral), rel=1e-3, abs=1e-4)
    main, _ = check.run_unlearning_check(wan, basis, validation, f"0, {strength}", group="default", block_start=0,
                                         block_end=-1, target="zero", width=64, height=64, length=1,
                                         timesteps=TIMESTEPS, seed=0, collapse_padded_text=False)
    assert removed == pytest.approx(main.efficacy[1], abs=2e-4)
    assert collateral == pytest.approx(main.collateral_prediction[1], rel=2e-3, abs=1e-6)
    assert removed > 0.1


def test_an_exported_lora_loaded_by_comfyui_reads_as_apply_unlearning(nodes, wan, basis, validation, tmp_path,
                                                                     monkeypatch):
    """Export Unlearning as LoRA, loaded back by ComfyUI's LoraLoaderModelOnly: the file holds the edit Apply
    Unlearning applies (bf16 / fp32 weights), which the audit reads without the vector."""
    import folder_paths
    import nodes as comfy_nodes

    definitions, _, _ = nodes
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    folder_paths.filename_list_cache.clear()
    try:
        definitions.ExportLoRA.execute(wan, basis, 1.0, "zero", "audit")
        name = folder_paths.get_filename_list("loras")[0]
        loaded = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(wan, name, 1.0)[0]
        from_lora = audit(nodes, wan, loaded, validation).args[:2]
        from_apply = audit(nodes, wan, applied(nodes, wan, basis, 1.0), validation).args[:2]
    finally:
        folder_paths.filename_list_cache.clear()
    assert from_lora == pytest.approx(from_apply, rel=1e-4, abs=1e-6)


def test_swapped_models_are_named_and_an_edit_past_full_removal_is_not_taken_for_them(nodes, wan, basis, validation):
    assert "swapped" in audit(nodes, applied(nodes, wan, basis, 1.0), wan, validation).args[2]
    removed, _, table = audit(nodes, wan, applied(nodes, wan, basis, 2.0), validation).args
    assert removed > 1.0 and "swapped" not in table


def test_the_samplers_negative_gives_guided_collateral(nodes, wan, basis, validation, clip):
    import nodes as comfy_nodes

    negative = comfy_nodes.CLIPTextEncode().encode(clip, "blurry, low quality, static")[0]
    edited = applied(nodes, wan, basis, 1.0)
    plain = audit(nodes, wan, edited, validation)
    guided = audit(nodes, wan, edited, validation, negative=negative, cfg=6.0)
    assert guided.args[0] == pytest.approx(plain.args[0], abs=1e-6)  # removal: a pair's sides share the negative
    assert guided.args[1] != pytest.approx(plain.args[1], rel=1e-3)
    assert "guided collateral" in guided.args[2]


def test_models_of_two_architectures_are_refused(nodes, wan, wan22_5b, validation):
    with pytest.raises(ValueError, match="not one model in two versions|same architecture"):
        audit(nodes, wan, wan22_5b, validation)


def test_missing_pairs_and_a_bad_cfg_are_refused(nodes, wan, clip, validation):
    import nodes as comfy_nodes

    with pytest.raises(ValueError, match="no validation pairs"):
        audit(nodes, wan, wan, None)
    negative = comfy_nodes.CLIPTextEncode().encode(clip, "blurry")[0]
    with pytest.raises(ValueError, match="cfg must be"):
        audit(nodes, wan, wan, validation, negative=negative, cfg=0.0)


def test_the_zero_text_padding_is_cut_as_the_check_cuts_it(nodes, wan, tiny):
    """With a text encoder that zeroes the padding (as the real UMT5-XXL does), the audit cuts Wan's 512 text rows to
    the prompts' plus one (``nodes.check_fastpath``) on both models (a clone shares its original's module): the same
    figures as every row run, and the table says so. Unlearning Check's cost bench times it (docs/benchmarks.md)."""
    definitions, _, audit_module = nodes
    clip = tiny.zero_padded(tiny.tiny_wan_clip())
    encoded = definitions.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
    validation = definitions.PairEncoder.execute(clip, VALIDATION, BENIGN, "Rolex")[0]
    acts = definitions.CollectActivations.execute(wan, encoded, 64, 64, 1, "2", 0, "default", 0, -1)[0]
    edited = applied(nodes, wan, definitions.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0], 1.0)
    figures = {}
    for cut in (True, False):
        notes = {}
        result = audit_module.run_unlearning_audit(wan, edited, validation, width=64, height=64, length=1,
                                                   timesteps=TIMESTEPS, seed=0, collapse_padded_text=cut, notes=notes)
        figures[cut] = (result.removed, result.collateral)
        assert notes["padded_text"].startswith("yes" if cut else "no (turned off"), notes
    assert figures[True] == pytest.approx(figures[False], rel=1e-3, abs=1e-4)
    assert figures[True][0] > 0.1
