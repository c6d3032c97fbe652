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
    assert cosine(fitter.fit(method="mean")["L"].direction, concept) > 0.995
    for rank in (1, 4):
        assert cosine(fitter.fit(rank=rank, method="cpca")["L"].direction, concept) > 0.97
    # Without neutral prompts the safe side stands in for them.
    alone = RefusalFitter().update("L", unsafe, safe).fit(rank=4)
    assert cosine(alone["L"].direction, concept) > 0.97


@pytest.mark.parametrize("seed", range(3))
def test_cpca_beats_mean_when_a_confound_rides_along(seed):
    concept, confound, unsafe, safe, neutral = planted(confound=0.8, seed=seed)
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    mean = cosine(fitter.fit(method="mean")["L"].direction, concept)
    for rank in (1, 2, 4):
        direction = fitter.fit(rank=rank, method="cpca")["L"].direction
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
    for field in ("vector", "basis", "direction", "safe_mean", "subspace"):
        torch.testing.assert_close(getattr(whole["L"], field), getattr(again["L"], field), rtol=1e-6, atol=1e-6)
    twice = parts.fit(rank=3)
    assert torch.equal(twice["L"].direction, again["L"].direction)


def test_basis_shapes_scores_and_metadata():
    _, _, unsafe, safe, neutral = planted(dim=64, seed=1)
    fitter = RefusalFitter().update("a", unsafe, safe).update("b", unsafe[:, :32], safe[:, :32])
    basis = fitter.fit(rank=3, concept="Rolex", pairs=[PromptPair("a Rolex", "a watch"), ("x y", "x")],
                       model_family="wan21", model_fingerprint="abc")
    assert basis.layers == ["a", "b"]
    assert basis["a"].vector.shape == (64,) and basis["a"].basis.shape == (64, 3)
    assert basis["b"].direction.shape == (32,) and basis.subspace("b").shape == (32, 1)
    assert basis.dims == {"a": 64, "b": 32} and basis.concepts == 1 and basis["a"].dim == 64
    torch.testing.assert_close(basis["a"].basis.T @ basis["a"].basis, torch.eye(3), atol=1e-5, rtol=0)
    assert abs(float(basis["a"].direction.norm()) - 1) < 1e-6
    assert basis["a"].score.separation > 1 and basis["a"].score.norm > 0
    assert basis.pairs == (("a Rolex", "a watch"), ("x y", "x"))
    assert basis["a"].vector.dtype == torch.float32
    assert basis["a"].source == "a" and basis.shared_inputs() == {}
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


def _dense_reference(unsafe, safe, neutral, rank, alpha=1.0):
    """The contrastive fit by a dense ``d x d`` eigendecomposition: basis ``[d, k]`` and direction ``[d]``."""
    pair_factor = (unsafe - safe) / len(unsafe) ** 0.5
    centred = neutral - neutral.mean(0)
    neutral_factor = centred / (len(neutral) - 1) ** 0.5
    values, vectors = torch.linalg.eigh(pair_factor.T @ pair_factor - alpha * neutral_factor.T @ neutral_factor)
    basis = vectors[:, values.argsort(descending=True)[:rank]]
    inside = basis @ (basis.T @ (unsafe - safe).mean(0))
    return basis, inside / inside.norm()


@pytest.mark.parametrize("seed", range(3))
def test_the_sample_span_solve_is_the_dense_solve_when_pairs_barely_differ(seed):
    # As on a real text context: five pairs that differ by one word (small, nearly parallel differences on large
    # activations), each row recorded at two timesteps (exact duplicates), neutral prompts that vary far more.
    # Solving in a span cut from an unpivoted QR missed parts of the neutral rows here (1 - cos up to 3e-3).
    g = torch.Generator().manual_seed(seed)
    dim = 96
    concept = torch.randn(dim, generator=g, dtype=torch.float64)
    base = 3 * torch.randn(5, dim, generator=g, dtype=torch.float64)
    safe = base.repeat_interleave(2, 0)
    wiggle = 0.05 * torch.randn(5, dim, generator=g, dtype=torch.float64)
    unsafe = safe + 0.01 * (concept + wiggle).repeat_interleave(2, 0)
    neutral = 3 * torch.randn(8, dim, generator=g, dtype=torch.float64)
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    for rank in (1, 2, 4):
        basis, direction = _dense_reference(unsafe, safe, neutral, rank)
        fitted = fitter.fit(rank=rank, edit="subspace")["L"]
        assert 1 - cosine(fitted.direction, direction) < 1e-6
        overlap = torch.linalg.svdvals(fitted.subspace.double().T @ basis)
        assert overlap.min() > 1 - 1e-6, f"rank {rank}: principal cosines {overlap.tolist()}"
    # Rounding the activations to float32 (a CPU's last bits) does not move the fit (the old solve: 1 - cos 2e-3).
    rounded = RefusalFitter().update("L", unsafe.float(), safe.float()).update_neutral("L", neutral.float())
    assert 1 - cosine(rounded.fit(rank=4)["L"].direction, fitter.fit(rank=4)["L"].direction.double()) < 1e-6


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


