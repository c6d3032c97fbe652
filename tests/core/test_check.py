"""Properties of the unlearning check (core.check) on a small model with a planted concept direction."""

import pytest
import torch

from core.check import EditHooks, overlapping_pairs, parse_strengths, recommend, run_check
from core.pairs import prompt_digest
from core.edit import project_edit
from core.pairs import PromptPair
from core.refusal import RefusalFitter

DIM = 24


class Toy(torch.nn.Module):
    """``layer`` reads the prompt vector; a nonlinear head makes the 'denoiser prediction'."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.layer = torch.nn.Linear(DIM, 16)
        self.head = torch.nn.Linear(16, 8)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return self.head(torch.tanh(self.layer(x)))


def world(seed=0, pairs=6, benign=10, leak=0.0, concept_seed=0):
    """A concept direction c (fixed by ``concept_seed``); prompts are random vectors (drawn with ``seed``) without
    it, and the unsafe side of a pair adds c (plus ``leak`` x a nuisance direction)."""
    c = torch.Generator().manual_seed(concept_seed)
    concept = torch.randn(DIM, generator=c)
    concept = concept / concept.norm()
    nuisance = torch.randn(DIM, generator=c)
    g = torch.Generator().manual_seed(1000 + seed)

    def side(count):
        base = torch.randn(count, DIM, generator=g)
        base = base - (base @ concept)[:, None] * concept  # prompts carry no concept of their own
        return base + 2.0 * concept + leak * nuisance, base

    unsafe, safe = side(pairs)
    prompts = torch.randn(benign, DIM, generator=g)
    prompts = prompts - (prompts @ concept)[:, None] * concept
    return concept, unsafe, safe, prompts


def fitted(model, concept_seed=0):
    concept, unsafe, safe, neutral = world(100, concept_seed=concept_seed)
    fitter = RefusalFitter()
    with torch.no_grad():
        fitter.update("layer", unsafe.double(), safe.double())
        fitter.update_neutral("layer", neutral.double())
    pairs = [PromptPair(f"u{i}", f"s{i}") for i in range(len(unsafe))]
    return concept, fitter.fit(rank=2, alpha=1.0, concept="planted", pairs=pairs)


def forward_for(model):
    def forward(rows, recorder):
        return model(torch.stack(list(rows)))

    return forward


def check(model, basis, seed=1, strengths=(0, 0.25, 0.5, 0.75, 1, 1.5, 2), target="zero", leak=0.0):
    _, unsafe, safe, benign = world(seed, leak=leak)
    with torch.no_grad():
        return run_check(model, forward_for(model), basis, list(zip(unsafe, safe)), list(benign), strengths,
                         target=target)


def test_strength_zero_leaves_everything():
    model = Toy()
    _, basis = fitted(model)
    result = check(model, basis)
    assert result.strengths[0] == 0.0
    assert result.survival_prediction[0] == 1.0 and result.survival_layers[0] == 1.0
    assert result.collateral_prediction[0] == 0.0 and result.collateral_layers[0] == 0.0
    assert result.efficacy[0] == 0.0


def test_planted_concept_survival_falls_with_strength():
    model = Toy()
    concept, basis = fitted(model)
    assert abs(float(basis.subspace("layer")[:, 0].double() @ concept.double())) > 0.99  # the fit found it
    result = check(model, basis)
    layers = result.survival_layers
    assert all(a > b for a, b in zip(layers[:5], layers[1:5]))
    # The validation difference is the concept: at strength 1 nothing of it reaches the layer's output.
    assert abs(result.at(1.0)["efficacy_layers"] - 1.0) < 0.02
    pred = result.survival_prediction
    assert all(a > b for a, b in zip(pred[:5], pred[1:5])) and pred[4] < 0.05
    # Benign prompts carry no concept: projecting it out (target zero) barely moves them.
    assert result.at(1.0)["collateral"] < 0.05 and result.at(1.0)["collateral_layers"] < 0.05


def test_the_table_gives_removal_to_one_decimal():
    """Two vectors of one concept read about a point apart, and the higher one removed more when generating
    (docs/benchmarks.md, "Can the check compare two vectors of one concept?"): whole percents would hide half of it."""
    model = Toy()
    _, basis = fitted(model)
    result = check(model, basis, strengths=(0, 0.5, 1))
    rows = result.table().splitlines()[1:4]  # under the header
    for row, strength, removed in zip(rows, result.strengths, result.efficacy):
        assert row.split()[:2] == [f"{strength:.2f}" + ("*" if strength == result.recommended else ""),
                                   f"{removed:.1%}"], row


def test_a_direction_unrelated_to_the_validation_difference_removes_nothing():
    model = Toy()
    _, basis = fitted(model)
    other = fitted(model, concept_seed=7)[1]  # another random concept: nearly orthogonal to this one
    result = check(model, other)
    assert max(abs(e) for e in result.efficacy_layers) < 0.5 * max(check(model, basis).efficacy_layers)


def test_layer_proxies_are_exact_for_a_layer_read_directly():
    """Layer-level survival from the recording equals the edited layer's measured output difference."""
    model = Toy()
    _, basis = fitted(model)
    _, unsafe, safe, _ = world(1, leak=0.7)
    result = check(model, basis, leak=0.7, target="safe_mean")
    edit = project_edit(model.layer.weight.detach(), basis.subspace("layer"), 0.75, target=basis.target("layer"))
    weight = edit.dense(model.layer.weight.detach()).double()
    d0 = (unsafe - safe).double() @ model.layer.weight.detach().double().T
    d1 = (unsafe - safe).double() @ weight.T
    expected = float((d1 * d0).sum() / (d0 * d0).sum())
    assert abs(result.survival_layers[result.strengths.index(0.75)] - expected) < 1e-6


