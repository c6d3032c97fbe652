"""Low-rank refusal vectors: from paired activations to a frozen per-layer edit direction.

For each layer the fitter holds, for N prompt pairs (and any number of timesteps per pair), the
activation ``u`` of the prompt with the concept and ``s`` of the same prompt without it. Then

    r = mean(u - s)                                          the refusal vector           [d]
    C = mean((u - s)(u - s)^T) - alpha * Cov(neutral)        contrastive statistics        [d, d]
    U = top-k eigenvectors of C with eigenvalue > 0          concept subspace              [d, k'], k' <= k
    d = U U^T r / |U^T r|                                    edit direction                [d]

(Facchiano et al. 2025, "Video Unlearning via Low-Rank Refusal Vector"; contrastive PCA after
Abid et al. 2018). U holds directions where unsafe and safe differ more than neutral prompts vary, so an
eigenvector whose eigenvalue is not positive is left out even when fewer than k remain: with 5 pairs the text
side has 5 such directions, and a rank-16 subspace padded with 11 directions of neutral variation cost the
organism 29 points of attribute accuracy. The pair statistics are the *uncentred* second moment of the differences: with
a handful of pairs, centring would throw away the mean shift that is the concept itself (see
``shared/method.md``, "a measured caution"). ``C`` is never formed as a dense ``d x d`` matrix
while the number of samples is below ``d``: its non-null eigenvectors lie in the span of the
samples, so the eigenproblem is solved in that span (O(n d) memory).

The result is one frozen record (:class:`~core.basis.LayerRefusal`) per *input*, in a
:class:`~core.basis.RefusalBasis` (``core.basis``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from .basis import (EDITS, FIT_REVISION, SPAN_TOLERANCE, LayerRefusal, LayerScore, RefusalBasis,
                    _orthonormal_columns)
from .devices import cpu_float64
from .pairs import PromptPair

# Re-exported for scripts, tests and README, which import them from here (bench/check_validation.py,
# tests/core/test_serialization.py): every name core.refusal defined before the frozen basis moved to core.basis.
__all__ = [
    "EDITS", "FIT_REVISION", "METHODS", "PAIR_SHIFT_FLOOR", "POSITIVE_CONTRAST", "SCORE_DIGITS", "SPAN_TOLERANCE",
    "LayerRefusal", "LayerScore", "NoContrastError", "RefusalBasis", "RefusalFitter", "pair_notes",
]

logger = logging.getLogger(__name__)

METHODS = ("cpca", "mean")
#: An eigenvalue of C counts as positive above this share of ``trace(C_r) + alpha trace(C_e)``: below it lie the
#: rounding errors (1e-16 relative) of directions in which neither the pairs differ nor the neutral prompts vary.
POSITIVE_CONTRAST = 1e-9


class NoContrastError(ValueError):
    """An input with no direction of positive contrast: the pairs differ less, along every direction, than alpha
    times the neutral prompts vary. :meth:`RefusalFitter.fit` gathers these into one message."""

    def __init__(self, source: str, largest: float):
        super().__init__(f"{source!r}: no direction of positive contrast (largest eigenvalue {largest:.3g})")
        self.source, self.largest = source, largest


class RefusalFitter:
    """Accumulates paired activations per input; ``fit`` returns a frozen :class:`RefusalBasis`.

    Statistics are kept per *input*: usually a layer's own input, named by the layer. Layers that read one
    and the same tensor (on Wan every block's text-side ``cross_attn.k`` and ``cross_attn.v`` read the projected
    text context) are declared with :meth:`share`; their input is then measured once and fitted once, and every
    one of those layers maps to the same record.

    Memory is O(n d) per input for n pooled samples: the rows are kept (in float64) because the
    contrastive eigenproblem is solved in their span.
    """

    def __init__(self) -> None:
        self._unsafe: dict[str, list[torch.Tensor]] = {}
        self._safe: dict[str, list[torch.Tensor]] = {}
        self._neutral: dict[str, list[torch.Tensor]] = {}
        self._dims: dict[str, int] = {}
        self._sources: dict[str, str] = {}  # layer -> the input it reads (its own name unless shared), in order
        self._undeclared: set[str] = set()  # layers added by update() alone, not by share()

    @property
    def layers(self) -> list[str]:
        """Every layer that can be fitted, in the order they were declared or first updated."""
        return list(self._sources)

    def share(self, source: str, layers: Sequence[str]) -> "RefusalFitter":
        """Declare that ``layers`` read the input whose activations are given under the name ``source``.

        ``source`` names the input (e.g. ``"text_embedding"`` for the output of Wan's text projection);
        ``share(name, [name])`` declares an ordinary layer that reads its own input (it only fixes its order).
        """
        if not isinstance(source, str) or not source:
            raise ValueError(f"share(): the input name must be a non-empty str, got {source!r}")
        layers = list(dict.fromkeys(layers))
        if not layers:
            raise ValueError(f"share({source!r}, ...): give at least one layer that reads this input")
        for layer in layers:
            if self._sources.get(layer, source) != source:
                raise ValueError(f"layer {layer!r} already reads input {self._sources[layer]!r}; it cannot also "
                                 f"read {source!r}")
            if layer != source and layer in self._sources.values():
                raise ValueError(f"{layer!r} names an input read by other layers; it cannot read {source!r}")
        if source in self._undeclared and source not in layers:
            del self._sources[source]  # updated before it was declared an input: not a layer of its own
        self._undeclared.discard(source)
        for layer in layers:
            self._sources[layer] = source
            self._undeclared.discard(layer)
        return self

    def shared_inputs(self) -> dict[str, list[str]]:
        """Input name -> the declared layers that read it, for inputs read by more than one layer."""
        groups: dict[str, list[str]] = {}
        for layer, source in self._sources.items():
            groups.setdefault(source, []).append(layer)
        return {source: layers for source, layers in groups.items() if len(layers) > 1}

    def _check(self, layer: str, x: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} for layer {layer!r} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"{what} for layer {layer!r} must be [n, d], got shape {tuple(x.shape)}")
        x = cpu_float64(x)
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} for layer {layer!r} contains NaN or Inf; check the model's forward")
        dim = self._dims.setdefault(layer, x.shape[1])
        if x.shape[1] != dim:
            raise ValueError(f"{what} for layer {layer!r} has width {x.shape[1]}, earlier updates had {dim}")
        return x

    def _declare(self, source: str) -> None:
        if source not in self._sources and source not in self._sources.values():
            self._sources[source] = source
            self._undeclared.add(source)

    def update(self, layer: str, unsafe: torch.Tensor, safe: torch.Tensor) -> "RefusalFitter":
        """Add paired activations of ``layer`` (or of a shared input's name): row i of ``unsafe`` ``[n, d]``
        pairs with row i of ``safe`` ``[n, d]`` (same prompt pair, same noise, same timestep)."""
        unsafe = self._check(layer, unsafe, "unsafe activations")
        safe = self._check(layer, safe, "safe activations")
        if unsafe.shape != safe.shape:
            raise ValueError(
                f"layer {layer!r}: unsafe {tuple(unsafe.shape)} and safe {tuple(safe.shape)} must have the "
                "same shape, one row per pair"
            )
        self._declare(layer)
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
        edit: str = "direction",
        concept: str = "",
        pairs: Sequence[PromptPair | tuple[str, str]] = (),
        model_family: str = "",
        model_fingerprint: str = "",
        layers: Sequence[str] | None = None,
    ) -> "RefusalBasis":
        """Freeze the statistics into a :class:`RefusalBasis`; each input is fitted once.

        Args:
            rank: k, the largest size of the contrastive subspace U. The paper uses k = 100 with many
                samples per pair. U keeps only directions of positive contrast (where the pairs differ more than
                alpha times the neutral prompts vary): at most one per distinct pair difference, so with 5 text-side
                pairs at most 5. Inputs where fewer than k remain are logged; none is an error.
            alpha: weight of the neutral covariance; 0 gives plain (uncentred) PCA of the pair
                differences, larger values push the subspace away from directions along which
                ordinary prompts vary. Without neutral activations the safe side stands in.
            method: ``"cpca"`` (contrastive subspace, then project r on it) or ``"mean"`` (the
                raw refusal vector r / |r|, the paper's "refusal vector alone" ablation).
            edit: what edits remove: ``"direction"`` (the refusal direction, one dimension per input) or
                ``"subspace"`` (the whole contrastive subspace U ``[d, k]``: a broad concept reached through
                many wordings spreads over several directions; costs more collateral per dimension).
            concept, pairs, model_family, model_fingerprint: provenance stored with the result.
            layers: fit only these layers (default: every layer that received pairs or was declared
                with :meth:`share`).
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if edit not in EDITS:
            raise ValueError(f"edit must be one of {EDITS}, got {edit!r}: set the 'edit' widget of Low-Rank Refusal "
                             "Vector to 'direction' (the default) or 'subspace'")
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not self._unsafe:
            raise ValueError("no activations: call update(layer, unsafe, safe) before fit()")
        orphan = sorted(set(self._neutral) - set(self._unsafe))
        if orphan:
            raise ValueError(f"neutral activations for layers without pairs: {orphan}; add pairs or drop them")

        chosen = self.layers if layers is None else list(dict.fromkeys(layers))
        unknown = [layer for layer in chosen if layer not in self._sources]
        if unknown or not chosen:
            raise ValueError(f"cannot fit layers {unknown or chosen}: activations were recorded for {self.layers}")
        empty = [layer for layer in chosen if self._sources[layer] not in self._unsafe]
        if empty:
            raise ValueError(f"layers {empty} read inputs {sorted({self._sources[l] for l in empty})} that received "
                             "no activations; update those inputs or leave the layers out")
        fitted: dict[str, LayerRefusal] = {}
        no_contrast: list[NoContrastError] = []
        sources = list(dict.fromkeys(self._sources[layer] for layer in chosen))
        for source in sources:  # one fit per input, shared by every layer that reads it
            try:
                fitted[source] = _fit_input(*self._stacked(source), rank=rank, alpha=alpha, method=method,
                                            edit=edit, source=source)
            except NoContrastError as error:  # gathered, so that one message names every such input
                no_contrast.append(error)
        if no_contrast:
            named = ", ".join(f"{error.source!r} (largest eigenvalue {error.largest:.3g})" for error in no_contrast)
            raise ValueError(f"no direction where the pairs differ more than alpha={alpha} times the neutral prompts "
                             f"vary, at {len(no_contrast)} of {len(sources)} inputs: {named}. Lower alpha, add "
                             "pairs, or leave those layers out (Collect Activations' layer group and block range)")
        pair_tuples = tuple((p.unsafe, p.safe) if isinstance(p, PromptPair) else (str(p[0]), str(p[1]))
                            for p in pairs)
        basis = RefusalBasis(
            records={layer: fitted[self._sources[layer]] for layer in chosen},
            method=method,
            rank=rank,
            alpha=float(alpha),
            edit=edit,
            concept=concept,
            pairs=pair_tuples,
            model_family=model_family,
            model_fingerprint=model_fingerprint,
            fit_revision=FIT_REVISION,
        )
        _log_narrow_subspaces(basis)
        return basis

    def pair_shifts(self, basis: "RefusalBasis", layers: Sequence[str] | None = None) -> list[float]:
        """How far each pair's two sides lie apart along the fitted direction, as a share of the pairs' mean: ``[n]``
        for the n pairs of ``basis`` (mean over the distinct inputs of ``layers``, default all of ``basis``; rows
        reach the fitter pair-major). About 1 for a pair that carries the concept as the others do; below 0 for one
        whose sides are the other way round *from the majority* (the organism's trademark: -1.4 for one swapped line
        among five), about 0 for one without the concept on either side. Empty when the rows cannot be told apart by
        pair (no pairs recorded in ``basis``) or no input qualifies."""
        n = len(basis.pairs)
        shares = []
        chosen = basis.records.values() if layers is None else [basis[layer] for layer in layers]
        for record in {id(r): r for r in chosen}.values():
            if record.concepts != 1 or record.source not in self._unsafe or n == 0:
                continue
            unsafe, safe, _ = self._stacked(record.source)
            if unsafe.shape[0] % n:
                continue
            along = ((unsafe - safe) @ record.direction.double()).reshape(n, -1).mean(1)  # [n]
            mean = float(along.mean())
            if mean > 0:
                shares.append(along / mean)
        return torch.stack(shares).mean(0).tolist() if shares else []

    def _stacked(self, source: str):
        unsafe = torch.cat(self._unsafe[source])
        safe = torch.cat(self._safe[source])
        neutral = torch.cat(self._neutral[source]) if source in self._neutral else safe
        return unsafe, safe, neutral


#: :func:`pair_notes`: a pair whose shift along the fitted direction is below this share of the pairs' mean is named.
#: On the organism (text-side inputs) a correct pair's lowest share is 0.14 (violence, 42 benchmark pairs; the
#: trademark and red 0.76-0.85), a pair with its sides swapped -1.2..-1.8, one whose sides differ by a full stop only
#: -0.02..0.07.
PAIR_SHIFT_FLOOR = 0.1


def pair_notes(shifts: Sequence[float], pairs: Sequence) -> list[str]:
    """A line per pair whose share of the pairs' mean shift (:meth:`RefusalFitter.pair_shifts`) is below
    :data:`PAIR_SHIFT_FLOOR`, naming its line (``PromptPair.line``) or its number, and what it likely is."""
    notes = []
    for index, (share, pair) in enumerate(zip(shifts, pairs)):
        if share >= PAIR_SHIFT_FLOOR:
            continue
        line = getattr(pair, "line", None)
        where = f"line {line}" if line else f"pair {index + 1}"
        why = ("the other way round from most pairs: are its sides swapped? (unsafe | safe, the concept on the left; "
               "if most pairs are written the other way, they are the ones to swap)"
               if share < 0 else "almost not at all: does its unsafe side show the concept, and its safe side not?")
        notes.append(f"{where}: its sides differ along the concept direction by {share:+.2f} of the pairs' mean, {why}")
    return notes


#: Significant digits kept of a score (:class:`LayerScore`). The float64 sums behind them change in their last
#: 1-2 digits with the CPU's thread count (video-side layers, tiny Wan: contrast 0.43729233956749985 with 1 thread,
#: 0.4372923395674991 with 2), and the scores are written into the vector file's metadata, so its bytes and SHA-256
#: depended on the thread count while every tensor was bit-identical. 12 digits is far below what the scores are
#: read for; a value whose 13th digit sits on a rounding boundary can still flip, which rounding cannot prevent.
SCORE_DIGITS = 12


def _rounded(value: float) -> float:
    return float(f"{value:.{SCORE_DIGITS}g}")


def _fit_input(unsafe, safe, neutral, *, rank: int, alpha: float, method: str, source: str,
               edit: str = "direction") -> LayerRefusal:
    """One input's fit. ``unsafe``, ``safe`` ``[n, d]``, ``neutral`` ``[m, d]``, all float64."""
    n, dim = unsafe.shape
    diffs = unsafe - safe  # [n, d]
    vector = diffs.mean(0)  # r [d]
    r_norm = vector.norm()
    if r_norm <= 1e-12 * max(1.0, float(safe.norm(dim=1).max())):
        raise ValueError(
            f"{source!r}: unsafe and safe activations are identical, so there is no refusal vector; "
            "the pairs do not differ at this layer (check the pairs, or leave this layer out)"
        )
    centred = neutral - neutral.mean(0)
    pair_factor = diffs / math.sqrt(n)  # C_r = A^T A, uncentred  [n, d]
    neutral_factor = centred / math.sqrt(max(neutral.shape[0] - 1, 1))  # C_e = B^T B  [m, d]

    if method == "mean":
        direction = vector / r_norm
        basis = direction[:, None]
    else:
        basis, values = _top_contrastive_eigenvectors(pair_factor, neutral_factor, alpha, rank)  # [d, k], [k]
        scale = float(pair_factor.pow(2).sum() + alpha * neutral_factor.pow(2).sum())
        positive = values > POSITIVE_CONTRAST * scale
        if not bool(positive.any()):
            raise NoContrastError(source, float(values[0]))
        basis = basis[:, positive]  # [d, k'], the positive ones lead the descending order
        basis = basis * torch.where(basis.T @ vector < 0, -1.0, 1.0)  # deterministic signs
        inside = basis.T @ vector  # [k]
        if inside.norm() <= 1e-6 * r_norm:
            raise ValueError(
                f"{source!r}: the contrastive subspace is orthogonal to the refusal vector "
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
        norm=_rounded(float(r_norm)),
        relative_norm=_rounded(float(r_norm) / rms_safe) if rms_safe > 0 else float("inf"),
        contrast=_rounded(along / energy),
        separation=_rounded(separation),
    )
    as32 = lambda t: t.to(torch.float32).contiguous()  # noqa: E731
    direction = as32(direction / direction.norm())
    # U's columns are eigenvectors (orthonormal to 1e-15, strongest contrast first): the subspace edit stores them
    # as they are. Re-orthonormalising them by an SVD, whose singular values are then all 1, returned an arbitrary
    # rotation of them that changed with the number of CPU threads (the same projector, other columns).
    subspace = as32(basis) if edit == "subspace" else _orthonormal_columns(direction[:, None])
    return LayerRefusal(vector=as32(vector), basis=as32(basis), direction=direction, safe_mean=as32(safe.mean(0)),
                        subspace=subspace, score=score, source=source)


def _top_contrastive_eigenvectors(pair_factor, neutral_factor, alpha: float, rank: int):
    """Top-``rank`` eigenvectors of ``A^T A - alpha B^T B`` as ``[d, k]`` and their eigenvalues ``[k]`` (descending),
    float64; the caller drops those that are not positive.

    When there are fewer samples than dimensions the eigenvectors with non-zero eigenvalue lie in
    the row span of ``[A; B]``; solving there costs O((n + m)^2 d) instead of O(d^3). The span is the samples'
    right singular vectors, computed as ``Q W`` from ``samples^T = Q R`` and the SVD of the small ``R^T = U S W^T``
    (the same vectors as an SVD of the samples, 3.5x faster at d = 5120 with 1,000 samples). Until 2026-12-01 the
    span was ``Q`` without the columns whose diagonal entry in ``R`` was small. Such an entry marks a sample that
    adds nothing new, but later samples can still lean on that column, so parts of the neutral rows fell out of the
    span: the result was no eigenvector at all (off by up to 11 degrees on the organism's broad concepts) and moved
    with a CPU's last bits.
    """
    dim = pair_factor.shape[1]
    samples = torch.cat([pair_factor, neutral_factor])  # [n + m, d]
    if samples.shape[0] < dim:
        q, triangle = torch.linalg.qr(samples.T)  # [d, p], [p, p]
        _, singular, w_rows = torch.linalg.svd(triangle.T)  # the samples' singular values; W^T [p, p]
        span = q @ w_rows[singular > 1e-10 * singular.max()].T  # [d, p'], orthonormal
        a, b = pair_factor @ span, neutral_factor @ span  # [n, p'], [m, p']
        small = a.T @ a - alpha * (b.T @ b)
        values, vectors = torch.linalg.eigh(small)
        order = values.argsort(descending=True)[: min(rank, span.shape[1])]
        return span @ vectors[:, order], values[order]
    dense = pair_factor.T @ pair_factor - alpha * (neutral_factor.T @ neutral_factor)
    values, vectors = torch.linalg.eigh(dense)
    order = values.argsort(descending=True)[:rank]
    return vectors[:, order], values[order]


def _log_narrow_subspaces(basis: "RefusalBasis") -> None:
    """Say which inputs kept fewer than ``rank`` directions of positive contrast (a warning when the edit removes
    the whole subspace, whose width is then what the user asked for; otherwise only the direction is edited)."""
    narrow = basis.narrow_inputs()
    if narrow:
        log = logger.warning if basis.edit == "subspace" else logger.info
        log("rank %d: only %s direction(s) of positive contrast at %s; the subspace keeps those (more pairs, or "
            "differently worded ones, give more; a lower alpha too)", basis.rank,
            "/".join(str(width) for width in dict.fromkeys(narrow.values())), ", ".join(narrow))
