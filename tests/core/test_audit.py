"""Properties of the unlearning audit (core.audit): an edited model read against its original, on the check's toy
model with a planted concept direction (tests/core/test_check.py)."""

import copy

import pytest
import torch

from core.audit import AuditResult, audit_predictions, run_audit
from core.check import check_strengths, measure_baseline
from core.recommend import TOWARD_CONCEPT_LIMIT
from test_check import Toy, fitted, forward_for, world


def rows(seed=1):
    _, unsafe, safe, benign = world(seed)
    return list(zip(unsafe, safe)), list(benign)


def edited_copy(model, basis, strength):
    """A copy of ``model`` whose layer weight carries the edit (target zero: ``W - s (W U) U^T``), as a baked
    checkpoint or a loaded LoRA would."""
    edited = copy.deepcopy(model)
    subspace = basis.subspace("layer").double()
    with torch.no_grad():
        weight = edited.layer.weight.double()
        edited.layer.weight.copy_(weight - strength * (weight @ subspace) @ subspace.T)
    return edited


def all_rows(validation, benign):
    return [p[0] for p in validation] + [p[1] for p in validation] + benign


def test_the_original_against_itself_loses_nothing():
    model = Toy()
    validation, benign = rows()
    with torch.no_grad():
        result = run_audit(model, forward_for(model), forward_for(model), validation, benign)
    assert (result.removed, result.collateral, result.toward_concept, result.difference_ratio) == (0.0, 0.0, 0.0, 1.0)
    assert result.warnings() == [] and result.collateral_read == "collateral"
    assert result.forwards == 2


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_a_baked_edit_reads_as_the_check_reads_it_at_that_strength(strength):
    """The audit of a model whose weights carry the edit equals the check's prediction figures at that strength,
    where the check applied the same edit through hooks."""
    model = Toy()
    _, basis = fitted(model)
    validation, benign = rows()
    negative = torch.zeros_like(benign[0])
    with torch.no_grad():
        result = run_audit(model, forward_for(model), forward_for(edited_copy(model, basis, strength)), validation,
                           benign, negative=negative, guidance=5.0)
        baseline = measure_baseline(model, forward_for(model), validation, benign, basis.layers, negative=negative)
        checked = check_strengths(model, forward_for(model), basis, baseline, [0, strength], target="zero",
                                  rows=(validation, benign, negative), guidance=5.0)
    assert result.removed == pytest.approx(checked.efficacy[1], abs=1e-5)
    assert result.collateral == pytest.approx(checked.collateral_prediction[1], abs=1e-5)
    assert result.collateral_guided == pytest.approx(checked.collateral_guided[1], abs=1e-5)
    assert result.toward_concept == pytest.approx(checked.toward_concept[1], abs=1e-5)
    assert result.removed > 0.3


def test_an_edit_that_adds_the_concept_is_named():
    """Moving every prompt along the concept toward the unsafe side shrinks the pairs' difference as removing it
    does; the safe sides' move tells them apart."""
    concept, *_ = world(1)
    model = Toy()
    pushed = copy.deepcopy(model)
    with torch.no_grad():
        # the layer reads x + (2 - <x, c>) c: every prompt lands on the unsafe sides' level along c
        projector = torch.eye(len(concept)) - torch.outer(concept, concept)
        pushed.layer.bias.add_(pushed.layer.weight @ (2.0 * concept))
        pushed.layer.weight.copy_(pushed.layer.weight @ projector)
        result = run_audit(model, forward_for(model), forward_for(pushed), *rows())
    assert result.removed > 0.9
    assert result.toward_concept > TOWARD_CONCEPT_LIMIT
    assert "adds the concept" in result.warnings()[0]