@pytest.mark.parametrize("target", ["zero", "safe_mean"])
def test_edit_hooks_equal_the_weight_edit(target):
    model = Toy()
    _, basis = fitted(model)
    x = torch.randn(5, DIM)
    edit = project_edit(model.layer.weight.detach(), basis.subspace("layer"), 1.3,
                        target=basis.target("layer") if target == "safe_mean" else None)
    edited = Toy()
    with torch.no_grad():
        edited.layer.weight.copy_(edit.dense(model.layer.weight))
        edited.layer.bias.copy_(edit.dense_bias(model.layer.bias))
    with torch.no_grad(), EditHooks(model, basis, target=target) as hooks:
        hooks.strength = 1.3
        hooked = model(x)
        hooks.strength = 0.0
        plain = model(x)
    torch.testing.assert_close(hooked, edited(x).detach(), atol=1e-5, rtol=1e-5)
    assert not model.layer._forward_hooks, "hooks removed on exit"
    torch.testing.assert_close(plain, model(x).detach())
    with EditHooks(model, basis, target=target) as hooks:  # autograd on: the same figures, and differentiable
        hooks.strength = 1.3
        tracked = model(x)
        tracked.sum().backward()
    assert torch.equal(tracked.detach(), hooked) and model.layer.weight.grad is not None


def test_deterministic():
    model = Toy()
    _, basis = fitted(model)
    assert check(model, basis, leak=0.5).as_dict() == check(model, basis, leak=0.5).as_dict()


def test_recommend_rule():
    grid = [0, 0.5, 1, 1.5, 2]
    # Removal plateaus at 1: the smallest strength reaching 90 % of the best is chosen.
    assert recommend(grid, [0, 0.5, 0.95, 1.0, 1.0], [0, 0.01, 0.02, 0.03, 0.04], budget=0.5)[0] == 1.0
    # The collateral budget caps it.
    assert recommend(grid, [0, 0.5, 0.95, 1.0, 1.0], [0, 0.01, 0.6, 0.7, 0.8], budget=0.5)[0] == 0.5
    strength, reason = recommend(grid, [0, 0.5, 0.95, 1.0, 1.0], [0, 0.6, 0.7, 0.8, 0.9], budget=0.5)
    assert strength == 0.0 and "natural variation" in reason
    assert recommend(grid, [0, -0.1, -0.2, -0.1, 0], [0, 0.1, 0.1, 0.1, 0.1])[0] == 0.0
    # Removal never reaches 90 % (the pairs differ in more than the concept): the end of its steepest rise.
    nine = [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2]
    strength, reason = recommend(nine, [0, 0.04, 0.08, 0.15, 0.35, 0.44, 0.51, 0.65, 0.81], [0.01 * k for k in range(9)])
    assert strength == 1.0 and "steepest" in reason
    # A small wobble at low strengths does not decide it (gain 0.13 then 0.12, then the switch).
    assert recommend(nine, [0, 0.033, 0.063, 0.127, 0.347, 0.437, 0.496, 0.641, 0.793], [0.01 * k for k in range(9)])[0] == 1.0



def test_recommend_says_removal_past_the_budget_is_over_the_budget():
    """Strengths that remove >= 90 % but are over the budget: the reason says none *within the budget* does (the
    organism's nudity with the concept negative, where 'no strength removes 90%' sat beside 95-100 % rows)."""
    grid = (0.0, 0.5, 0.75, 1.0, 1.5, 2.0)
    guided = (0.0, 0.398, 0.680, 0.768, 0.807, 0.867)
    strength, reason = recommend(grid, (0.0, 0.59, 0.95, 0.99, 1.0, 1.0), guided, name="guided collateral")
    assert strength == 0.5 and "no strength within the guided collateral budget 0.5 removes 90%" in reason
    assert "no strength removes" not in reason
    # none removes 90 % at any strength: said as before
    strength, reason = recommend(grid, (0.0, 0.3, 0.5, 0.6, 0.7, 0.8), guided, name="guided collateral")
    assert "no strength removes 90%" in reason and "within" not in reason.split(";")[0]


