"""Properties of the refusal fit that test_refusal.py leaves open (found by mutation testing: each test here fails on
a small change of core/refusal.py that every earlier test let pass)."""

import math

import pytest
import torch

from core.refusal import RefusalFitter
from synthetic import planted


@pytest.mark.parametrize("method", ["mean", "cpca"])
def test_the_scores_are_the_documented_formulas_computed_by_hand_in_float64(method):
    """LayerScore against its docstring: norm |r|; relative_norm |r| / RMS |safe|; contrast the pair differences'
    second moment along d minus alpha times the neutral variance along d, over the differences' second moment;
    separation Cohen's d of unsafe vs. safe projected on d (pooled population variance)."""
    _, _, unsafe, safe, neutral = planted(dim=32, pairs=8, neutral=12, confound=0.5, seed=2)
    alpha = 0.5
    record = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral).fit(
        rank=2, alpha=alpha, method=method)["L"]
    d = record.direction.double()
    diffs = unsafe - safe
    r = diffs.mean(0)
    centred = neutral - neutral.mean(0)
    u, s = unsafe @ d, safe @ d
    expected = {
        "norm": float(r.norm()),
        "relative_norm": float(r.norm()) / math.sqrt(float(safe.pow(2).sum(1).mean())),
        "contrast": (float((diffs @ d).pow(2).mean()) - alpha * float((centred @ d).pow(2).sum()) / (12 - 1))
        / float(diffs.pow(2).sum(1).mean()),
        "separation": float(u.mean() - s.mean()) / math.sqrt(0.5 * (float(u.var(unbiased=False))
                                                                      + float(s.var(unbiased=False)))),
    }
    for name, value in expected.items():
        assert getattr(record.score, name) == pytest.approx(value, rel=1e-5), name


def test_a_contrastive_subspace_orthogonal_to_the_refusal_vector_is_an_error():
    """Pairs that differ along e1 both ways (so r has no e1 part) and by a little along e2, along which the neutral
    prompts vary far more: U = [e1] holds no part of r, and the direction U U^T r / |U^T r| would be 0 / 0."""
    e = torch.eye(4, dtype=torch.float64)
    diffs = torch.stack([e[0] + 0.1 * e[1], -e[0] + 0.1 * e[1]] * 2)
    safe = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    neutral = torch.stack([e[1], -e[1], 2 * e[1], -2 * e[1]])
    fitter = RefusalFitter().update("L", safe + diffs, safe).update_neutral("L", neutral)
    with pytest.raises(ValueError, match="orthogonal to the refusal vector.*lower alpha or raise rank"):
        fitter.fit(rank=1, alpha=1.0)


