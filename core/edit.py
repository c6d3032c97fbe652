"""Closed-form edits of a linear layer ``y = W x + b``, returned in low-rank form.

Input side (the paper's form): the concept lives in what the layer reads, so the layer is made
blind to it,

    W' = W - lambda (W U) U^T                   up = -lambda W U  [out, k],  down = U^T  [k, in]

and, in the affine variant, the removed component is replaced by the safe prompts' mean mu
instead of zero (``shared/method.md``, "where the removed component goes"),

    b' = b + lambda W U U^T mu.

Output side: the concept lives in what the layer writes,

    W' = W - lambda U U^T W,   b' = b - lambda U U^T b (+ lambda U U^T mu).

Inputs orthogonal to U pass unchanged, which is why unrelated prompts are preserved. The edit is
never materialised as a dense copy of W: ``up @ down`` is what a LoRA patch applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .devices import cpu_float64

SIDES = ("input", "output")
#: Where the removed component goes: the safe prompts' mean (affine) or zero (linear projection).
EDIT_TARGETS = ("safe_mean", "zero")


@dataclass(frozen=True)
class LowRankEdit:
    """``W' = W + up @ down``, ``b' = b + bias_delta``.

    Attributes:
        up: ``[out, k]`` float32.
        down: ``[k, in]`` float32.
        bias_delta: ``[out]`` float32, or None when the bias is unchanged.
    """

    up: torch.Tensor
    down: torch.Tensor
    bias_delta: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.up.shape[1])

    def delta(self) -> torch.Tensor:
        """The dense weight change ``[out, in]`` (float32); for tests and small layers only."""
        return self.up @ self.down

    def dense(self, weight: torch.Tensor) -> torch.Tensor:
        """``W + up @ down`` in ``weight``'s dtype and device."""
        if tuple(weight.shape) != (self.up.shape[0], self.down.shape[1]):
            raise ValueError(f"edit is for a [{self.up.shape[0]}, {self.down.shape[1]}] weight, got {tuple(weight.shape)}")
        merged = weight.to(torch.float32) + self.delta().to(weight.device)
        return merged.to(weight.dtype)

    def dense_bias(self, bias: torch.Tensor | None) -> torch.Tensor | None:
        """``b + bias_delta`` (a zero bias stands in for None when there is a delta)."""
        if self.bias_delta is None:
            return bias
        base = torch.zeros_like(self.bias_delta) if bias is None else bias.to(torch.float32)
        merged = base + self.bias_delta.to(base.device)
        return merged if bias is None else merged.to(bias.dtype)