def test_recommend_full_projection_floor():
    nine = [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2]
    saturating = [0, 0.75, 0.98, 0.99, 0.99, 0.99, 0.99, 1.0, 1.0]  # a switch: removed at 0.5 already
    collateral = [0.03 * k for k in range(9)]
    assert recommend(nine, saturating, collateral, full_projection=None)[0] == 0.5
    strength, reason = recommend(nine, saturating, collateral, full_projection=1.0)
    assert strength == 1.0 and "raised to 1" in reason
    # Reaching 90 % only above full projection: the floor changes nothing.
    late = [0, 0.15, 0.31, 0.53, 0.74, 0.79, 0.8, 0.84, 0.92]
    assert recommend(nine, late, collateral, full_projection=1.0)[0] == recommend(nine, late, collateral)[0] == 2.0
    # Full projection over the collateral budget: the smallest strength reaching 90 %, and the reason says so.
    strength, reason = recommend(nine, saturating, [0, 0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 1.0], budget=0.5,
                                 full_projection=1.0)
    assert strength == 0.5 and "over the collateral budget" in reason
    # The floor applies to the steepest-rise rule too (removal plateaus below 90 %, steepest at 0.75).
    plateau = [0, 0.14, 0.29, 0.53, 0.6, 0.62, 0.63, 0.63, 0.66]
    assert recommend(nine, plateau, collateral, full_projection=None)[0] == 0.75
    strength, reason = recommend(nine, plateau, collateral)
    assert strength == 1.0 and "steepest" in reason and "raised to 1" in reason
    # A grid without 1: the next strength above it; with nothing at or above 1, the reason says the grid stops short.
    assert recommend([0, 0.5, 1.5], [0, 0.95, 0.99], [0, 0.1, 0.2], full_projection=1.0)[0] == 1.5
    strength, reason = recommend([0, 0.25, 0.5], [0, 0.5, 0.95], [0, 0.1, 0.2], full_projection=1.0)
    assert strength == 0.5 and "the grid does not reach" in reason and "over the" not in reason


def test_recommend_never_picks_a_strength_that_removes_nothing():
    """Where every strength within the budget removes nothing (or adds to the concept) and only one over it removes
    some, the recommendation is 0, not the over-budget strength's floor of 1; the reason names the collateral used."""
    strength, reason = recommend([0, 0.5, 1, 2], [0, -0.03, -0.03, 0.5], [0, 0.1, 0.2, 0.9], budget=0.5,
                                 name="guided collateral")
    assert strength == 0.0 and "only strengths over the guided collateral budget" in reason
    assert "guided collateral 0.100" in recommend([0, 0.5, 1], [0, 0.95, 1.0], [0, 0.1, 0.2], name="guided collateral",
                                                  full_projection=None)[1]


def test_parse_strengths_and_its_errors():
    assert parse_strengths("1, 0.5, 0.5") == (0.0, 0.5, 1.0)
    assert parse_strengths([2, 0]) == (0.0, 2.0)
    with pytest.raises(ValueError, match="empty"):
        parse_strengths(" , ")
    with pytest.raises(ValueError, match="negative strength"):
        parse_strengths("0, -1")
    with pytest.raises(ValueError, match="not a number"):
        parse_strengths("0, x")
    with pytest.raises(ValueError, match="only 0"):
        parse_strengths("0")
    with pytest.raises(ValueError, match="must be a finite number"):
        parse_strengths("nan")


@pytest.mark.parametrize("grid", ["nan", "1, inf", "0; -inf"])
def test_a_strength_that_is_not_finite_is_named_so_not_as_a_negative_one(grid):
    """'nan' and 'inf' parse as floats and were answered "a negative strength would amplify the concept"."""
    with pytest.raises(ValueError, match="must be a finite number") as error:
        parse_strengths(grid)
    assert "negative" not in str(error.value)


def test_inputs_that_cannot_be_checked():
    model = Toy()
    _, basis = fitted(model)
    _, unsafe, safe, benign = world(1)
    forward = forward_for(model)
    with pytest.raises(ValueError, match="no validation pairs"):
        run_check(model, forward, basis, [], list(benign))
    with pytest.raises(ValueError, match="at least 2 benign prompts"):
        run_check(model, forward, basis, list(zip(unsafe, safe)), list(benign[:1]))
    with pytest.raises(ValueError, match="one row per prompt"):
        run_check(model, lambda rows, rec: model(torch.stack(list(rows)))[:1], basis, list(zip(unsafe, safe)),
                  list(benign))
    # A share of a zero difference is undefined: it read 0 % removed, or collateral 0 at every strength.
    with torch.no_grad(), pytest.raises(ValueError, match="same for both sides of every validation pair"):
        run_check(model, forward, basis, list(zip(safe, safe)), list(benign))
    with torch.no_grad(), pytest.raises(ValueError, match="3 benign prompts give the same prediction"):
        run_check(model, forward, basis, list(zip(unsafe, safe)), [benign[0]] * 3)
    with torch.no_grad(), pytest.raises(ValueError, match="NaN or Inf .*lower the largest strength"):
        run_check(model, lambda rows, rec: model(torch.stack(list(rows))) * float("inf"), basis,
                  list(zip(unsafe, safe)), list(benign))


def test_overlap_with_estimation_pairs():
    estimation = [PromptPair("a Rolex on a table", "a watch on a table"), ("a Rolex at sea", "a watch at sea")]
    validation = [("A  rolex on a TABLE", "a watch on a table"), ("a Rolex in a shop", "a watch in a shop"),
                  PromptPair("a Rolex at sea", "a clock at sea")]
    assert overlapping_pairs(estimation, validation) == [("A  rolex on a TABLE", "a watch on a table"),
                                                         ("a Rolex at sea", "a clock at sea")]
    assert overlapping_pairs(estimation, validation[1:2]) == []
    # a vector saved with its pairs as digests is compared as well
    digested = [(prompt_digest(u), prompt_digest(s)) for u, s in [("a Rolex on a table", "a watch on a table")]]
    assert overlapping_pairs(digested, validation) == [("A  rolex on a TABLE", "a watch on a table")]