def test_a_combined_edit_moves_each_concepts_component_to_its_own_safe_mean():
    """Along each concept's direction the combined target is that concept's safe mean (the mean of the safe means,
    used until 2026-12-06, put it far off here)."""
    g = torch.Generator().manual_seed(4)
    dim = 32
    parts = []
    for concept in range(2):
        safe = torch.randn(6, dim, generator=g, dtype=torch.float64) + 3.0 * (concept + 1)  # far-apart safe means
        unsafe = safe + torch.randn(dim, generator=g, dtype=torch.float64)  # the concept: one shift
        parts.append(RefusalFitter().update("L", unsafe, safe).fit(method="mean", concept=f"c{concept}"))
    both = RefusalBasis.combine(parts)
    target = both.target("L").double()
    for part in parts:
        d, mu = part["L"].direction.double(), part.target("L").double()
        assert abs(float(d @ (target - mu))) < 1e-5 * float(mu.norm())
    assert abs(float(parts[0]["L"].direction.double() @ (both["L"].safe_mean.double().mean(0) - parts[0].target(
        "L").double()))) > 0.1  # what the mean gave


def test_combine_says_when_the_fingerprints_differ_because_the_layers_do():
    """A fingerprint covers its vector's own layers: two vectors of one model over different layer groups differ, and
    the error said they were measured on different weights; it now says what to change."""
    _, _, u1, s1, _ = planted(dim=16, seed=1)
    _, _, u2, s2, _ = planted(dim=16, seed=2)
    text = RefusalFitter().update("k", u1, s1).update("v", u1, s1).fit(concept="Rolex", model_fingerprint="aaaa")
    ffn = RefusalFitter().update("ffn", u2, s2).fit(concept="Coke", model_fingerprint="bbbb")
    with pytest.raises(ValueError, match=r"differ \(Rolex: aaaa; Coke: bbbb\), but they cover different layers "
                                         r"\(Rolex: 2 layers from 'k', Coke: 1 layers from 'ffn'\).*cannot tell "
                                         "whether they come from one model.*same layer group and block range"):
        RefusalBasis.combine([text, ffn])
    other = RefusalFitter().update("k", u2, s2).update("v", u2, s2).fit(concept="Coke", model_fingerprint="bbbb")
    with pytest.raises(ValueError, match="measured on different weights"):  # same layers: other weights indeed
        RefusalBasis.combine([text, other])


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
    # A blank edit (an editor workflow of before 2026-12-06 shifted a display widget's '' into it) names the node.
    with pytest.raises(ValueError, match="got '': set the 'edit' widget of Low-Rank Refusal Vector to 'direction'"):
        fitter.fit(edit="")
    with pytest.raises(ValueError, match="identical"):
        RefusalFitter().update("L", torch.ones(2, 4), torch.ones(2, 4)).fit()
    with pytest.raises(ValueError, match="without pairs"):
        RefusalFitter().update("L", torch.ones(2, 4), torch.zeros(2, 4)).update_neutral("X", torch.ones(3, 2)).fit()


def shared_fitter(seed=3):
    """Three layers read input "ctx" (as Wan's k/v read the projected text); "own" reads its own input."""
    _, _, unsafe, safe, neutral = planted(dim=40, seed=seed)
    fitter = RefusalFitter().share("ctx", ["b0.k", "b0.v", "b1.k"])
    fitter.update("ctx", unsafe, safe).update_neutral("ctx", neutral)
    fitter.update("own", unsafe[:, :16] * 2, safe[:, :16])
    return fitter


