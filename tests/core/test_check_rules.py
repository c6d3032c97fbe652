"""Boundaries of the check's rules and figures that test_check.py leaves open (found by mutation testing: each test
here fails on a small change of core/check.py that every earlier test let pass)."""

import dataclasses

import pytest
import torch

from core.check import (NEGATIVE_CARRIES_CONCEPT, Baseline, EditHooks, layer_proxies, measure_baseline,
                        negative_concept_share, recommend, run_check)
from core.refusal import RefusalFitter

DIM = 12


class Toy(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.layer = torch.nn.Linear(DIM, 10)
        self.head = torch.nn.Linear(10, 6)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return self.head(torch.tanh(self.layer(x)))


def _world(seed, pairs=5, benign=8):
    concept = torch.nn.functional.normalize(torch.randn(DIM, generator=torch.Generator().manual_seed(0)), dim=0)
    g = torch.Generator().manual_seed(100 + seed)
    base = torch.randn(pairs, DIM, generator=g)
    base = base - (base @ concept)[:, None] * concept
    prompts = torch.randn(benign, DIM, generator=g)
    return base + 2.0 * concept, base, prompts - (prompts @ concept)[:, None] * concept


def _setup():
    model = Toy()
    unsafe, safe, neutral = _world(0, pairs=8, benign=12)
    basis = RefusalFitter().update("layer", unsafe.double(), safe.double()).update_neutral(
        "layer", neutral.double()).fit(rank=2, alpha=1.0, pairs=[(f"u{i}", f"s{i}") for i in range(8)])
    unsafe, safe, benign = _world(1)
    negative = _world(2)[0][0]  # a prompt showing the concept
    return model, basis, list(zip(unsafe, safe)), list(benign), negative


def _forward(model):
    return lambda rows, recorder: model(torch.stack(list(rows)))


def test_the_negative_share_is_the_one_read_at_full_projection_not_at_the_largest_strength():
    model, basis, pairs, benign, negative = _setup()
    with torch.no_grad():
        result = run_check(model, _forward(model), basis, pairs, benign, "0, 0.5, 1, 2", negative=negative,
                           guidance=4.0)
        baseline = measure_baseline(model, _forward(model), pairs, benign, ["layer"], negative=negative)
        rows = [p[0] for p in pairs] + [p[1] for p in pairs] + benign + [negative]
        shares = {}
        with EditHooks(model, basis) as hooks:
            for strength in (0.5, 1.0, 2.0):
                hooks.strength = strength
                shares[strength] = negative_concept_share(baseline, model(torch.stack(rows)).double())
    assert shares[1.0] is not None and min(abs(shares[1.0] - shares[s]) for s in (0.5, 2.0)) > 1e-3
    assert result.negative_share_strength == 1.0
    assert result.negative_concept_share == pytest.approx(shares[1.0], rel=1e-6)


def test_a_negative_share_of_exactly_the_line_carries_the_concept():
    """NEGATIVE_CARRIES_CONCEPT is the first share that carries it (>=): the check then reads the conditional
    collateral, as CheckResult.negative_carries_concept says."""
    model, basis, pairs, benign, negative = _setup()
    with torch.no_grad():
        whole = run_check(model, _forward(model), basis, pairs, benign, "0, 0.5, 1, 2", negative=negative,
                          guidance=4.0)
        at_line = dataclasses.replace(whole, negative_concept_share=NEGATIVE_CARRIES_CONCEPT)
        result = run_check(model, _forward(model), basis, pairs, benign, "0, 0.5, 1, 2", negative=negative,
                           guidance=4.0, negative_as=at_line)
    assert result.negative_concept_share == NEGATIVE_CARRIES_CONCEPT and result.negative_carries_concept
    assert result.collateral == result.collateral_prediction != result.collateral_guided
    assert (result.recommended, result.reason) == recommend(result.strengths, result.efficacy,
                                                            result.collateral_prediction, name="conditional collateral",
                                                            toward=result.toward_concept)
    below = dataclasses.replace(whole, negative_concept_share=NEGATIVE_CARRIES_CONCEPT * 0.98)
    assert not below.negative_carries_concept and below.collateral == below.collateral_guided


def test_the_baseline_averages_each_rows_inputs_over_the_timesteps_of_a_forward():
    """A forward runs the model once per timestep on all rows: the recorded rows are timestep-major, and each
    prompt's input is the mean of its own rows (here x at one timestep and x + 1 at the other: x + 0.5)."""
    model, _, pairs, benign, _ = _setup()

    def forward(rows, recorder):
        x = torch.stack(list(rows))
        model(x)
        return model(x + 1.0)

    with torch.no_grad():
        baseline = measure_baseline(model, forward, pairs, benign, ["layer"], batch_size=4)
    rows = torch.stack([p[0] for p in pairs] + [p[1] for p in pairs] + benign).double()
    torch.testing.assert_close(baseline.inputs["layer"], rows + 0.5, atol=1e-6, rtol=0)


def test_the_steepest_rise_is_judged_per_unit_of_strength():
    """Rule 2 takes the grid step with the largest gain *per unit of strength*: on 0, 0.25, 0.5, 1.5 with removal
    0, 0.1, 0.4, 0.8 that is the step to 0.5 (1.2 per unit), not the larger raw step to 1.5 (0.4 per unit)."""
    strength, reason = recommend([0.0, 0.25, 0.5, 1.5], [0.0, 0.1, 0.4, 0.8], [0.0, 0.1, 0.2, 0.3],
                                 full_projection=None)
    assert strength == 0.5 and "steepest rise" in reason


def _pairs_moving(d):
    """A baseline of 4 pairs, 2 benign prompts and the negative (one feature each) and predictions where pair i's
    unsafe side moves by d[i], its safe side and the benign prompts stay and the negative moves by 1."""
    p0 = torch.zeros(4 + 4 + 2 + 1, 1, dtype=torch.float64)
    p = p0.clone()
    p[:4, 0] = torch.tensor(d, dtype=torch.float64)
    p[-1, 0] = 1.0
    return Baseline(pairs=4, benign=2, predictions=p0, inputs={}, forwards=1, negative=True), p


def test_the_negative_share_needs_the_concepts_move_twice_its_standard_error():
    """``mean(d) > 2 sd(d) / sqrt(n)``, sd with ddof 1: d = 0.1, 1.9, 0.1, 1.9 has mean 1 and 2 sd / sqrt(4) = 1.04
    (0.9 with ddof 0), not clearly above 0; d = 0.5, 1.5, 0.5, 1.5 (0.58) is. One pair gives no figure at all."""
    assert negative_concept_share(*_pairs_moving([0.1, 1.9, 0.1, 1.9])) is None
    assert negative_concept_share(*_pairs_moving([0.5, 1.5, 0.5, 1.5])) == pytest.approx(1.0)


def test_a_strength_at_exactly_the_budget_and_exactly_the_removal_share_qualifies():
    """Collateral "at most" the budget is within it, and removal "at least" 0.9 removes the concept (rule 1)."""
    strength, reason = recommend([0.0, 0.5, 1.0, 1.5], [0.0, 0.5, 0.9, 1.0], [0.0, 0.25, 0.5, 0.75], budget=0.5)
    assert strength == 1.0 and reason.startswith("smallest strength removing >= 90%")


def test_removal_that_never_rises_within_the_budget_takes_the_most_removed_smallest_strength():
    """Rule 3 when no allowed step raises removal (flat steps do not count as a rise): the strength removing most,
    the smallest of those that tie."""
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    strength, reason = recommend(grid, [0.0, 0.5, 0.5, 0.8, 0.8], [0.0, 0.9, 0.1, 0.9, 0.1], full_projection=None)
    assert strength == 1.0 and reason.startswith("most removed (80% at 1)")
    strength, reason = recommend(grid, [0.0, 0.8, 0.8, 0.8, 0.8], [0.0, 0.9, 0.1, 0.1, 0.1], full_projection=None)
    assert strength == 0.5 and reason.startswith("most removed (80% at 0.5)")


def test_steps_of_equal_gain_end_at_the_smaller_strength():
    strength, reason = recommend([0.0, 0.5, 1.0], [0.0, 0.4, 0.8], [0.0, 0.1, 0.2], full_projection=None)
    assert strength == 0.5 and "steepest rise" in reason


def test_no_removal_within_the_budget_recommends_nothing_and_no_removal_at_all_says_so():
    strength, reason = recommend([0.0, 0.5, 1.0], [0.0, 0.0, 0.95], [0.0, 0.1, 0.9])
    assert strength == 0.0 and reason.startswith("only strengths over the collateral budget 0.5 remove any")
    strength, reason = recommend([0.0, 0.5, 1.0], [0.0, 0.0, 0.0], [0.0, 0.1, 0.2])
    assert strength == 0.0 and reason.startswith("no strength removes any of the validation pairs' difference")


def test_a_grid_starting_above_full_projection_is_judged_at_its_smallest_strength_for_adding_the_concept():
    """_adds_the_concept looks up to full projection, or up to the smallest strength above 0 when that is larger:
    on 0, 1.5, 2 an edit moving the safe prompts 0.6 toward the concept at 1.5 adds it (not "over the budget")."""
    strength, reason = recommend([0.0, 1.5, 2.0], [0.0, 0.95, 1.0], [0.0, 0.1, 0.2], toward=[0.0, 0.6, 0.6])
    assert strength == 0.0 and "the edit adds the concept" in reason and "at strength 1.5" in reason


@pytest.mark.parametrize("target", ["safe_mean", "zero"])
def test_the_layer_figures_are_the_module_docstrings_formulas_computed_by_hand(target):
    """Survival ``1 - lambda a``, ``a = sum <(W U)(U^T dx), W dx> / sum |W dx|^2``; collateral ``lambda`` times the
    RMS ratio ``|(W U)(U^T (x_b - mu))| / |W (x_b - mean x)|`` (linear in the strength, a square root of energies,
    the benign spread centred, mu the safe mean or 0)."""
    model, basis, pairs, benign, _ = _setup()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2 * 5 + 8, DIM, generator=g, dtype=torch.float64) + 0.7  # not centred: mean and mu matter
    baseline = Baseline(pairs=5, benign=8, predictions=torch.zeros(18, 1, dtype=torch.float64), inputs={"layer": x},
                        forwards=1)
    survival, collateral = layer_proxies(baseline, model, basis, ["layer"], [0.0, 0.5, 2.0], target=target)
    w, u = model.layer.weight.detach().double(), basis.subspace("layer").double()
    mu = basis.target("layer").double() if target == "safe_mean" else torch.zeros(DIM, dtype=torch.float64)
    dx, xb = x[:5] - x[5:10], x[10:]
    dy = dx @ w.T
    a = float((((dx @ u) @ (w @ u).T) * dy).sum() / (dy * dy).sum())
    c = float(((((xb - mu) @ u) @ (w @ u).T).pow(2).sum() / ((xb - xb.mean(0)) @ w.T).pow(2).sum()).sqrt())
    assert survival == pytest.approx([1.0, 1.0 - 0.5 * a, 1.0 - 2.0 * a], rel=1e-9)
    assert collateral == pytest.approx([0.0, 0.5 * c, 2.0 * c], rel=1e-9)
    one = Baseline(pairs=1, benign=2, predictions=torch.zeros(5, 1, dtype=torch.float64), inputs={}, forwards=1,
                   negative=True)
    assert negative_concept_share(one, torch.tensor([[2.0], [0.0], [0.0], [0.0], [1.0]], dtype=torch.float64)) is None