def test_replay_cache_is_exact_and_replays():
    from core.check import ReplayCache

    model = Toy()
    _, basis = fitted(model)
    plain = check(model, basis, leak=0.5, target="safe_mean")
    _, unsafe, safe, benign = world(1, leak=0.5)
    with torch.no_grad():
        replayed = run_check(model, forward_for(model), basis, list(zip(unsafe, safe)), list(benign),
                             (0, 0.25, 0.5, 0.75, 1, 1.5, 2), target="safe_mean")
    assert replayed.as_dict() == plain.as_dict()
    x = torch.randn(3, DIM)
    with torch.no_grad(), ReplayCache(model, ["layer"]) as cache:
        first = model(x)
        second = model(x.clone())  # equal values, another tensor: replayed
        changed = x.clone()
        changed[0, 0] += 1.0
        third = model(changed)  # different input: computed
    assert cache.hits == 1 and torch.equal(first, second) and not torch.equal(first, third)
    assert "forward" not in vars(model.layer), "the module's own forward is back"


def test_replay_cache_knows_the_same_tensor_without_comparing_it(monkeypatch):
    """The same input tensor again is replayed by identity (no pass over it); one written to in place since is not."""
    from core.check import ReplayCache

    model = Toy()
    x = torch.randn(3, DIM)
    compared = []
    equal = torch.equal
    monkeypatch.setattr(torch, "equal", lambda a, b: compared.append(1) or equal(a, b))
    with torch.no_grad(), ReplayCache(model, ["layer"]) as cache:
        first = model(x)
        again = model(x)  # the very tensor: replayed without a comparison
        assert cache.hits == 1 and not compared and torch.equal(first, again)
        x[0, 0] += 1.0  # written in place: its version counter moved, so identity no longer proves equal values
        changed = model(x)
    assert cache.hits == 1 and compared, "compared by value, found different, computed"
    assert not torch.equal(first, changed)
    torch.testing.assert_close(changed, Toy()(x), rtol=0, atol=0)
    with torch.inference_mode(), ReplayCache(model, ["layer"]) as cache:  # inference tensors have no version
        y = torch.randn(3, DIM)
        model(y)
        model(y)
    assert cache.hits == 1


def test_distinction_proxies_ignore_a_shared_shift_and_sign_sharpening():
    """A change every benign prompt shares moves nothing that tells them apart; scaling their differences by
    (1 + e) is a distinction loss of -e; strength 0 is 0."""
    from core.check import Baseline, distinction_proxies

    g = torch.Generator().manual_seed(3)
    pairs, benign = torch.randn(4, 10, generator=g, dtype=torch.float64), torch.randn(6, 10, generator=g,
                                                                                       dtype=torch.float64)
    base = Baseline(pairs=2, benign=6, predictions=torch.cat([pairs, benign]), inputs={}, forwards=1)
    assert distinction_proxies(base, base.predictions) == (0.0, 0.0)
    shifted = torch.cat([pairs, benign + torch.randn(10, generator=g, dtype=torch.float64)])
    moved, lost = distinction_proxies(base, shifted)
    assert moved == pytest.approx(0.0, abs=1e-12) and lost == pytest.approx(0.0, abs=1e-12)
    centre = benign.mean(0)
    sharper = torch.cat([pairs, centre + 1.25 * (benign - centre)])
    moved, lost = distinction_proxies(base, sharper)
    assert moved == pytest.approx(0.25) and lost == pytest.approx(-0.25)
    collapsed = torch.cat([pairs, centre.expand(6, -1)])
    assert distinction_proxies(base, collapsed) == pytest.approx((1.0, 1.0))


def test_check_reports_distinction_proxies_per_strength():
    model = Toy()
    _, basis = fitted(model)
    with torch.no_grad():
        result = check(model, basis, strengths="0, 1, 2", target="safe_mean")
    assert len(result.relative_movement) == len(result.distinction_loss) == 3
    assert result.relative_movement[0] == result.distinction_loss[0] == 0.0
    assert 0 < result.relative_movement[1] <= result.collateral_prediction[1] + 1e-12
    assert set(result.at(1.0)) >= {"relative_movement", "distinction_loss"}


def test_guided_collateral_weighs_shared_changes_by_one_over_guidance():
    """G_b = u + g (c_b - u): at g = 1 it is collateral; a change every row shares (negative included) counts 1 / g
    of collateral; a change the negative prompt does not see counts in full; strength 0 is 0."""
    from core.check import Baseline, guided_collateral, prediction_proxies

    g = torch.Generator().manual_seed(4)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    pairs, benign, negative = rand(4, 10), rand(6, 10), rand(1, 10)
    base = Baseline(pairs=2, benign=6, predictions=torch.cat([pairs, benign, negative]), inputs={}, forwards=1,
                    negative=True)
    assert guided_collateral(base, base.predictions, 4.0) == 0.0
    moved = torch.cat([pairs, benign + 0.1 * rand(6, 10), negative + 0.1 * rand(1, 10)])
    assert guided_collateral(base, moved, 1.0) == pytest.approx(prediction_proxies(base, moved)[1])
    shift = rand(10)
    shared = torch.cat([pairs, benign + shift, negative + shift])
    assert guided_collateral(base, shared, 4.0) == pytest.approx(prediction_proxies(base, shared)[1] / 4.0)
    unseen = torch.cat([pairs, benign + shift, negative])
    assert guided_collateral(base, unseen, 4.0) == pytest.approx(prediction_proxies(base, unseen)[1])
    with pytest.raises(ValueError, match="negative"):
        guided_collateral(Baseline(pairs=2, benign=6, predictions=torch.cat([pairs, benign]), inputs={}, forwards=1),
                          shared[:-1], 4.0)
    with pytest.raises(ValueError, match="guidance"):
        guided_collateral(base, shared, 0.0)