def test_records_are_frozen_and_the_basis_is_a_read_only_mapping():
    import dataclasses

    basis = shared_fitter().fit(rank=2, concept="c")
    record = basis["b0.k"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.vector = torch.zeros(40)
    with pytest.raises(dataclasses.FrozenInstanceError):
        basis.concept = "other"
    with pytest.raises(TypeError):
        basis.records["b0.k"] = record
    with pytest.raises(TypeError):
        basis["new"] = record
    assert set(basis) == {"b0.k", "b0.v", "b1.k", "own"} and len(basis) == 4 and "own" in basis
    assert dict(basis.items())["own"] is basis["own"]
    with pytest.raises(KeyError, match="not in this refusal vector"):
        basis["missing"]
    with pytest.raises(ValueError, match=r"basis must be \[d, k\]"):
        dataclasses.replace(record, vector=torch.zeros(39))


def test_shared_input_is_fitted_once_and_every_reader_gets_the_same_record(monkeypatch):
    import core.refusal as refusal

    fitter = shared_fitter()
    assert fitter.layers == ["b0.k", "b0.v", "b1.k", "own"]
    assert fitter.shared_inputs() == {"ctx": ["b0.k", "b0.v", "b1.k"]}
    fits = []
    real = refusal._fit_input
    monkeypatch.setattr(refusal, "_fit_input", lambda *a, **k: fits.append(k["source"]) or real(*a, **k))
    basis = fitter.fit(rank=2)
    assert fits == ["ctx", "own"]
    assert basis["b0.k"] is basis["b0.v"] is basis["b1.k"] and basis["b0.k"].source == "ctx"
    assert basis.shared_inputs() == {"ctx": ["b0.k", "b0.v", "b1.k"]}
    assert basis["own"].source == "own" and basis.dims == {"b0.k": 40, "b0.v": 40, "b1.k": 40, "own": 16}
    # The shared fit is the fit an unshared layer with the same rows would get.
    _, _, unsafe, safe, neutral = planted(dim=40, seed=3)
    alone = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral).fit(rank=2)
    for field in ("vector", "basis", "direction", "safe_mean", "subspace"):
        assert torch.equal(getattr(alone["L"], field), getattr(basis["b1.k"], field))
    # Fitting only some readers still fits the input once.
    fits.clear()
    part = fitter.fit(rank=2, layers=["b1.k", "b0.v"])
    assert fits == ["ctx"] and part.layers == ["b1.k", "b0.v"] and part["b1.k"] is part["b0.v"]


def test_select_and_combine_preserve_records_and_sharing():
    basis = shared_fitter().fit(rank=2, concept="one", model_family="wan")
    picked = basis.select(["b1.k", "own", "b0.k"])
    assert picked.layers == ["b1.k", "own", "b0.k"]
    assert all(picked[layer] is basis[layer] for layer in picked)
    assert picked.shared_inputs() == {"ctx": ["b1.k", "b0.k"]}
    assert basis.select(["b0.v"]).shared_inputs() == {}
    with pytest.raises(KeyError):
        basis.select(["nope"])

    other = shared_fitter(seed=4).fit(rank=2, concept="two", model_family="wan")
    both = RefusalBasis.combine([basis, other])
    assert both["b0.k"] is both["b0.v"] is both["b1.k"] and both["b0.k"] is not both["own"]
    assert both.shared_inputs() == {"ctx": ["b0.k", "b0.v", "b1.k"]} and both.concepts == 2
    assert both["b0.k"].vector.shape == (2, 40) and both.subspace("b0.k").shape == (40, 2)
    # A layer whose parts are shared differently gets its own record (and its own input name).
    mixed = RefusalBasis.combine([basis, other.select(["b0.k"])])
    assert mixed["b0.k"] is not mixed["b0.v"] and mixed["b0.v"] is mixed["b1.k"]
    assert mixed["b0.k"].concepts == 2 and mixed["b0.v"].concepts == 1
    assert len({mixed[layer].source for layer in ("b0.k", "b0.v", "own")}) == 3