def test_without_neutral_prompts_the_safe_side_stands_in():
    """fit()'s docstring: "Without neutral activations the safe side stands in" (not the unsafe side, whose spread
    holds the concept's own variation)."""
    _, _, unsafe, safe, _ = planted(dim=24, pairs=10, seed=6)
    unsafe = unsafe + torch.randn(10, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3.0 \
        * (unsafe - safe).mean(0)  # the unsafe side spreads along the concept, the safe side does not
    alone = RefusalFitter().update("L", unsafe, safe).fit(rank=3, alpha=1.0, edit="subspace")["L"]
    explicit = RefusalFitter().update("L", unsafe, safe).update_neutral("L", safe).fit(
        rank=3, alpha=1.0, edit="subspace")["L"]
    for field in ("basis", "direction", "subspace"):
        torch.testing.assert_close(getattr(alone, field), getattr(explicit, field), atol=1e-6, rtol=0)
    assert alone.score == explicit.score


def test_an_eigenvalue_below_the_share_of_both_traces_is_not_positive_contrast():
    """POSITIVE_CONTRAST is a share of ``trace(C_r) + alpha trace(C_e)``: pairs that differ by 1 along e1 and by
    1e-4 along e2 give e2 an eigenvalue of 1e-8, below 1e-9 x (1 + alpha x 1200) when the neutral prompts vary by
    1200 along e3; U keeps e1 alone."""
    e = torch.eye(6, dtype=torch.float64)
    diffs = torch.stack([e[0] + 1e-4 * e[1], e[0] - 1e-4 * e[1]])
    safe = torch.randn(2, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    neutral = torch.stack([30 * e[2], -30 * e[2]] * 2)
    record = RefusalFitter().update("L", safe + diffs, safe).update_neutral("L", neutral).fit(
        rank=3, alpha=1.0, edit="subspace")["L"]
    assert record.basis.shape == (6, 1)
    assert abs(float(record.basis[0, 0])) > 1 - 1e-6


def test_narrow_inputs_names_only_inputs_that_kept_fewer_directions_than_rank():
    """An input that kept exactly ``rank`` directions is not narrow; one that kept fewer is, with the count."""
    _, _, unsafe, safe, neutral = planted(dim=32, pairs=10, seed=8)
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    full = fitter.fit(rank=2, alpha=0.0)
    assert full["L"].basis.shape[1] == 2 and full.narrow_inputs() == {}
    wide = fitter.fit(rank=12, alpha=0.0)
    assert wide.narrow_inputs() == {"L": 10} == {"L": wide["L"].basis.shape[1]}


def test_the_content_id_does_not_depend_on_alpha_being_written_as_an_int(tmp_path):
    """A basis built with ``alpha=1`` and its file (which loads alpha as 1.0) name one vector."""
    import dataclasses

    _, _, unsafe, safe, neutral = planted(dim=16, pairs=6, seed=9)
    basis = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral).fit(rank=2, alpha=1.0)
    as_int = dataclasses.replace(basis, alpha=1)
    assert as_int.content_sha256() == basis.content_sha256()
    as_int.save(tmp_path / "v.safetensors")
    loaded = basis.load(tmp_path / "v.safetensors")
    assert type(as_int.alpha) is int and type(loaded.alpha) is float
    assert loaded.content_sha256() == basis.content_sha256()


def test_pair_shifts_of_a_direction_against_these_pairs_is_empty_not_inverted():
    """Shares are read against the pairs' mean shift along the direction; where that mean is not positive (a vector
    fitted the other way round), no input qualifies, rather than every share flipping sign."""
    _, _, unsafe, safe, neutral = planted(dim=16, pairs=6, seed=10)
    pairs = [(f"u{i}", f"s{i}") for i in range(6)]
    fitter = RefusalFitter().update("L", unsafe, safe)
    assert len(fitter.pair_shifts(fitter.fit(method="mean", pairs=pairs))) == 6
    reversed_basis = RefusalFitter().update("L", safe, unsafe).fit(method="mean", pairs=pairs)
    assert fitter.pair_shifts(reversed_basis) == []


def test_a_pair_at_exactly_the_shift_floor_is_not_named():
    """pair_notes names a pair whose share is *below* PAIR_SHIFT_FLOOR; one exactly at it carries the concept."""
    from core.refusal import PAIR_SHIFT_FLOOR, pair_notes

    floor = PAIR_SHIFT_FLOOR
    assert pair_notes([floor, 1.0, 2.0 - floor], [("u1", "s1"), ("u2", "s2"), ("u3", "s3")]) == []
    assert pair_notes([floor * 0.999, 1.0], [("u1", "s1"), ("u2", "s2")])[0].startswith("pair 1:")


def test_the_scores_keep_twelve_significant_digits():
    """SCORE_DIGITS: the scores are rounded to 12 digits (the float64 sums' last 1-2 digits dropped), no further."""
    _, _, unsafe, safe, _ = planted(dim=16, pairs=6, seed=11)
    record = RefusalFitter().update("L", unsafe, safe).fit(method="mean")["L"]
    assert record.score.norm == pytest.approx(float((unsafe - safe).mean(0).norm()), rel=1e-10)


def test_combined_columns_point_along_the_sum_of_the_columns_they_combine():
    """Deterministic signs of a combined record's subspace and basis: each column has a non-negative component along
    the sum of the concepts' columns."""
    from core.refusal import RefusalBasis

    fits = []
    for seed in (12, 13):
        _, _, unsafe, safe, neutral = planted(dim=16, pairs=6, seed=seed)
        fits.append(RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral).fit(rank=2, alpha=1.0))
    combined = RefusalBasis.combine(fits)["L"]
    for field in ("subspace", "basis"):
        columns = torch.cat([getattr(b["L"], field) for b in fits], dim=1).double()
        assert getattr(combined, field).shape[1] > 1
        assert (getattr(combined, field).double().T @ columns.sum(1) >= 0).all(), field
