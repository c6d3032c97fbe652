"""Edits that keep a preserve set: remove a concept subspace only where ordinary inputs do not live.

A projection edit ``W' = W (I - lambda Q Q^T)`` changes a layer's output for an input x by ``-lambda W Q Q^T x``.
If every column of Q is orthogonal to the span V of the preserve inputs (benign prompts' activations), then
``Q^T x_p = 0`` and ``W' x_p = W x_p`` exactly: the edit cannot move what the preserve set reads. This is the
null-space constraint of closed-form editing methods (UCE, Gandikota et al. 2024; SPEED, Li et al. 2025): the
concept subspace U is projected onto the orthogonal complement of V before the edit,
``Q = orth((I - V V^T) U)``. The result is still a low-rank input-side projection, so ``core.edit.project_edit``
applies it and a LoRA-style patch carries it.

The trade-off sits in how much of the preserve activations V must hold (``energy``): all of it (V spans every
direction benign text uses) leaves nothing to remove when the concept lives in directions benign text also uses;
less of it lets the edit act but moves benign inputs by their energy outside V.
"""

from __future__ import annotations

import math

import torch

from .devices import cpu_float64

__all__ = ["preserve_span", "constrain", "leakage"]


def preserve_span(activations: torch.Tensor, energy: float = 0.99, *, max_rank: int | None = None) -> torch.Tensor:
    """Orthonormal V ``[d, m]``: the fewest top principal directions (uncentred) holding ``energy`` of the
    preserve activations' second moment.

    Args:
        activations: ``[n, d]`` inputs the edit must leave alone (token rows or pooled rows of benign prompts).
            Uncentred on purpose: the constraint is ``W' x = W x`` for the inputs themselves, mean included.
        energy: share of ``sum |x|^2`` that V must capture, in (0, 1]. 1 keeps every direction with non-zero
            energy (the strict null space).
        max_rank: cap on m (None: no cap).
    """
    if not isinstance(activations, torch.Tensor) or activations.ndim != 2 or activations.shape[0] == 0:
        raise ValueError(f"activations must be a non-empty [n, d] tensor, got {getattr(activations, 'shape', type(activations))}")
    if not 0.0 < float(energy) <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}; 0.99 keeps 99 % of the preserve set's energy")
    if max_rank is not None and max_rank < 1:
        raise ValueError(f"max_rank must be >= 1 or None, got {max_rank}")
    x = cpu_float64(activations)
    if not torch.isfinite(x).all():
        raise ValueError("activations contain NaN or Inf")
    _, s, vh = torch.linalg.svd(x, full_matrices=False)  # x = U S V^T; right singular vectors span the rows
    power = s ** 2
    total = float(power.sum())
    if total <= 0:
        raise ValueError("activations are all zero: there is nothing to preserve")
    nonzero = int((s > 1e-10 * s[0]).sum())
    cumulative = torch.cumsum(power, 0) / total
    m = nonzero if energy >= 1.0 else min(int((cumulative < energy - 1e-12).sum()) + 1, nonzero)
    if max_rank is not None:
        m = min(m, max_rank)
    return vh[:m].T.contiguous()  # [d, m]


def constrain(subspace: torch.Tensor, span: torch.Tensor, *, tol: float = 1e-3) -> torch.Tensor:
    """Orthonormal Q ``[d, k']`` spanning ``(I - V V^T) U``: the concept subspace without the preserve span.

    Q is the left singular vectors of ``(I - V V^T) U`` (U's columns scaled to length 1) whose singular value is
    above what the inputs' precision resolves, ``sqrt(d)`` times the machine epsilon of the coarser of U's and V's
    types (1e-10 at the least). A direction that two columns of U share outside V is kept once, not a second time
    as their rounding noise (an orthonormal float32 U whose first two columns differ only by a preserve direction
    gave 3 columns, one of them noise, with the unpivoted QR used until 2026-12-06), and no direction loses part of
    itself to such noise (with that QR, 0.3-0.6 % of the span in float64).

    Args:
        subspace: U ``[d, k]`` (or one vector ``[d]``), the concept directions (any scale).
        span: orthonormal V ``[d, m]`` from :func:`preserve_span`.
        tol: a direction of U whose part outside V is shorter than ``tol`` times its length is dropped (it lies
            in the preserve span; removing its remainder would only remove noise).

    Returns:
        Q with ``Q^T Q = I`` and ``V^T Q = 0``; ``[d, 0]`` when U lies inside V entirely.
    """
    u = subspace[:, None] if subspace.ndim == 1 else subspace
    if u.ndim != 2 or span.ndim != 2 or u.shape[0] != span.shape[0]:
        raise ValueError(f"subspace [d, k] and span [d, m] must share d, got {tuple(subspace.shape)} and "
                         f"{tuple(span.shape)}")
    coarse = [t.dtype for t in (u, span) if t.dtype.is_floating_point]
    resolved = max([1e-10] + [math.sqrt(u.shape[0]) * torch.finfo(dtype).eps for dtype in coarse])
    u = cpu_float64(u)
    v = cpu_float64(span)
    u = u / u.norm(dim=0).clamp_min(1e-300)  # directions: [d, k], columns of length 1 (0 stays 0)
    outside = u - v @ (v.T @ u)  # [d, k]
    outside = outside[:, outside.norm(dim=0) > tol]
    if outside.shape[1] == 0:
        return outside.to(torch.float32)
    left, singular, _ = torch.linalg.svd(outside, full_matrices=False)  # [d, k'], [k']
    q = left[:, singular > resolved]
    q = q - v @ (v.T @ q)  # once more against round-off
    q, _ = torch.linalg.qr(q)
    q = q * torch.where(q.T @ outside.sum(1) < 0, -1.0, 1.0)  # deterministic signs: along the columns' sum
    return q.to(torch.float32).contiguous()


def leakage(subspace: torch.Tensor, activations: torch.Tensor) -> float:
    """Share of the activations' energy inside the subspace, ``sum |Q^T x|^2 / sum |x|^2``: what a full projection
    edit on Q would remove from these inputs (0 for inputs the edit leaves unchanged)."""
    q = subspace[:, None] if subspace.ndim == 1 else subspace
    x = cpu_float64(activations)
    q = cpu_float64(q)
    total = float((x ** 2).sum())
    return float(((x @ q) ** 2).sum()) / total if total > 0 else 0.0