def test_share_declarations_are_checked():
    fitter = RefusalFitter().share("ctx", ["a", "b"])
    with pytest.raises(ValueError, match="already reads input 'ctx'"):
        fitter.share("other", ["a"])
    with pytest.raises(ValueError, match="names an input"):
        fitter.share("other", ["ctx"])
    with pytest.raises(ValueError, match="at least one layer"):
        fitter.share("x", [])
    fitter.update("z", torch.ones(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="received no activations"):
        fitter.fit(layers=["a"])
    # An input updated before it was declared shared is no longer a layer of its own.
    late = RefusalFitter().update("ctx", torch.ones(2, 4), torch.zeros(2, 4)).share("ctx", ["a", "b"])
    assert late.layers == ["a", "b"] and late.fit(method="mean")["a"].source == "ctx"
    # A layer declared as its own input stays a layer when others are declared to read it too.
    kept = RefusalFitter().share("a", ["a"]).share("a", ["b"]).update("a", torch.ones(2, 4), torch.zeros(2, 4))
    assert kept.layers == ["a", "b"] and kept.shared_inputs() == {"a": ["a", "b"]}


def _planted_subspace(dim=64, k=3, pairs=24, seed=5):
    """Pair differences spread over a planted k-dim subspace (a broad concept reached through many wordings)."""
    g = torch.Generator().manual_seed(seed)
    planted_basis = torch.linalg.qr(torch.randn(dim, k, generator=g, dtype=torch.float64))[0]
    safe = torch.randn(pairs, dim, generator=g, dtype=torch.float64)
    unsafe = safe + (3 * torch.randn(pairs, k, generator=g, dtype=torch.float64) + 2.0) @ planted_basis.T
    neutral = torch.randn(40, dim, generator=g, dtype=torch.float64)
    return planted_basis, unsafe, safe, neutral


def test_subspace_edit_removes_the_whole_planted_subspace_and_direction_edit_only_one_dimension():
    planted_basis, unsafe, safe, neutral = _planted_subspace()
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    direction = fitter.fit(rank=3)
    subspace = fitter.fit(rank=3, edit="subspace")
    assert direction.edit == "direction" and subspace.edit == "subspace"
    assert direction.subspace("L").shape == (64, 1)
    edit_space = subspace.subspace("L").double()
    assert edit_space.shape == (64, 3)
    torch.testing.assert_close(edit_space.T @ edit_space, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.linalg.svdvals(planted_basis.T @ edit_space).min() > 0.98  # every planted dimension is covered
    # Same fit otherwise: only what the edit removes differs.
    for field in ("vector", "basis", "direction", "safe_mean"):
        assert torch.equal(getattr(direction["L"], field), getattr(subspace["L"], field))


def test_edit_survives_save_load_and_combine(tmp_path):
    planted_basis, unsafe, safe, neutral = _planted_subspace()
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    subspace = fitter.fit(rank=3, edit="subspace")
    subspace.save(tmp_path / "v.safetensors")
    loaded = RefusalBasis.load(tmp_path / "v.safetensors")
    assert loaded.edit == "subspace"
    torch.testing.assert_close(loaded.subspace("L"), subspace.subspace("L"))
    other = RefusalFitter().update("L", *_planted_subspace(seed=9)[1:3]).fit(rank=2)
    combined = RefusalBasis.combine([subspace, other])
    assert combined.edit == "subspace" and combined.subspace("L").shape == (64, 4)
    assert RefusalBasis.combine([other, other]).edit == "direction"


def test_unknown_edit_is_an_error_that_lists_the_choices():
    _, unsafe, safe, _ = _planted_subspace()
    with pytest.raises(ValueError, match="direction.*subspace"):
        RefusalFitter().update("L", unsafe, safe).fit(edit="everything")


def _text_side_pairs(pairs=5, dim=48, timesteps=3, seed=0):
    """Text-side inputs: each pair's rows repeat once per timestep, so the differences span ``pairs`` dimensions."""
    g = torch.Generator().manual_seed(seed)
    safe = torch.randn(pairs, dim, generator=g, dtype=torch.float64)
    concept = torch.linalg.qr(torch.randn(dim, pairs, generator=g, dtype=torch.float64))[0]  # [d, pairs]
    strengths = 6 * torch.eye(pairs, dtype=torch.float64) + torch.rand(pairs, pairs, generator=g, dtype=torch.float64)
    unsafe = safe + strengths @ concept.T  # each pair adds its own concept dimension, well above neutral variance
    neutral = torch.randn(36, dim, generator=g, dtype=torch.float64)
    return concept, unsafe.repeat(timesteps, 1), safe.repeat(timesteps, 1), neutral


def test_the_subspace_keeps_only_directions_of_positive_contrast(caplog):
    concept, unsafe, safe, neutral = _text_side_pairs()
    fitter = RefusalFitter().update("ctx", unsafe, safe).update_neutral("ctx", neutral)
    with caplog.at_level("WARNING", logger="core.refusal"):
        wide = fitter.fit(rank=16, edit="subspace")
    edit_space = wide.subspace("ctx").double()
    assert edit_space.shape == (48, 5)  # 5 pairs: 5 directions, not 16 padded with neutral variation
    assert torch.linalg.svdvals(concept.T @ edit_space).min() > 0.95
    assert "rank 16: only 5 direction(s) of positive contrast at ctx" in caplog.text
    # Every kept direction has positive contrast: the pairs differ more along it than the neutral prompts vary.
    diffs, centred = unsafe - safe, neutral - neutral.mean(0)
    contrast = ((diffs @ edit_space) ** 2).mean(0) - ((centred @ edit_space) ** 2).sum(0) / (len(neutral) - 1)
    assert bool((contrast > 0).all())
    # Ranks up to the positive count are untouched, and the direction edit is the same at rank 5 and rank 16.
    assert fitter.fit(rank=4, edit="subspace").subspace("ctx").shape == (48, 4)
    torch.testing.assert_close(fitter.fit(rank=16)["ctx"].direction, fitter.fit(rank=5)["ctx"].direction,
                               rtol=0, atol=1e-6)
    caplog.clear()
    with caplog.at_level("INFO", logger="core.refusal"):
        fitter.fit(rank=16)  # the direction edit: only an info line
    assert [r.levelname for r in caplog.records] == ["INFO"]


def test_no_direction_of_positive_contrast_is_an_error_that_names_the_remedy():
    g = torch.Generator().manual_seed(1)
    safe = torch.randn(5, 8, generator=g, dtype=torch.float64)
    unsafe = safe + 0.01 * torch.randn(5, 8, generator=g, dtype=torch.float64)
    neutral = 10 * torch.randn(60, 8, generator=g, dtype=torch.float64)  # varies far more, in every direction
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    fitter.update("M", unsafe[:, :4], safe[:, :4]).update_neutral("M", neutral[:, :4])
    fitter.update("fine", unsafe + 50, safe).update_neutral("fine", neutral)
    with pytest.raises(ValueError, match=r"alpha=1.0 times .* at 2 of 3 inputs: 'L' \(largest .*\), 'M' .*Lower alpha"):
        fitter.fit(alpha=1.0)
    assert fitter.fit(alpha=1.0, layers=["fine"])["fine"].basis.shape[1] >= 1
    assert fitter.fit(alpha=0.0, layers=["L"])["L"].basis.shape[1] == 4  # plain PCA of the differences has them
    assert fitter.fit(method="mean", layers=["L"])["L"].basis.shape[1] == 1


def test_the_subspace_edit_stores_the_eigenvectors_in_order_of_contrast():
    # An SVD of U (orthonormal: every singular value 1) used to return an arbitrary rotation of it, which changed with
    # the number of CPU threads; the edit subspace is now U itself, its first column the strongest contrast.
    concept, unsafe, safe, neutral = _text_side_pairs()
    record = RefusalFitter().update("ctx", unsafe, safe).update_neutral("ctx", neutral).fit(rank=4, edit="subspace")
    record = record["ctx"]
    assert torch.equal(record.subspace, record.basis) and record.subspace.shape == (48, 4)
    edit_space = record.subspace.double()
    torch.testing.assert_close(edit_space.T @ edit_space, torch.eye(4, dtype=torch.float64), atol=1e-6, rtol=0)
    diffs, centred = unsafe - safe, neutral - neutral.mean(0)
    contrast = ((diffs @ edit_space) ** 2).mean(0) - ((centred @ edit_space) ** 2).sum(0) / (len(neutral) - 1)
    assert contrast.tolist() == sorted(contrast.tolist(), reverse=True)  # C's eigenvalues, descending
    assert bool(((edit_space.T @ diffs.mean(0)) >= 0).all())  # the basis's deterministic signs


def _two_direction_pairs(dim, pairs=6, neutral=10, seed=0):
    """Pairs whose differences spread over two orthogonal directions with unlike spreads, so the mean difference r
    is no eigenvector of C; unsafe, safe and neutral rows each have their own mean."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.linalg.qr(torch.randn(dim, 2, generator=g, dtype=torch.float64))[0]  # [d, 2]
    mean_shift = torch.tensor([3.0, 2.0], dtype=torch.float64)
    spread = torch.tensor([0.5, 4.0], dtype=torch.float64)
    safe = 1.0 + torch.randn(pairs, dim, generator=g, dtype=torch.float64)
    unsafe = safe + (mean_shift + spread * torch.randn(pairs, 2, generator=g, dtype=torch.float64)) @ axes.T
    unsafe = unsafe + 0.1 * torch.randn(pairs, dim, generator=g, dtype=torch.float64)
    neutral_rows = -2.0 + 0.5 * torch.randn(neutral, dim, generator=g, dtype=torch.float64)
    return unsafe, safe, neutral_rows


def _dense_positive_basis(unsafe, safe, neutral, rank, alpha):
    """Top-``rank`` eigenvectors of the dense C = (1/n) D^T D - alpha Cov(neutral) (neutral centred, divided by
    m - 1) whose eigenvalues are positive above rounding, as ``[d, k']``."""
    diffs, centred = unsafe - safe, neutral - neutral.mean(0)
    dense = diffs.T @ diffs / len(diffs) - alpha * centred.T @ centred / (len(neutral) - 1)
    values, vectors = torch.linalg.eigh(dense)
    order = values.argsort(descending=True)[:rank]
    keep = values[order] > 1e-9 * float(diffs.pow(2).sum() / len(diffs) + alpha * centred.pow(2).sum()
                                        / (len(neutral) - 1))
    return vectors[:, order[keep]]


@pytest.mark.parametrize("dim", [8, 40])  # n + m >= d: the dense solve; n + m < d: the solve in the sample span
def test_the_direction_is_r_projected_on_the_subspace_not_its_top_eigenvector(dim):
    """d = U U^T r / |U^T r|: with pairs that differ along two directions r is no eigenvector of C, so the top
    eigenvector alone is a different direction; the fitted direction is r projected on the stored basis."""
    unsafe, safe, neutral = _two_direction_pairs(dim)
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    r = (unsafe - safe).mean(0)
    for rank in (2, 3):
        record = fitter.fit(rank=rank, alpha=1.0)["L"]
        stored = record.basis.double()
        assert stored.shape[1] >= 2
        projected = stored @ (stored.T @ r)
        expected = projected / projected.norm()
        torch.testing.assert_close(record.direction.double(), expected, rtol=0, atol=1e-6)
        # Against a dense eigendecomposition computed here (the same subspace, so the same direction).
        reference = _dense_positive_basis(unsafe, safe, neutral, rank, 1.0)
        dense = reference @ (reference.T @ r)
        assert 1 - cosine(record.direction, dense / dense.norm()) < 1e-7  # float32 storage
        assert abs(float(stored[:, 0] @ expected)) < 0.99  # the top eigenvector alone would fail the checks above


def test_safe_mean_is_the_mean_of_the_safe_rows():
    """The affine edit moves the removed component to the safe mean: not the unsafe mean, not the neutral mean."""
    unsafe, safe, neutral = _two_direction_pairs(16, pairs=12)
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    for method in ("cpca", "mean"):
        record = fitter.fit(rank=2, method=method)["L"]
        torch.testing.assert_close(record.safe_mean.double(), safe.mean(0), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(record.target(), record.safe_mean)
    for other in (unsafe, neutral):  # the data is such that mixing the sides up would show
        assert (other.mean(0) - safe.mean(0)).norm() > 1


@pytest.mark.parametrize("dim", [12, 60])  # n + m = 16: the dense solve at d = 12, the sample-span solve at d = 60
def test_alpha_weighs_the_neutral_covariance_in_either_solve(dim):
    """U is the top eigenvectors with positive eigenvalue of the dense C = (1/n) D^T D - alpha Cov(neutral), neutral
    covariance centred and divided by m - 1, for every alpha, whichever solve runs (compared as projectors)."""
    g = torch.Generator().manual_seed(7)
    safe = torch.randn(6, dim, generator=g, dtype=torch.float64)
    unsafe = safe + 1.5 * torch.randn(6, dim, generator=g, dtype=torch.float64) + 0.5
    neutral = torch.randn(10, dim, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, dim,
                                                                                          dtype=torch.float64)
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    projectors = []
    for alpha in (0.0, 1.0, 2.0):
        reference = _dense_positive_basis(unsafe, safe, neutral, 3, alpha)
        basis = fitter.fit(rank=3, alpha=alpha, edit="subspace")["L"].basis.double()
        assert basis.shape == reference.shape == (dim, 3), f"alpha {alpha}"
        code, dense = basis @ basis.T, reference @ reference.T
        assert (code - dense).norm() < 1e-5, f"alpha {alpha}: |P_code - P_dense| = {float((code - dense).norm()):.2e}"
        projectors.append(dense)
    # The three alphas give subspaces far enough apart that a solve ignoring alpha would be seen.
    assert min((projectors[i] - projectors[j]).norm() for i, j in ((0, 1), (1, 2), (0, 2))) > 1e-2


def test_pairs_that_do_not_carry_the_concept_as_the_others_do_are_named():
    """One pair written the other way round, and one with the concept on neither side, among pairs measured at two
    timesteps (rows pair-major): their shares of the mean shift are about -1 and 0, the others about 1."""
    from core.refusal import pair_notes

    g = torch.Generator().manual_seed(5)
    dim, n, steps = 16, 6, 2
    concept = torch.randn(dim, generator=g, dtype=torch.float64)
    safe = torch.randn(n * steps, dim, generator=g, dtype=torch.float64)
    shift = concept.repeat(n * steps, 1) * (1 + 0.1 * torch.randn(n * steps, 1, generator=g, dtype=torch.float64))
    sign = torch.ones(n * steps, 1, dtype=torch.float64)
    sign[2 * steps:3 * steps] = -1  # pair 3: swapped
    sign[4 * steps:5 * steps] = 0  # pair 5: no concept
    fitter = RefusalFitter().update("L", safe + sign * shift, safe)
    pairs = [PromptPair(f"u{i}", f"s{i}", line=10 + i) for i in range(n)]
    basis = fitter.fit(method="mean", pairs=pairs)
    shares = fitter.pair_shifts(basis)
    assert len(shares) == n and shares[2] < -0.5 and abs(shares[4]) < 0.05
    assert all(shares[i] > 0.8 for i in (0, 1, 3, 5))
    notes = pair_notes(shares, pairs)
    assert len(notes) == 2 and notes[0].startswith("line 12:") and "swapped" in notes[0]
    assert notes[1].startswith("line 14:") and "almost not at all" in notes[1]
    assert pair_notes(shares, [("u", "s")] * n)[0].startswith("pair 3:")  # pairs without line numbers
    assert RefusalFitter().update("L", safe + shift, safe).pair_shifts(basis) and not pair_notes(
        RefusalFitter().update("L", safe + shift, safe).pair_shifts(basis), pairs)


def test_scores_do_not_carry_the_last_digits_of_the_float64_sums(tmp_path):
    """The scores are written into the vector file. Computed at full precision they moved in their last 1-2 digits
    with the order of the float64 sums (the CPU's thread count on video-side layers), so the file's SHA-256 did while
    every tensor was bit-identical; they are kept to 12 significant digits. Here the neutral rows come in another
    order, which changes the same sums' last bits."""
    from core.serialization import read_metadata

    _, _, unsafe, safe, neutral = planted(dim=48, pairs=6, neutral=12, seed=3)
    layer = "blocks.0.ffn.0"

    def scores(rows):
        basis = RefusalFitter().update(layer, unsafe, safe).update_neutral(layer, rows).fit(rank=3, alpha=1.0)
        path = tmp_path / "vector.safetensors"
        basis.save(path)
        return basis[layer].score.as_dict(), read_metadata(path)["scores"]

    orders = [torch.arange(neutral.shape[0]), torch.arange(neutral.shape[0]).flip(0),
              torch.randperm(neutral.shape[0], generator=torch.Generator().manual_seed(0))]
    results = [scores(neutral[order]) for order in orders]
    assert all(result == results[0] for result in results[1:]), results
    assert all(value == float(f"{value:.12g}") for value in results[0][0].values())