def test_a_negative_row_changes_no_other_figure():
    """The negative prompt is one more row: efficacy and collateral are those of the check without it, guided
    collateral is reported per strength and is what the recommendation's budget reads; guidance without a
    negative prompt is refused."""
    model = Toy()
    _, basis = fitted(model)
    _, unsafe, safe, benign = world(1)
    pairs, forward = list(zip(unsafe, safe)), forward_for(model)
    with torch.no_grad():
        plain = run_check(model, forward, basis, pairs, list(benign), "0, 1, 2")
        guided = run_check(model, forward, basis, pairs, list(benign), "0, 1, 2", negative=torch.zeros(DIM),
                           guidance=4.0)
        with pytest.raises(ValueError, match="negative"):
            run_check(model, forward, basis, pairs, list(benign), "0, 1", guidance=4.0)
    for name in ("survival_prediction", "collateral_prediction", "survival_layers", "collateral_layers"):
        assert getattr(guided, name) == pytest.approx(getattr(plain, name), rel=1e-6, abs=1e-9)
    assert guided.collateral_guided[0] == 0.0 and guided.collateral_guided[2] > guided.collateral_guided[1] > 0
    assert plain.collateral_guided == () and "collateral_guided" in guided.at(1.0)
    assert plain.collateral == plain.collateral_prediction and guided.collateral == guided.collateral_guided
    assert (guided.recommended, guided.reason) == recommend(guided.strengths, guided.efficacy, guided.collateral_guided,
                                                            name="guided collateral")
    assert guided.guidance == 4.0 and "guided" in guided.table() and "guided" not in plain.table()


def test_negative_concept_share_reads_the_negative_move_between_safe_and_unsafe_sides():
    """(m_neg - mean m_s) / (mean m_u - mean m_s): 0 when the negative row moves like the pairs' safe sides, 1 like
    their unsafe sides, whatever the benign prompts do; None unless the unsafe sides move clearly more than their own
    safe sides (paired: mean(d) > 2 sd(d) / sqrt(n)). Scaled from the benign prompts instead, a negative sharing the
    pairs' wording but not the concept read as carrying it (tiny Wan: 'a shiny box' 1.59)."""
    from core.check import Baseline, negative_concept_share

    g = torch.Generator().manual_seed(5)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    p0 = rand(2 * 3 + 4 + 1, 10)
    base = Baseline(pairs=3, benign=4, predictions=p0, inputs={}, forwards=1, negative=True)

    def moved(unsafe, safe, benign: float, negative: float) -> torch.Tensor:
        step = torch.zeros_like(p0)  # each row moves by its figure
        step[:3, 0], step[3:6, 1] = torch.tensor(unsafe, dtype=p0.dtype), torch.tensor(safe, dtype=p0.dtype)
        step[6:10, 2], step[-1, 3] = benign, negative
        return p0 + step

    unsafe, safe = [3.0, 3.2, 2.8], [2.0, 2.1, 1.9]  # mean 3 and 2; d = 1, 1.1, 0.9: clearly above 0
    assert negative_concept_share(base, moved(unsafe, safe, 1.0, 2.0)) == pytest.approx(0.0)
    assert negative_concept_share(base, moved(unsafe, safe, 1.0, 3.0)) == pytest.approx(1.0)
    assert negative_concept_share(base, moved(unsafe, safe, 1.0, 2.5)) == pytest.approx(0.5)
    # the benign prompts' move sets no part of the scale (from them, a safe-like negative read 0.5)
    assert negative_concept_share(base, moved(unsafe, safe, 0.0, 2.0)) == pytest.approx(0.0)
    # every pair's unsafe side moves the same amount more than its safe side (sd 0): detectable
    assert negative_concept_share(base, moved([3.0] * 3, [2.0] * 3, 1.0, 3.0)) == pytest.approx(1.0)
    # safe sides move as much as unsafe ones (the wording, not the concept): no figure, however the benign move
    assert negative_concept_share(base, moved([3.0] * 3, [3.0] * 3, 1.0, 3.0)) is None
    # unsafe sides more on average, but not clearly (d = 1.5, -1, 0.3: mean 0.27 < 2 sd / sqrt(3) = 1.45)
    assert negative_concept_share(base, moved([3.5, 2.0, 2.3], [2.0, 3.0, 2.0], 1.0, 3.0)) is None
    # clearly above 0 but not above the spread of the benign prompts' moves (sd 1.29 > mean d 1): wording alone moves
    # prompts that far apart (the random tiny Wan: d 0.002, spread 0.013, 'a shiny box' 17.7, 'a Rolex timepiece' -42)
    spread = moved(unsafe, safe, 1.0, 3.0)
    spread[6:10, 2] = p0[6:10, 2] + torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=p0.dtype)
    assert negative_concept_share(base, spread) is None
    one = Baseline(pairs=1, benign=4, predictions=p0[4:], inputs={}, forwards=1, negative=True)
    assert negative_concept_share(one, p0[4:] + 1.0) is None  # one pair: nothing to test d on
    with pytest.raises(ValueError, match="negative"):
        negative_concept_share(Baseline(pairs=3, benign=4, predictions=p0[:-1], inputs={}, forwards=1), p0[:-1])


