"""Properties of core.preserve that test_preserve.py leaves open (found by mutation testing: each test here fails on
a small change of core/preserve.py that every earlier test let pass)."""

from __future__ import annotations

import pytest
import torch

from core.preserve import constrain, leakage, preserve_span


def _orthonormal(d, k, seed):
    return torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))[0]


def test_energy_one_keeps_a_direction_of_small_but_real_energy():
    """energy=1 is the strict null space: "every direction with non-zero energy", also one a thousand times weaker
    than the others (only rounding noise, 1e-10 of the largest singular value, is left out)."""
    g = torch.Generator().manual_seed(0)
    basis = _orthonormal(24, 3, 1)
    scales = torch.tensor([1.0, 0.5, 1e-3], dtype=torch.float64)
    x = (torch.randn(50, 3, generator=g, dtype=torch.float64) * scales) @ basis.T
    span = preserve_span(x, 1.0)
    assert span.shape == (24, 3)
    assert (span.T @ basis[:, 2]).norm() > 1 - 1e-9  # the weak direction lies in V
    assert leakage(basis[:, 2], x) > 0


def test_a_concept_column_inside_the_span_up_to_its_tolerance_is_dropped_not_kept_as_noise():
    """A column whose part outside V is below ``tol`` (1e-3) of its length lies in the preserve span: only its
    remainder, noise, would be removed, so Q leaves it out; a column well outside is kept."""
    span = _orthonormal(32, 4, 2)
    w = torch.randn(32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w = w - span @ (span.T @ w)
    w = w / w.norm()
    inside = span[:, 0] + 1e-5 * w
    assert constrain(inside, span).shape == (32, 0)
    assert constrain(torch.stack([inside, span[:, 1] + 0.5 * w], 1), span).shape == (32, 1)


def test_the_tolerance_is_relative_to_each_columns_length():
    """U's columns are directions of any scale: a short column wholly outside V is kept, a long one whose outside
    part is a small share of it is dropped."""
    span = _orthonormal(32, 4, 4)
    w = torch.randn(32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w = w - span @ (span.T @ w)
    w = w / w.norm()
    q = constrain(1e-6 * w, span)
    assert q.shape == (32, 1) and abs(float(q[:, 0].double() @ w)) > 1 - 1e-6
    assert constrain(1e6 * (span[:, 0] + 1e-5 * w), span).shape == (32, 0)


def test_q_points_along_the_concept_columns():
    """Deterministic signs: each column of Q has a non-negative component along the sum of U's columns, so a
    single concept direction outside V comes back as itself, not its negative."""
    span = _orthonormal(32, 4, 6)
    g = torch.Generator().manual_seed(7)
    for _ in range(3):
        concept = torch.randn(32, 2, generator=g, dtype=torch.float64)
        q = constrain(concept, span).double()
        assert (q.T @ concept.sum(1) >= 0).all()
    w = concept[:, 0] - span @ (span.T @ concept[:, 0])
    q = constrain(concept[:, 0], span).double()[:, 0]
    torch.testing.assert_close(q, w / w.norm(), atol=1e-6, rtol=0)


def test_leakage_is_the_share_of_energy_inside_the_subspace():
    """``sum |Q^T x|^2 / sum |x|^2``: 1 for inputs inside Q, 0 outside, and the share in between (here 3^2 of
    3^2 + 4^2 = 0.36), whatever the inputs' scale."""
    q = _orthonormal(8, 2, 8)
    other = _orthonormal(8, 4, 9)[:, 3]
    other = other - q @ (q.T @ other)
    other = other / other.norm()
    assert abs(leakage(q, 7.0 * q.T) - 1.0) < 1e-12
    assert abs(leakage(q, other[None]) - 0.0) < 1e-12
    x = 3.0 * q[:, 0] + 4.0 * other
    for scale in (1.0, 1e3):
        assert abs(leakage(q, scale * x[None]) - 9.0 / 25.0) < 1e-12


def test_invalid_preserve_sets_and_ranks_are_errors_that_say_why():
    with pytest.raises(ValueError, match="all zero"):
        preserve_span(torch.zeros(5, 8))
    with pytest.raises(ValueError, match="max_rank must be >= 1"):
        preserve_span(torch.randn(5, 8), 0.9, max_rank=0)