def test_the_layer_figures_pool_their_sums_over_the_layers():
    """``a`` and the collateral ratio are sums over pairs *and layers* divided once, not a mean of per-layer figures
    nor divided by the number of layers."""
    model, _, _, _, _ = _setup()
    g = torch.Generator().manual_seed(4)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    basis = (RefusalFitter().update("layer", rand(6, DIM) + 1.0, rand(6, DIM))
             .update("head", rand(6, 10) + 1.0, rand(6, 10)).fit(method="mean"))
    inputs = {"layer": rand(2 * 5 + 8, DIM), "head": 3.0 * rand(2 * 5 + 8, 10)}
    baseline = Baseline(pairs=5, benign=8, predictions=torch.zeros(18, 1, dtype=torch.float64), inputs=inputs,
                        forwards=1)
    survival, collateral = layer_proxies(baseline, model, basis, ["layer", "head"], [0.0, 1.0], target="zero")
    removed = kept = moved = spread = 0.0
    for name in ("layer", "head"):
        w, u, x = getattr(model, name).weight.detach().double(), basis.subspace(name).double(), inputs[name]
        dx, xb = x[:5] - x[5:10], x[10:]
        dy = dx @ w.T
        removed, kept = removed + float((((dx @ u) @ (w @ u).T) * dy).sum()), kept + float((dy * dy).sum())
        moved += float((((xb @ u) @ (w @ u).T)).pow(2).sum())
        spread += float(((xb - xb.mean(0)) @ w.T).pow(2).sum())
    assert survival[1] == pytest.approx(1.0 - removed / kept, rel=1e-9)
    assert collateral[1] == pytest.approx((moved / spread) ** 0.5, rel=1e-9)