def test_a_negative_carrying_the_concept_is_not_counted_as_collateral():
    """A negative prompt that moves under the edit like the unsafe prompts (one naming the concept) would put its own
    move, (1 - g) du, on every benign prompt's guided prediction: the check reads the conditional collateral then and
    warns. One that moves like a benign prompt keeps guided collateral. (The organism's nudity with 'nudity, naked,
    nude': guided 0.77 at strength 1, over the budget, recommended 0.5, which left the concept in 56 % of clips.)"""
    from core.check import NEGATIVE_CARRIES_CONCEPT

    model = Toy()
    _, basis = fitted(model)
    _, unsafe, safe, benign = world(1)
    _, unsafe_other, _, benign_other = world(7)
    pairs, forward = list(zip(unsafe, safe)), forward_for(model)
    with torch.no_grad():
        concept = run_check(model, forward, basis, pairs, list(benign), "0, 0.5, 1, 2", negative=unsafe_other[0],
                            guidance=4.0, budget=0.3)
        plain = run_check(model, forward, basis, pairs, list(benign), "0, 0.5, 1, 2", negative=benign_other[0],
                          guidance=4.0, budget=0.3)
    # the concept negative: its move is the unsafe rows', and guided collateral is over the budget at strength 1
    assert concept.negative_concept_share >= NEGATIVE_CARRIES_CONCEPT and concept.negative_carries_concept
    assert concept.collateral_guided[2] > 0.3 > concept.collateral_prediction[2]
    assert concept.collateral == concept.collateral_prediction and concept.collateral_read == "conditional"
    assert (concept.recommended, concept.reason) == recommend(concept.strengths, concept.efficacy,
                                                              concept.collateral_prediction, budget=0.3,
                                                              name="conditional collateral")
    assert concept.recommended == 1.0  # guided collateral would have ruled 1 out
    assert recommend(concept.strengths, concept.efficacy, concept.collateral_guided, budget=0.3)[0] < 1.0
    table = concept.table()
    assert "negative prompt names the concept" in table and "judge the edit on its own" in table
    assert concept.negative_warning() and "carries the concept" in table
    assert concept.as_dict()["negative_concept_share"] == concept.negative_concept_share
    assert concept.as_dict()["collateral_read"] == "conditional"
    # a negative that moves like a benign prompt: guided collateral rules, as before
    assert plain.negative_concept_share < NEGATIVE_CARRIES_CONCEPT and not plain.negative_carries_concept
    assert plain.collateral == plain.collateral_guided and plain.collateral_read == "guided"
    assert (plain.recommended, plain.reason) == recommend(plain.strengths, plain.efficacy, plain.collateral_guided,
                                                          budget=0.3, name="guided collateral")
    assert not plain.negative_warning() and "names the concept" not in plain.table()


def test_negative_concept_share_is_read_at_full_projection_or_below():
    """At strength 1, or the largest grid strength below it; with none above 0 up to 1, at the smallest strength above
    0 (a grid 0, 1.5, 2 skipped the figure, and guided collateral then counted a concept negative's move)."""
    model = Toy()
    _, basis = fitted(model)
    _, unsafe, safe, benign = world(1)
    _, unsafe_other, _, _ = world(7)
    pairs, forward = list(zip(unsafe, safe)), forward_for(model)
    with torch.no_grad():
        below = run_check(model, forward, basis, pairs, list(benign), "0, 0.5, 0.75, 2", negative=unsafe_other[0],
                          guidance=4.0)
        above = run_check(model, forward, basis, pairs, list(benign), "0, 1.5, 2", negative=unsafe_other[0],
                          guidance=4.0)
    assert below.negative_concept_share is not None and below.negative_carries_concept
    assert above.negative_concept_share is not None and above.negative_carries_concept and above.negative_share_read
    assert above.collateral == above.collateral_prediction
    # the table names the strength it was read at (it said "at full projection" for 1.5)
    assert (below.negative_share_strength, above.negative_share_strength) == (0.75, 1.5)
    assert f"{above.negative_concept_share:.2f} at strength 1.5 (" in above.table()


def test_the_table_says_when_the_pairs_cannot_tell_whether_the_negative_carries_the_concept():
    """Validation pairs whose two sides both carry the concept move alike under the edit: no share, guided collateral
    kept, and the table says the check cannot tell (rather than saying nothing, as with no negative)."""
    model = Toy()
    _, basis = fitted(model)
    _, unsafe, _, benign = world(1)
    _, unsafe_other, _, _ = world(7)
    pairs, forward = [(unsafe[i], unsafe[(i + 1) % len(unsafe)]) for i in range(len(unsafe))], forward_for(model)
    with torch.no_grad():
        both = run_check(model, forward, basis, pairs, list(benign), "0, 0.5, 1, 2", negative=unsafe_other[0],
                         guidance=4.0)
        none = run_check(model, forward, basis, pairs, list(benign), "0, 0.5, 1, 2")
    assert both.negative_concept_share is None and both.negative_share_read and not both.negative_carries_concept
    assert both.collateral == both.collateral_guided and both.collateral_read == "guided"
    assert "cannot tell whether it carries the concept" in both.table() and "guided collateral kept" in both.table()
    assert both.as_dict()["negative_share_read"] and not none.negative_share_read
    assert "cannot tell whether it carries" not in none.table()