def test_removal_per_script_names_the_script_left_behind():
    model = Toy()
    _, basis = fitted(model)
    validation, benign = rows()
    with torch.no_grad():
        baseline = measure_baseline(model, forward_for(model), validation, benign, [])
        edited = edited_copy(model, basis, 1.0)
        predictions = forward_for(edited)(all_rows(validation, benign), None)
    groups = {"Latin": [0, 1, 2, 3], "Han": [4, 5]}
    result = audit_predictions(baseline, predictions, groups=groups)
    assert [(script, pairs) for script, pairs, _ in result.removed_by_script] == [("Latin", 4), ("Han", 2)]
    pooled = result.removed
    # an edited model that leaves the Han pairs untouched: their rows keep the original's predictions
    kept = predictions.clone()
    for index in groups["Han"]:
        kept[index], kept[len(validation) + index] = baseline.predictions[index], baseline.predictions[
            len(validation) + index]
    behind = audit_predictions(baseline, kept, groups=groups)
    assert dict((s, r) for s, _, r in behind.removed_by_script)["Han"] == pytest.approx(0.0, abs=1e-6)
    assert behind.removed < pooled
    # each pair on its own: the untouched pairs read 0, the others as the edit left them
    assert len(behind.removed_by_pair) == 6 and behind.removed_by_pair[4:] == pytest.approx((0.0, 0.0), abs=1e-6)
    assert behind.removed_by_pair[:4] == pytest.approx(result.removed_by_pair[:4])


def test_a_script_left_behind_is_warned_about_only_when_the_pooled_share_reads_removed():
    def result(pooled):
        return AuditResult(removed=pooled, collateral=0.1, toward_concept=0.0, difference_ratio=0.2, pairs=6,
                           benign=10, forwards=2,
                           removed_by_script=(("Latin", 4, 0.99), ("Han", 2, 0.3)))

    assert "Han (30%, 2 pairs)" in result(0.95).warnings()[0]
    assert result(0.5).warnings() == []


def test_guidance_needs_the_negative_row():
    model = Toy()
    with pytest.raises(ValueError, match="negative"):
        run_audit(model, forward_for(model), forward_for(model), *rows(), guidance=5.0)


def test_the_original_connected_as_the_edited_model_is_named():
    """Swapped inputs: the 'edited' model's pairs differ more than the 'original's'. Removal, a projection, can read
    positive there; the difference's size tells."""
    model = Toy()
    _, basis = fitted(model)
    edited = edited_copy(model, basis, 1.0)
    with torch.no_grad():
        right = run_audit(model, forward_for(model), forward_for(edited), *rows())
        swapped = run_audit(edited, forward_for(edited), forward_for(model), *rows())
    assert right.difference_ratio < 1 and not any("swapped" in line for line in right.warnings())
    assert swapped.difference_ratio > 1.1 and any("swapped" in line for line in swapped.warnings())



def test_a_negative_that_moves_like_the_concept_is_named_with_both_causes_and_the_guided_figure():
    """An edit made elsewhere can move an empty negative prompt as far as the concept's prompts (UCE at its default
    erase scale on the organism): the warning must not blame the negative's text alone, and the guided collateral
    it sets aside is still shown."""
    figures = dict(removed=0.89, collateral=0.198, toward_concept=-0.02, difference_ratio=0.3, pairs=5, benign=12,
                   forwards=2)
    carried = AuditResult(**figures, collateral_guided=0.61, guidance=4.0, negative_concept_share=1.53)
    assert carried.collateral_read == "conditional" and carried.headline_collateral == 0.198
    (warning,) = carried.warnings()
    assert "1.53" in warning and "names the concept" in warning and "an empty negative names nothing" in warning
    assert "guided collateral, which counts the negative's move, is 0.610" in warning
    assert "not read: the negative moves like the concept's prompts" in carried.table()
    without_cfg = AuditResult(**figures, negative_concept_share=1.53)
    assert "guided" not in without_cfg.warnings()[0]
    assert not AuditResult(**figures, collateral_guided=0.61, guidance=4.0, negative_concept_share=0.2).warnings()
