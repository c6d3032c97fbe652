"""Properties of the preserve-constrained (null-space) edit and of rank-k subspace edits."""

from __future__ import annotations

import pytest
import torch

from core.edit import project_edit
from core.preserve import constrain, leakage, preserve_span
from core.refusal import RefusalFitter


def _orthonormal(d, k, seed):
    return torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))[0]


def test_a_planted_k_dim_subspace_is_recovered_and_removed():
    """Pair differences live in a planted 3-dim subspace (plus small noise); the rank-3 fit spans it and the
    rank-3 projection edit removes every direction of it from what the layer reads."""
    d, k, n = 64, 3, 40
    g = torch.Generator().manual_seed(0)
    planted = _orthonormal(d, k, 1)
    safe = torch.randn(n, d, generator=g, dtype=torch.float64)
    unsafe = safe + (torch.randn(n, k, generator=g, dtype=torch.float64) + 2.0) @ planted.T \
        + 0.01 * torch.randn(n, d, generator=g, dtype=torch.float64)
    fitter = RefusalFitter().update("layer", unsafe, safe)
    fitter.update_neutral("layer", torch.randn(30, d, generator=g, dtype=torch.float64))
    basis = fitter.fit(rank=k, alpha=0.0)["layer"].basis.double()  # U [d, k]
    cosines = torch.linalg.svdvals(planted.T @ basis)  # principal angles' cosines
    assert cosines.min() > 0.99
    weight = torch.randn(16, d, generator=g)
    edit = project_edit(weight, basis, 1.0)
    edited = edit.dense(weight).double()
    assert (edited @ basis).abs().max() < 1e-5 * weight.abs().max()  # the fitted subspace: exactly
    residual = (edited @ planted).norm() / (weight.double() @ planted).norm()
    assert residual < 0.05  # the planted one: up to the fit's error (cosines > 0.99)
    other = torch.randn(d, generator=g, dtype=torch.float64)
    other = other - basis @ (basis.T @ other)  # inputs outside the fitted subspace pass unchanged
    assert torch.allclose(edited @ other, weight.double() @ other, atol=1e-3)


def test_the_preserve_constraint_leaves_preserve_activations_unchanged():
    d, g = 48, torch.Generator().manual_seed(2)
    span_true = _orthonormal(d, 20, 3)  # benign inputs live in 20 of 48 dimensions
    preserve = torch.randn(500, 20, generator=g, dtype=torch.float64) @ span_true.T
    concept = torch.randn(d, 4, generator=g, dtype=torch.float64)  # partly inside the benign span
    span = preserve_span(preserve, energy=1.0)
    assert span.shape == (d, 20)
    q = constrain(concept, span)
    assert q.shape == (d, 4) and torch.allclose(q.T.double() @ q.double(), torch.eye(4, dtype=torch.float64), atol=1e-5)
    assert (span.T @ q.double()).abs().max() < 1e-5
    weight = torch.randn(32, d, generator=g)
    edited = project_edit(weight, q, 1.0).dense(weight).double()
    assert torch.allclose(edited @ preserve.T, weight.double() @ preserve.T, atol=1e-4)
    assert leakage(q, preserve) < 1e-10
    # what the edit still removes: the concept's part outside the benign span, entirely
    outside = concept - span @ (span.T @ concept)
    assert (edited @ outside).abs().max() < 1e-3 * (weight.double() @ outside).abs().max()


def test_energy_trades_the_span_size_and_a_concept_inside_the_span_leaves_nothing():
    d, g = 32, torch.Generator().manual_seed(4)
    scales = torch.tensor([10.0, 5.0, 1.0, 0.1], dtype=torch.float64)
    basis = _orthonormal(d, 4, 5)
    preserve = (torch.randn(400, 4, generator=g, dtype=torch.float64) * scales) @ basis.T
    assert preserve_span(preserve, 0.5).shape[1] == 1
    assert preserve_span(preserve, 0.99).shape[1] == 2
    assert preserve_span(preserve, 1.0).shape[1] == 4
    assert preserve_span(preserve, 1.0, max_rank=3).shape[1] == 3
    assert constrain(basis[:, :2], preserve_span(preserve, 1.0)).shape[1] == 0


@pytest.mark.parametrize("bad", [0.0, 1.5, -1.0])
def test_energy_outside_its_range_is_an_error_that_says_the_range(bad):
    with pytest.raises(ValueError, match=r"energy must be in \(0, 1\]"):
        preserve_span(torch.randn(10, 4), bad)


def test_mismatched_widths_are_an_error():
    with pytest.raises(ValueError, match="share d"):
        constrain(torch.randn(8, 2), torch.randn(9, 3))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dim", [64, 1024])
def test_columns_that_differ_only_inside_the_preserve_span_give_one_direction_and_lose_none(dtype, dim):
    # U orthonormal, its first two columns (v + w) / sqrt 2 and (v - w) / sqrt 2 with v a preserve direction: outside
    # the preserve span both are +-w. With QR the float32 case kept a third column of rounding noise and the float64
    # case lost 0.3-0.6 % of z's part.
    g = torch.Generator().manual_seed(1)
    span = preserve_span(torch.randn(8, dim, generator=g, dtype=torch.float64), energy=1.0).double()

    def outside(vector, *others):
        vector = vector - span @ (span.T @ vector)
        for other in others:
            vector = vector - other * (other @ vector)
        return vector / vector.norm()

    w = outside(torch.randn(dim, generator=g, dtype=torch.float64))
    z = outside(torch.randn(dim, generator=g, dtype=torch.float64), w)
    v = span[:, 0]
    concept = torch.stack([(v + w) / 2 ** 0.5, (v - w) / 2 ** 0.5, z], 1)
    q = constrain(concept.to(dtype), span).double()
    assert q.shape == (dim, 2)
    torch.testing.assert_close(q.T @ q, torch.eye(2, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.linalg.svdvals(q.T @ torch.stack([w, z], 1)).min() > 1 - 1e-6  # exactly span{w, z}
    assert (span.T @ q).abs().max() < 1e-6