def test_keep_loss_measures_what_the_edit_takes_from_pairs_it_should_keep():
    """Keep pairs: 0 at strength 0; pairs that differ along the concept lose what the validation pairs lose; pairs
    that differ elsewhere keep nearly all of their difference; a sharper difference is a negative loss; with the
    negative prompt too, keep rows change no other figure (they come before the negative row)."""
    from core.check import Baseline, keep_loss

    model = Toy()
    concept, basis = fitted(model)
    _, unsafe, safe, benign = world(1)
    pairs, forward = list(zip(unsafe, safe)), forward_for(model)
    along = [(safe[i] + 2.0 * concept, safe[i]) for i in range(3)]  # the concept itself: the edit must take it
    elsewhere = [(benign[i], benign[i + 3]) for i in range(3)]  # no concept in either side
    with torch.no_grad():
        plain = run_check(model, forward, basis, pairs, list(benign), "0, 1, 2", negative=torch.zeros(DIM),
                          guidance=4.0, target="zero")
        taken = run_check(model, forward, basis, pairs, list(benign), "0, 1, 2", negative=torch.zeros(DIM),
                          guidance=4.0, keep=along, target="zero")
        kept = run_check(model, forward, basis, pairs, list(benign), "0, 1, 2", keep=elsewhere, target="zero")
    for name in ("survival_prediction", "collateral_prediction", "collateral_guided", "survival_layers"):
        # float32 rows batched with three more: equal to rounding
        assert getattr(taken, name) == pytest.approx(getattr(plain, name), rel=1e-5, abs=1e-6)
    assert plain.keep_loss == () and "keep_loss" not in plain.at(1.0)
    assert taken.keep_loss[0] == 0.0 and taken.at(1.0)["keep_loss"] > 0.9
    assert abs(kept.keep_loss[1]) < 0.05 and "keep_loss" in kept.as_dict()
    assert (taken.recommended, taken.reason) == (plain.recommended, plain.reason)

    g = torch.Generator().manual_seed(5)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    pairs_rows, benign_rows, first, second = rand(4, 10), rand(6, 10), rand(3, 10), rand(3, 10)
    base = Baseline(pairs=2, benign=6, predictions=torch.cat([pairs_rows, benign_rows, first, second]), inputs={},
                    forwards=1, keep=3)
    sharper = torch.cat([pairs_rows, benign_rows, second + 1.5 * (first - second), second])
    assert keep_loss(base, sharper) == pytest.approx(-0.5)
    assert keep_loss(base, base.predictions) == pytest.approx(0.0)


def test_keep_pairs_that_cannot_be_measured_are_refused():
    from core.check import Baseline, keep_loss, measure_baseline, check_strengths

    model = Toy()
    _, basis = fitted(model)
    _, unsafe, safe, benign = world(1)
    pairs, forward = list(zip(unsafe, safe)), forward_for(model)
    with torch.no_grad():
        baseline = measure_baseline(model, forward, pairs, list(benign), ["layer"], keep=[(benign[0], benign[1])])
        with pytest.raises(ValueError, match="keep pairs"):
            check_strengths(model, forward, basis, baseline, "0, 1", rows=(pairs, list(benign)))
        same = measure_baseline(model, forward, pairs, list(benign), ["layer"], keep=[(benign[0], benign[0])])
    with pytest.raises(ValueError, match="same prediction"):
        keep_loss(same, same.predictions)
    with pytest.raises(ValueError, match="keep pairs"):
        keep_loss(Baseline(pairs=1, benign=2, predictions=torch.zeros(4, 3), inputs={}, forwards=1),
                  torch.zeros(4, 3))


def test_edit_hooks_recompute_after_an_in_place_write_and_keep_only_coordinates():
    model = Toy()
    _, basis = fitted(model)
    weight = model.layer.weight.detach()
    u = basis.subspace("layer").double()  # [in, c]
    mu = basis.target("layer").double()
    parts = (u.float(), (weight.double() @ u).T.float(), (u.T @ mu).float())  # as the hooks cast them

    def expected(x, strength):  # output - strength (W U)(U^T x - U^T mu), the hooks' two roundings
        return model.layer(x) - ((x @ parts[0] - parts[2]) @ parts[1]) * strength

    x = torch.randn(5, DIM)
    with torch.no_grad(), EditHooks(model, basis) as hooks:
        hooks.strength = 1.3
        first = model.layer(x)
        again = model.layer(x)  # the same tensor: its coordinates come from the cache
        cached = hooks._last["layer"][2]
        assert cached.shape == (5, u.shape[1])  # [..., c], not the layer's output [..., out]
        x.mul_(10)  # written in place: the cached coordinates are stale
        after = model.layer(x)
        hooks.strength = 0.5
        other = model.layer(x)
    assert torch.equal(first, again)
    with torch.no_grad():
        assert torch.equal(after, expected(x, 1.3)) and torch.equal(other, expected(x, 0.5))
        edit = project_edit(weight, basis.subspace("layer"), 1.3, target=basis.target("layer"))
        torch.testing.assert_close(after, x @ edit.dense(weight).T + edit.dense_bias(model.layer.bias),
                                   atol=1e-4, rtol=1e-5)
    with torch.inference_mode(), EditHooks(model, basis) as hooks:  # no version counter: identity alone
        hooks.strength = 1.3
        context = torch.randn(5, DIM)
        assert torch.equal(model.layer(context), model.layer(context))
        reference = hooks._last["layer"][0]
        del context
        assert reference() is None  # the cache does not keep its input alive


