import pytest
import torch

from core.pairs import PromptPair
from core.refusal import RefusalBasis, RefusalFitter
from synthetic import planted


def cosine(direction, truth):
    return float(direction.double() @ truth)


@pytest.mark.parametrize("seed", range(3))
def test_planted_direction_is_recovered_despite_shared_nuisance(seed):
    concept, _, unsafe, safe, neutral = planted(noise=0.01, seed=seed)
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    assert cosine(fitter.fit(method="mean").directions["L"], concept) > 0.995
    for rank in (1, 4):
        assert cosine(fitter.fit(rank=rank, method="cpca").directions["L"], concept) > 0.97
    # Without neutral prompts the safe side stands in for them.
    alone = RefusalFitter().update("L", unsafe, safe).fit(rank=4)
    assert cosine(alone.directions["L"], concept) > 0.97


@pytest.mark.parametrize("seed", range(3))
def test_cpca_beats_mean_when_a_confound_rides_along(seed):
    concept, confound, unsafe, safe, neutral = planted(confound=0.8, seed=seed)
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    mean = cosine(fitter.fit(method="mean").directions["L"], concept)
    for rank in (1, 2, 4):
        direction = fitter.fit(rank=rank, method="cpca").directions["L"]
        assert cosine(direction, concept) > 0.92 > mean + 0.1
        assert abs(cosine(direction, confound)) < 0.25


def test_streaming_updates_equal_one_batch_and_fit_is_deterministic():
    _, _, unsafe, safe, neutral = planted(seed=4)
    whole = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral).fit(rank=3)
    parts = RefusalFitter()
    for rows in (slice(0, 3), slice(3, 7), slice(7, None)):
        parts.update("L", unsafe[rows], safe[rows])
    parts.update_neutral("L", neutral[:20]).update_neutral("L", neutral[20:])
    again = parts.fit(rank=3)
    for field in ("vectors", "bases", "directions", "safe_means"):
        torch.testing.assert_close(getattr(whole, field)["L"], getattr(again, field)["L"], rtol=1e-6, atol=1e-6)
    twice = parts.fit(rank=3)
    assert torch.equal(twice.directions["L"], again.directions["L"])


def test_basis_shapes_scores_and_metadata():
    _, _, unsafe, safe, neutral = planted(dim=64, seed=1)
    fitter = RefusalFitter().update("a", unsafe, safe).update("b", unsafe[:, :32], safe[:, :32])
    basis = fitter.fit(rank=3, concept="Rolex", pairs=[PromptPair("a Rolex", "a watch"), ("x y", "x")],
                       model_family="wan21", model_fingerprint="abc")
    assert basis.layers == ["a", "b"]
    assert basis.vectors["a"].shape == (64,) and basis.bases["a"].shape == (64, 3)
    assert basis.directions["b"].shape == (32,) and basis.subspace("b").shape == (32, 1)
    assert basis.dims == {"a": 64, "b": 32} and basis.concepts == 1
    torch.testing.assert_close(basis.bases["a"].T @ basis.bases["a"], torch.eye(3), atol=1e-5, rtol=0)
    assert abs(float(basis.directions["a"].norm()) - 1) < 1e-6
    assert basis.scores["a"].separation > 1 and basis.scores["a"].norm > 0
    assert basis.pairs == (("a Rolex", "a watch"), ("x y", "x"))
    assert basis.vectors["a"].dtype == torch.float32
    with pytest.raises(TypeError):
        basis.vectors["a"] = torch.zeros(64)  # frozen
    assert basis.select(["b"]).layers == ["b"]


def test_never_forms_a_dense_matrix_for_pooled_samples(monkeypatch):
    seen = []
    original = torch.linalg.eigh

    def spy(matrix, *args, **kwargs):
        seen.append(matrix.shape[-1])
        return original(matrix, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", spy)
    g = torch.Generator().manual_seed(0)
    safe = torch.randn(10, 20_000, generator=g, dtype=torch.float64)
    unsafe = safe + 0.5
    RefusalFitter().update("L", unsafe, safe).update_neutral("L", safe[:6]).fit(rank=4)
    assert seen and max(seen) <= 16


def test_combine_stacks_and_orthonormalises():
    c1, _, u1, s1, _ = planted(dim=48, seed=1)
    c2, _, u2, s2, _ = planted(dim=48, seed=2)
    first = RefusalFitter().update("L", u1, s1).fit(concept="one", model_family="wan21")
    second = RefusalFitter().update("L", u2, s2).update("M", u2[:, :8], s2[:, :8]).fit(concept="two", model_family="wan21")
    both = RefusalBasis.combine([first, second])
    assert both.concept == "one + two" and both.layers == ["L", "M"] and both.concepts == 2
    sub = both.subspace("L")
    assert sub.shape == (48, 2)
    torch.testing.assert_close(sub.T @ sub, torch.eye(2), atol=1e-5, rtol=0)
    for concept in (c1, c2):  # both directions lie in the combined subspace
        assert (sub.double().T @ concept).norm() > 0.95
    assert both.subspace("M").shape == (8, 1) and both.target("L").shape == (48,)
    with pytest.raises(ValueError, match="model families"):
        RefusalBasis.combine([first, RefusalFitter().update("L", u2, s2).fit(model_family="hunyuan")])
    with pytest.raises(ValueError, match="at least two"):
        RefusalBasis.combine([first])


@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda f: f.update("L", torch.zeros(3, 4), torch.zeros(2, 4)), ValueError, "same shape"),
        (lambda f: f.update("L", torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)), ValueError, r"\[n, d\]"),
        (lambda f: f.update("L", torch.full((2, 4), float("nan")), torch.zeros(2, 4)), ValueError, "NaN"),
        (lambda f: f.update("L", [[1.0]], [[0.0]]), TypeError, "torch.Tensor"),
        (lambda f: f.update("L", torch.ones(2, 4), torch.zeros(2, 4)).update("L", torch.ones(2, 5), torch.zeros(2, 5)),
         ValueError, "width 5"),
    ],
)
def test_bad_updates(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call(RefusalFitter())


def test_fit_a_subset_of_layers():
    _, _, unsafe, safe, _ = planted(dim=16, seed=2)
    fitter = RefusalFitter().update("a", unsafe, safe).update("b", unsafe, safe).update("c", safe, safe)
    assert fitter.fit(layers=["b", "a"]).layers == ["b", "a"]
    with pytest.raises(ValueError, match="identical"):
        fitter.fit()
    with pytest.raises(ValueError, match="recorded for"):
        fitter.fit(layers=["z"])


def test_bad_fits():
    with pytest.raises(ValueError, match="no activations"):
        RefusalFitter().fit()
    fitter = RefusalFitter().update("L", torch.ones(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="method"):
        fitter.fit(method="pca")
    with pytest.raises(ValueError, match="rank"):
        fitter.fit(rank=0)
    with pytest.raises(ValueError, match="alpha"):
        fitter.fit(alpha=-1.0)
    with pytest.raises(ValueError, match="identical"):
        RefusalFitter().update("L", torch.ones(2, 4), torch.ones(2, 4)).fit()
    with pytest.raises(ValueError, match="without pairs"):
        RefusalFitter().update("L", torch.ones(2, 4), torch.zeros(2, 4)).update_neutral("X", torch.ones(3, 2)).fit()