def project_edit(
    weight: torch.Tensor,
    basis: torch.Tensor,
    strength: float = 1.0,
    *,
    bias: torch.Tensor | None = None,
    side: str = "input",
    target: torch.Tensor | None = None,
) -> LowRankEdit:
    """Remove the subspace ``basis`` from what a linear layer reads (or writes).

    Args:
        weight: W ``[out, in]`` of the layer (any float dtype; computed in float64).
        basis: orthonormal U ``[in, k]`` (``[out, k]`` for ``side="output"``), or one unit vector.
        strength: lambda >= 0. 1 removes the component fully; between 0 and 1 attenuates it; above
            1 pushes against it. Negative would amplify the concept and is refused.
        bias: b ``[out]``, needed for the output-side edit of a layer with bias.
        side: ``"input"`` or ``"output"``.
        target: mu, the point the removed component is moved to (the safe mean); None moves it
            to zero.

    Returns:
        :class:`LowRankEdit` with ``up [out, k]``, ``down [k, in]``, ``bias_delta [out]`` or None.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ValueError(f"weight must be a 2-D [out, in] tensor, got {getattr(weight, 'shape', type(weight))}")
    strength = float(strength)
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(
            f"strength must be a finite number >= 0, got {strength}; a negative strength would amplify the concept"
        )
    out_dim, in_dim = weight.shape
    u = _orthonormal(basis, out_dim if side == "output" else in_dim, side)  # [n, k] float64
    w = cpu_float64(weight)
    b = None if bias is None else _vector(bias, out_dim, "bias")
    mu = None if target is None else _vector(target, out_dim if side == "output" else in_dim, "target")

    if side == "input":
        wu = w @ u  # [out, k]
        up, down = -strength * wu, u.T
        bias_delta = None if mu is None else strength * (wu @ (u.T @ mu))
    else:
        up, down = -strength * u, u.T @ w  # [out, k], [k, in]
        parts = []
        if b is not None:
            parts.append(-strength * (u @ (u.T @ b)))
        if mu is not None:
            parts.append(strength * (u @ (u.T @ mu)))
        bias_delta = sum(parts) if parts else None

    tensors = [up, down] + ([bias_delta] if bias_delta is not None else [])
    if not all(torch.isfinite(t).all() for t in tensors):
        raise ValueError("the edit contains NaN or Inf; the layer's weight or the refusal vector is not finite")
    as32 = lambda t: t.to(torch.float32).contiguous()  # noqa: E731
    return LowRankEdit(up=as32(up), down=as32(down), bias_delta=None if bias_delta is None else as32(bias_delta))


def require_representable_bias(bias: torch.Tensor | None, bias_delta: torch.Tensor, dtype: torch.dtype,
                               layer: str) -> None:
    """Refuse an edited bias ``b + bias_delta`` that is not finite in float32 or exceeds the largest value of
    ``dtype``, the narrowest dtype the patched bias passes through (where it is held, or computed).

    :func:`project_edit` checks its result in float64, before the float32 cast and before ComfyUI's cast to the
    weight dtype: a finite but huge safe mean (a damaged or hand-edited file) gave an fp16 bias of Inf, so every
    output of the model was NaN, and an fp32 bias moved by 1e28. ``bias`` None stands for a zero bias.
    """
    merged = bias_delta.detach().to("cpu", torch.float32)
    if bias is not None:
        merged = merged + bias.detach().to("cpu", torch.float32)
    limit = torch.finfo(dtype if dtype.is_floating_point else torch.float32).max
    peak = float(merged.abs().max())  # nan when any entry is nan
    if not math.isfinite(peak) or peak > limit:
        raise ValueError(f"layer {layer!r}: the edit would move its bias to {peak:.3g}, beyond the {limit:.3g} its "
                         f"{dtype} can hold (the model's output would be Inf or NaN): the refusal vector's safe mean "
                         "is far outside any activation of this layer, so the file is damaged or hand-edited. "
                         "Compute the vector again (or download it again)")


def _orthonormal(basis: torch.Tensor, dim: int, side: str) -> torch.Tensor:
    if not isinstance(basis, torch.Tensor):
        raise TypeError(f"basis must be a torch.Tensor, got {type(basis).__name__}")
    u = cpu_float64(basis)
    if u.ndim == 1:
        u = u[:, None]
    if u.ndim != 2 or u.shape[0] != dim:
        raise ValueError(
            f"basis of shape {tuple(basis.shape)} does not fit the layer's {side} width {dim}: "
            "the refusal vector was measured on a different layer or model"
        )
    if not torch.isfinite(u).all():
        raise ValueError("basis contains NaN or Inf")
    gram = u.T @ u
    if not torch.allclose(gram, torch.eye(u.shape[1], dtype=torch.float64), atol=1e-4):
        raise ValueError(
            "basis columns must be orthonormal (U^T U = I); use RefusalBasis.subspace(layer), "
            "or orthonormalise with torch.linalg.qr"
        )
    return u


def _vector(t: torch.Tensor, dim: int, what: str) -> torch.Tensor:
    v = cpu_float64(t).reshape(-1)
    if v.shape[0] != dim:
        raise ValueError(f"{what} has {v.shape[0]} entries, the layer needs {dim}")
    return v
