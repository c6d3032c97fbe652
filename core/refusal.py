"""Low-rank refusal vectors: from paired activations to a frozen per-layer edit direction.

For each layer the fitter holds, for N prompt pairs (and any number of timesteps per pair), the
activation ``u`` of the prompt with the concept and ``s`` of the same prompt without it. Then

    r = mean(u - s)                                          the refusal vector           [d]
    C = mean((u - s)(u - s)^T) - alpha * Cov(neutral)        contrastive statistics        [d, d]
    U = top-k eigenvectors of C                              concept subspace              [d, k]
    d = U U^T r / |U^T r|                                    edit direction                [d]

(Facchiano et al. 2025, "Video Unlearning via Low-Rank Refusal Vector"; contrastive PCA after
Abid et al. 2018). The pair statistics are the *uncentred* second moment of the differences: with
a handful of pairs, centring would throw away the mean shift that is the concept itself (see
``shared/method.md``, "a measured caution"). ``C`` is never formed as a dense ``d x d`` matrix
while the number of samples is below ``d``: its non-null eigenvectors lie in the span of the
samples, so the eigenproblem is solved in that span (O(n d) memory).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from .pairs import PromptPair

logger = logging.getLogger(__name__)

METHODS = ("cpca", "mean")


@dataclass(frozen=True)
class LayerScore:
    """How strongly a layer carries the concept.

    Attributes:
        norm: |r|, the length of the raw refusal vector.
        relative_norm: |r| divided by the RMS length of the safe activations, comparable across
            layers of different scale.
        contrast: share of the pair differences' second moment that lies along the edit
            direction, minus alpha times the neutral variance there (normalised the same way).
            High means the direction is concept-specific, low means it is shared with ordinary
            variation.
        separation: Cohen's d of unsafe vs. safe activations projected on the edit direction.
            The main "this layer carries the concept" number.
    """

    norm: float
    relative_norm: float
    contrast: float
    separation: float

    def as_dict(self) -> dict[str, float]:
        return {"norm": self.norm, "relative_norm": self.relative_norm, "contrast": self.contrast,
                "separation": self.separation}


class RefusalFitter:
    """Accumulates paired activations per layer; ``fit`` returns a frozen :class:`RefusalBasis`.

    Memory is O(n d) per layer for n pooled samples: the rows are kept (in float64) because the
    contrastive eigenproblem is solved in their span.
    """

    def __init__(self) -> None:
        self._unsafe: dict[str, list[torch.Tensor]] = {}
        self._safe: dict[str, list[torch.Tensor]] = {}
        self._neutral: dict[str, list[torch.Tensor]] = {}
        self._dims: dict[str, int] = {}

    @property
    def layers(self) -> list[str]:
        return list(self._unsafe)

    def _check(self, layer: str, x: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} for layer {layer!r} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"{what} for layer {layer!r} must be [n, d], got shape {tuple(x.shape)}")
        x = x.detach().to("cpu", torch.float64)
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} for layer {layer!r} contains NaN or Inf; check the model's forward")
        dim = self._dims.setdefault(layer, x.shape[1])
        if x.shape[1] != dim:
            raise ValueError(f"{what} for layer {layer!r} has width {x.shape[1]}, earlier updates had {dim}")
        return x

    def update(self, layer: str, unsafe: torch.Tensor, safe: torch.Tensor) -> "RefusalFitter":
        """Add paired activations: row i of ``unsafe`` ``[n, d]`` pairs with row i of ``safe`` ``[n, d]``
        (same prompt pair, same noise, same timestep)."""
        unsafe = self._check(layer, unsafe, "unsafe activations")
        safe = self._check(layer, safe, "safe activations")
        if unsafe.shape != safe.shape:
            raise ValueError(
                f"layer {layer!r}: unsafe {tuple(unsafe.shape)} and safe {tuple(safe.shape)} must have the "
                "same shape, one row per pair"
            )
        self._unsafe.setdefault(layer, []).append(unsafe)
        self._safe.setdefault(layer, []).append(safe)
        return self

    def update_neutral(self, layer: str, x: torch.Tensor) -> "RefusalFitter":
        """Add activations ``[m, d]`` of neutral prompts; their covariance is the contrast."""
        self._neutral.setdefault(layer, []).append(self._check(layer, x, "neutral activations"))
        return self

    def fit(
        self,
        rank: int = 4,
        alpha: float = 1.0,
        method: str = "cpca",
        *,
        concept: str = "",
        pairs: Sequence[PromptPair | tuple[str, str]] = (),
        model_family: str = "",
        model_fingerprint: str = "",
        layers: Sequence[str] | None = None,
    ) -> "RefusalBasis":
        """Freeze the statistics into a :class:`RefusalBasis`.

        Args:
            rank: k, the size of the contrastive subspace U. The paper uses k = 100 with many
                samples per pair; with pooled samples k is capped by the number of samples.
            alpha: weight of the neutral covariance; 0 gives plain (uncentred) PCA of the pair
                differences, larger values push the subspace away from directions along which
                ordinary prompts vary. Without neutral activations the safe side stands in.
            method: ``"cpca"`` (contrastive subspace, then project r on it) or ``"mean"`` (the
                raw refusal vector r / |r|, the paper's "refusal vector alone" ablation).
            concept, pairs, model_family, model_fingerprint: provenance stored with the result.
            layers: fit only these layers (default: every layer that received pairs).
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not self._unsafe:
            raise ValueError("no activations: call update(layer, unsafe, safe) before fit()")
        orphan = sorted(set(self._neutral) - set(self._unsafe))
        if orphan:
            raise ValueError(f"neutral activations for layers without pairs: {orphan}; add pairs or drop them")

        chosen = list(self._unsafe) if layers is None else list(dict.fromkeys(layers))
        unknown = [layer for layer in chosen if layer not in self._unsafe]
        if unknown or not chosen:
            raise ValueError(f"cannot fit layers {unknown or chosen}: activations were recorded for {self.layers}")
        fitted = {layer: _fit_layer(*self._stacked(layer), rank=rank, alpha=alpha, method=method, layer=layer)
                  for layer in chosen}
        pair_tuples = tuple((p.unsafe, p.safe) if isinstance(p, PromptPair) else (str(p[0]), str(p[1]))
                            for p in pairs)
        return RefusalBasis(
            layers=list(fitted),
            vectors={k: v.vector for k, v in fitted.items()},
            bases={k: v.basis for k, v in fitted.items()},
            directions={k: v.direction for k, v in fitted.items()},
            safe_means={k: v.safe_mean for k, v in fitted.items()},
            scores={k: v.score for k, v in fitted.items()},
            method=method,
            rank=rank,
            alpha=float(alpha),
            concept=concept,
            pairs=pair_tuples,
            model_family=model_family,
            model_fingerprint=model_fingerprint,
        )

    def _stacked(self, layer: str):
        unsafe = torch.cat(self._unsafe[layer])
        safe = torch.cat(self._safe[layer])
        neutral = torch.cat(self._neutral[layer]) if layer in self._neutral else safe
        return unsafe, safe, neutral


@dataclass(frozen=True)
class _LayerFit:
    vector: torch.Tensor
    basis: torch.Tensor
    direction: torch.Tensor
    safe_mean: torch.Tensor
    score: LayerScore


def _fit_layer(unsafe, safe, neutral, *, rank: int, alpha: float, method: str, layer: str) -> _LayerFit:
    """One layer's fit. ``unsafe``, ``safe`` ``[n, d]``, ``neutral`` ``[m, d]``, all float64."""
    n, dim = unsafe.shape
    diffs = unsafe - safe  # [n, d]
    vector = diffs.mean(0)  # r [d]
    r_norm = vector.norm()
    if r_norm <= 1e-12 * max(1.0, float(safe.norm(dim=1).max())):
        raise ValueError(
            f"layer {layer!r}: unsafe and safe activations are identical, so there is no refusal vector; "
            "the pairs do not differ at this layer (check the pairs, or leave this layer out)"
        )
    centred = neutral - neutral.mean(0)
    pair_factor = diffs / math.sqrt(n)  # C_r = A^T A, uncentred  [n, d]
    neutral_factor = centred / math.sqrt(max(neutral.shape[0] - 1, 1))  # C_e = B^T B  [m, d]

    if method == "mean":
        direction = vector / r_norm
        basis = direction[:, None]
    else:
        basis = _top_contrastive_eigenvectors(pair_factor, neutral_factor, alpha, rank)  # [d, k]
        basis = basis * torch.where(basis.T @ vector < 0, -1.0, 1.0)  # deterministic signs
        inside = basis.T @ vector  # [k]
        if inside.norm() <= 1e-6 * r_norm:
            raise ValueError(
                f"layer {layer!r}: the contrastive subspace is orthogonal to the refusal vector "
                f"(alpha={alpha}, rank={rank}); lower alpha or raise rank"
            )
        direction = basis @ inside / inside.norm()

    u_proj, s_proj = unsafe @ direction, safe @ direction
    pooled = math.sqrt(0.5 * (float(u_proj.var(unbiased=False)) + float(s_proj.var(unbiased=False))))
    shift = float(u_proj.mean() - s_proj.mean())
    separation = shift / pooled if pooled > 1e-12 * abs(shift) else math.copysign(1e6, shift)
    energy = float((diffs ** 2).sum(1).mean())
    along = float(((diffs @ direction) ** 2).mean()) - alpha * float((centred @ direction).pow(2).sum()
                                                                    / max(neutral.shape[0] - 1, 1))
    rms_safe = float(safe.pow(2).sum(1).mean().sqrt())
    score = LayerScore(
        norm=float(r_norm),
        relative_norm=float(r_norm) / rms_safe if rms_safe > 0 else float("inf"),
        contrast=along / energy,
        separation=separation,
    )
    as32 = lambda t: t.to(torch.float32).contiguous()  # noqa: E731
    return _LayerFit(as32(vector), as32(basis), as32(direction / direction.norm()), as32(safe.mean(0)), score)


def _top_contrastive_eigenvectors(pair_factor, neutral_factor, alpha: float, rank: int) -> torch.Tensor:
    """Top-``rank`` eigenvectors of ``A^T A - alpha B^T B`` as ``[d, k]``, float64.

    When there are fewer samples than dimensions the eigenvectors with non-zero eigenvalue lie in
    the row span of ``[A; B]``; solving there costs O((n + m)^2 d) instead of O(d^3).
    """
    dim = pair_factor.shape[1]
    samples = torch.cat([pair_factor, neutral_factor])  # [n + m, d]
    if samples.shape[0] < dim:
        span, r = torch.linalg.qr(samples.T)  # [d, p]
        keep = r.diagonal().abs() > 1e-10 * r.diagonal().abs().max()
        span = span[:, keep]
        a, b = pair_factor @ span, neutral_factor @ span  # [n, p], [m, p]
        small = a.T @ a - alpha * (b.T @ b)
        values, vectors = torch.linalg.eigh(small)
        order = values.argsort(descending=True)[: min(rank, span.shape[1])]
        return span @ vectors[:, order]
    dense = pair_factor.T @ pair_factor - alpha * (neutral_factor.T @ neutral_factor)
    values, vectors = torch.linalg.eigh(dense)
    return vectors[:, values.argsort(descending=True)[:rank]]


def _readonly(mapping) -> MappingProxyType:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class RefusalBasis:
    """Frozen result of :class:`RefusalFitter`: per-layer refusal vectors and edit directions.

    Per-layer tensors (float32, CPU) for a single concept: ``vectors[layer]`` r ``[d]``,
    ``bases[layer]`` U ``[d, k]``, ``directions[layer]`` ``[d]`` (unit), ``safe_means[layer]``
    ``[d]``. A basis combined from c concepts (:meth:`combine`) stacks them: ``vectors``,
    ``directions`` and ``safe_means`` become ``[c, d]``. Edits use :meth:`subspace` ``[d, c]``
    (orthonormal) and :meth:`target` ``[d]``, which work for both.
    """

    layers: list[str]
    vectors: MappingProxyType
    bases: MappingProxyType
    directions: MappingProxyType
    safe_means: MappingProxyType
    scores: MappingProxyType
    method: str = "cpca"
    rank: int = 1
    alpha: float = 1.0
    concept: str = ""
    pairs: tuple = ()
    model_family: str = ""
    model_fingerprint: str = ""
    subspaces: MappingProxyType = field(default=None)

    def __post_init__(self):
        layers = list(self.layers)
        for name in ("vectors", "bases", "directions", "safe_means", "scores"):
            mapping = getattr(self, name)
            missing = [layer for layer in layers if layer not in mapping]
            if missing:
                raise ValueError(f"RefusalBasis.{name} lacks layers {missing}")
            object.__setattr__(self, name, _readonly(mapping))
        if self.subspaces is None:
            subspaces = {layer: _orthonormal_columns(self.directions[layer].reshape(-1, self.dims[layer]).T)
                         for layer in layers}
        else:
            subspaces = self.subspaces
        object.__setattr__(self, "subspaces", _readonly(subspaces))
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))

    @property
    def dims(self) -> dict[str, int]:
        """Width d of each layer's input."""
        return {layer: int(self.bases[layer].shape[0]) for layer in self.layers}

    @property
    def concepts(self) -> int:
        """Number of concepts c stacked in this basis."""
        return int(self.directions[self.layers[0]].reshape(-1, self.dims[self.layers[0]]).shape[0])

    def subspace(self, layer: str) -> torch.Tensor:
        """Orthonormal edit subspace ``[d, c]`` of ``layer``."""
        return self.subspaces[self._known(layer)]

    def target(self, layer: str) -> torch.Tensor:
        """Where the affine edit moves the removed component: the safe mean ``[d]`` (averaged over concepts)."""
        means = self.safe_means[self._known(layer)]
        return means if means.ndim == 1 else means.mean(0)

    def _known(self, layer: str) -> str:
        if layer not in self.subspaces:
            raise KeyError(f"layer {layer!r} is not in this refusal vector; it has {self.layers}")
        return layer

    def select(self, layers: Sequence[str]) -> "RefusalBasis":
        """The same basis restricted to ``layers`` (in that order)."""
        layers = [self._known(layer) for layer in layers]
        if not layers:
            raise ValueError("select() needs at least one layer")
        pick = lambda mapping: {layer: mapping[layer] for layer in layers}  # noqa: E731
        return RefusalBasis(
            layers=layers, vectors=pick(self.vectors), bases=pick(self.bases), directions=pick(self.directions),
            safe_means=pick(self.safe_means), scores=pick(self.scores), method=self.method, rank=self.rank,
            alpha=self.alpha, concept=self.concept, pairs=self.pairs, model_family=self.model_family,
            model_fingerprint=self.model_fingerprint, subspaces=pick(self.subspaces),
        )

    def save(self, path, *, extra_metadata: dict[str, str] | None = None) -> None:
        from .serialization import save_basis

        save_basis(self, path, extra_metadata=extra_metadata)

    @classmethod
    def load(cls, path) -> "RefusalBasis":
        from .serialization import load_basis

        return load_basis(path)

    @classmethod
    def combine(cls, bases: Sequence["RefusalBasis"]) -> "RefusalBasis":
        """Erase several concepts at once: stack their directions per layer and re-orthonormalise.

        Layers present in only some of the bases keep the directions of those. All bases must
        come from the same model family (and, where recorded, the same weights).
        """
        bases = list(bases)
        if len(bases) < 2:
            raise ValueError(f"combine() needs at least two refusal vectors, got {len(bases)}")
        families = {b.model_family for b in bases if b.model_family}
        if len(families) > 1:
            raise ValueError(f"cannot combine refusal vectors of different model families: {sorted(families)}")
        prints = {b.model_fingerprint for b in bases if b.model_fingerprint}
        if len(prints) > 1:
            raise ValueError("cannot combine refusal vectors measured on different weights (fingerprints differ)")
        layers = list(dict.fromkeys(layer for b in bases for layer in b.layers))
        stacked: dict[str, dict[str, list]] = {layer: {"v": [], "u": [], "d": [], "m": [], "s": []} for layer in layers}
        for b in bases:
            for layer in b.layers:
                entry = stacked[layer]
                if entry["u"] and entry["u"][0].shape[0] != b.dims[layer]:
                    raise ValueError(f"layer {layer!r} has width {b.dims[layer]} in {b.concept!r} but "
                                     f"{entry['u'][0].shape[0]} in an earlier refusal vector")
                d = b.dims[layer]
                entry["v"].append(b.vectors[layer].reshape(-1, d))
                entry["u"].append(b.bases[layer])
                entry["d"].append(b.directions[layer].reshape(-1, d))
                entry["m"].append(b.safe_means[layer].reshape(-1, d))
                entry["s"].append(b.scores[layer])
        best = lambda scores: max(scores, key=lambda s: abs(s.separation))  # noqa: E731
        return cls(
            layers=layers,
            vectors={k: torch.cat(e["v"]) for k, e in stacked.items()},
            bases={k: _orthonormal_columns(torch.cat(e["u"], dim=1)) for k, e in stacked.items()},
            directions={k: torch.cat(e["d"]) for k, e in stacked.items()},
            safe_means={k: torch.cat(e["m"]) for k, e in stacked.items()},
            scores={k: best(e["s"]) for k, e in stacked.items()},
            method="+".join(dict.fromkeys(b.method for b in bases)),
            rank=max(b.rank for b in bases),
            alpha=bases[0].alpha,
            concept=" + ".join(b.concept or "?" for b in bases),
            pairs=tuple(p for b in bases for p in b.pairs),
            model_family=next(iter(families), ""),
            model_fingerprint=next(iter(prints), ""),
            subspaces={k: _orthonormal_columns(torch.cat(e["d"]).T) for k, e in stacked.items()},
        )


def _orthonormal_columns(matrix: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis ``[d, c']`` of the columns of ``matrix`` ``[d, c]``; near-dependent columns
    (concepts whose directions coincide) are merged rather than amplified into noise."""
    m = matrix.to(torch.float64)
    if m.shape[1] == 1:
        return (m / m.norm()).to(torch.float32).contiguous()
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    keep = s > tol * s.max()
    if int(keep.sum()) < m.shape[1]:
        logger.info("combined directions are nearly dependent: keeping %d of %d", int(keep.sum()), m.shape[1])
    basis = u[:, keep]
    # Deterministic signs: each column points along the sum of the input columns.
    basis = basis * torch.where(basis.T @ m.sum(1) < 0, -1.0, 1.0)
    return basis.to(torch.float32).contiguous()