def test_recommend_refuses_a_grid_that_is_not_parsed():
    for grid in ([0.5, 1.0], [0, 1.0, 0.5], [0, 0.5, 0.5]):
        with pytest.raises(ValueError, match=r"parse_strengths\(grid\)"):
            recommend(grid, [0.0] * len(grid), [0.0] * len(grid))
    with pytest.raises(ValueError, match="2 efficacies"):
        recommend([0, 0.5, 1.0], [0.0, 0.5], [0.0, 0.1, 0.2])


def test_a_forward_that_skips_an_edited_layer_is_refused_not_read_as_nothing_removed():
    """A step cache on the model answers a call from an earlier one without running the layers: the edit never acts,
    and the check read 0 % removed at every strength. It now names the layer and the likely cause."""
    from core.check import check_strengths, measure_baseline

    model = Toy()
    _, basis = fitted(model)
    _, unsafe, safe, benign = world(1)
    pairs, forward = list(zip(unsafe, safe)), forward_for(model)
    remembered = {}

    def cached_forward(rows, recorder):
        key = len(rows)
        if key not in remembered:
            remembered[key] = forward(rows, recorder)
        return remembered[key]

    with torch.no_grad():
        baseline = measure_baseline(model, cached_forward, pairs, list(benign), ["layer"])
        with pytest.raises(ValueError, match="at strength 0.5 the model's forward never ran 'layer'.*step cache"):
            check_strengths(model, cached_forward, basis, baseline, "0, 0.5, 1", rows=(pairs, list(benign)))


def swapped_fit():
    """The planted concept fitted from pairs written ``safe | unsafe``: the "safe" mean is the concept's."""
    _, unsafe, safe, neutral = world(100)
    fitter = RefusalFitter()
    fitter.update("layer", safe.double(), unsafe.double())
    fitter.update_neutral("layer", neutral.double())
    return fitter.fit(rank=2, alpha=1.0, concept="planted", pairs=[PromptPair(f"s{i}", f"u{i}") for i in range(6)])


def test_a_vector_from_swapped_pairs_is_caught_moving_the_safe_prompts_to_the_concept():
    """Removal cannot tell the two apart (the pairs' difference shrinks either way); the safe sides' movement can."""
    model = Toy()
    _, basis = fitted(model)
    right = check(model, basis, target="safe_mean")
    assert max(abs(t) for t in right.toward_concept) < 0.05 and right.recommended == 1.0
    assert "WARNING" not in right.table()
    wrong = check(model, swapped_fit(), target="safe_mean")
    assert wrong.at(1.0)["efficacy"] > 0.9  # removal alone reads a success
    assert wrong.at(0.5)["toward_concept"] > 0.25 and wrong.at(1.0)["toward_concept"] > 0.5
    assert wrong.recommended == 0.0 and "swapped" in wrong.reason
    assert "WARNING: at strength 0.25 " in wrong.table() and "unsafe | safe" in wrong.table()
    assert wrong.as_dict()["toward_concept"] == list(wrong.toward_concept)
    # Target zero projects the component out on either vector: the safe sides (which carry none) stay.
    assert max(abs(t) for t in check(model, swapped_fit(), target="zero").toward_concept) < 0.05


def test_recommend_refuses_an_edit_that_moves_the_safe_prompts_toward_the_concept():
    """Judged per unit of strength: a swapped vector moves them in proportion to it (the organism's red: 0.24 at 0.5,
    0.45 at 1), so ruling out single strengths recommended it at 0.5."""
    grid = parse_strengths("0,0.25,0.5,1")
    efficacy, collateral = [0, 0.3, 0.9, 0.99], [0, 0.1, 0.2, 0.3]
    assert recommend(grid, efficacy, collateral, toward=[0, 0.05, 0.1, 0.2])[0] == 1.0
    assert recommend(grid, efficacy, collateral, toward=[0, -0.5, -1, -2])[0] == 1.0  # moving away is no concern
    strength, reason = recommend(grid, efficacy, collateral, toward=[0, 0.07, 0.14, 0.28])
    assert strength == 0.0 and "swapped" in reason and "7% of the way" in reason and "strength 0.25" in reason
    with pytest.raises(ValueError, match="toward figure"):
        recommend(grid, efficacy, collateral, toward=[0, 0.1])
    # Past full projection the edit pushes beyond the safe side by design (the organism's correct nudity vector with
    # target zero: 0.08 at 1, 0.38 at 1.25): not judged there.
    wide = parse_strengths("0,0.5,1,1.5")
    assert recommend(wide, [0, 0.5, 0.95, 1.2], [0, 0.1, 0.2, 0.3], toward=[0, 0.01, 0.08, 0.8])[0] == 1.0
    # ... but such a strength is not recommended either (it reached 90 % first at 1.25, where safe->concept was 0.38)
    grid = parse_strengths("0,0.5,1,1.25,1.5")
    strength, reason = recommend(grid, [0, 0.5, 0.85, 0.95, 1.0], [0, 0.1, 0.2, 0.25, 0.3],
                                 toward=[0, 0.01, 0.08, 0.38, 0.8])
    assert strength == 1.0 and "1.25" not in reason.split(";")[0], reason
    # A grid with no strength up to 1 is judged at its smallest
    assert recommend(parse_strengths("0,1.25,1.5,2"), [0, 0.95, 1.0, 1.0], [0, 0.2, 0.3, 0.4],
                     toward=[0, 0.6, 0.8, 1.0])[0] == 0.0
