"""The check's figures: what an edit at one strength does to the denoiser's prediction (and, in closed form, to the
edited layers' outputs), each read against the unedited model's :class:`~core.check_baseline.Baseline`.

- **efficacy** (what is left of the concept): the validation pairs' unsafe-minus-safe difference, after the
  edit, projected on the same difference before it ("survival", signed: 1 = untouched, 0 = gone, < 0 = pushed
  past the safe side). Measured in two places:

  - at the edited layers' outputs, in closed form from one recording of their inputs at strength 0. For the
    input-side edit ``W' = W - lambda (W U) U^T`` (bias moved to the target mu), a pair's output difference is
    ``W dx - lambda (W U)(U^T dx)``, so survival is ``1 - lambda a`` with ``a = sum <(W U)(U^T dx), W dx> /
    sum |W dx|^2`` over pairs and layers (pooled over tokens, which a linear layer commutes with). Exact for
    layers whose input the edit does not change (text-side k/v); first order for edited layers downstream of
    other edited layers.
  - in the denoiser's prediction, with one forward per strength on a small latent (nonlinear, so it shows
    saturation and what the model does downstream of the layers): ``survival = sum_i <D_i(lambda), D_i(0)> /
    sum_i |D_i(0)|^2`` with ``D_i = pred(unsafe_i) - pred(safe_i)``, all rows on the same noise.

  ``efficacy = 1 - survival``. Per script of the validation pairs (:mod:`core.scripts`), the same sums over that
  script's pairs (:func:`pairs_survival`): the pooled sums weigh each pair by its difference, so a script's few
  pairs can hide in them.
- **collateral**: how far the benign prompts move, relative to how much they differ from one another (their
  natural variation), at the layers ``lambda |(W U)(U^T (x_b - mu))| / |W (x_b - mean x)|`` (root mean square
  over prompts and layers) and in the prediction ``|pred_b(lambda) - pred_b(0)| / |pred_b(0) - mean_b
  pred_b(0)|``. 0 = unchanged, 1 = as large a change as switching to another benign prompt.
- **guided collateral** (with a negative prompt and the sampler's guidance ``g``): collateral read on what the
  sampler combines, ``G_b = u + g (c_b - u)`` with ``u`` the negative prompt's prediction under the same edit. A
  change that every row shares (cond and uncond alike) reaches ``G`` at ``1 / g`` of what collateral shows; one the
  negative prompt does not see reaches it in full. Efficacy is the same either way (a pair's two sides share ``u``).
  When measured, the recommendation's collateral budget applies to it (:attr:`CheckResult.collateral`): on the
  organism it ranks what generating loses better than collateral (docs/benchmarks.md, "The prediction the sampler uses?").
  Except when the negative prompt carries the concept (:func:`negative_concept_share`, e.g. "nudity, naked"): the
  edit then moves it like the concept's prompts, guided collateral counts that move on every benign prompt (the
  organism's nudity at strength 1: 0.77 against 0.21 with an empty negative, which made the check recommend 0.5,
  leaving the concept in 56 % of clips), and the budget reads the conditional collateral, with a warning.
- two figures of what tells benign prompts apart (:func:`distinction_proxies`: the change they all share dropped),
  reported beside collateral, not used by the recommendation: on the organism they rank attribute loss no better
  than collateral does (docs/benchmarks.md, "Does Unlearning Check predict what generating measures?").
- **keep loss** (with ``keep`` pairs: prompts that differ only in something the edit must leave alone, e.g. "a red
  car" | "a blue car"): the share of the keep pairs' prediction difference the edit removes, measured exactly as
  efficacy is on the validation pairs (:func:`keep_loss`; < 0 when the edit makes them differ more). It asks of
  benign prompts what attribute accuracy asks of generated clips, whether their distinguishing words still work,
  where collateral asks how far they move. Reported for scripts, not used by the recommendation: on the organism it
  ranks attribute loss better than collateral only for violence (0.51 against 0.38) and worse for red and nudity
  (docs/benchmarks.md, "Keep pairs?").
- **toward the concept** (:func:`toward_concept`): how far the validation pairs' *safe* sides move toward their
  unsafe sides, as a share of the pairs' difference (signed; 0 = they stay). Efficacy cannot tell removing the
  concept from adding it: moving the safe side onto the unsafe one shrinks the difference as much as the reverse.
  A vector whose pairs have their sides swapped (``safe | unsafe``) does that with target ``safe_mean``, which then
  moves every prompt's component along the concept to the *concept's* mean: on the organism it added violence to
  21 % of benign prompts while removal read 107 %. An edit that moves them by more than :data:`TOWARD_CONCEPT_LIMIT`
  per unit of strength, at a strength up to full projection (1), is recommended at no strength.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .check_baseline import Baseline
from .check_hooks import _weight
from .basis import RefusalBasis

def layer_proxies(baseline: Baseline, module: torch.nn.Module, basis: RefusalBasis, layers: Sequence[str],
                  strengths: Sequence[float], *, weights: Mapping[str, torch.Tensor] | None = None,
                  target: str = "safe_mean") -> tuple[list[float], list[float]]:
    """Survival and collateral at the edited layers' outputs for every strength, in closed form (no forward).

    Returns ``(survival [strengths], collateral [strengths])``; both are affine in the strength.
    """
    n = baseline.pairs
    removed = kept = moved = spread = 0.0
    for layer in layers:
        w = _weight(module, layer, weights)  # [out, in]
        u = basis.subspace(layer).to(torch.float64)  # [in, c]
        wu = w @ u  # [out, c]
        x = baseline.inputs[layer]
        dx = x[:n] - x[n:2 * n]  # [n, in]
        dy = dx @ w.T  # [n, out]
        kept += float((dy * dy).sum())
        removed += float(((dx @ u) @ wu.T * dy).sum())
        benign = x[baseline.benign_rows]
        mu = (basis.target(layer).to(torch.float64) if target == "safe_mean"
              else torch.zeros(u.shape[0], dtype=torch.float64))
        moved += float((((benign - mu) @ u) @ wu.T).pow(2).sum())
        spread += float(((benign - benign.mean(0)) @ w.T).pow(2).sum())
    a = removed / kept if kept > 0 else 0.0
    c = math.sqrt(moved / spread) if spread > 0 else 0.0
    return [1.0 - s * a for s in strengths], [s * c for s in strengths]


def prediction_proxies(baseline: Baseline, predictions: torch.Tensor) -> tuple[float, float]:
    """``(survival, collateral)`` in the denoiser's prediction for one strength's predictions ``[rows, ...]``."""
    n = baseline.pairs
    p0, p = baseline.predictions, predictions.reshape(baseline.predictions.shape)
    survival = _kept_share(p0[:n] - p0[n:2 * n], p[:n] - p[n:2 * n])
    survival = 1.0 if survival is None else survival
    b0, b = p0[baseline.benign_rows], p[baseline.benign_rows]
    spread = float((b0 - b0.mean(0)).pow(2).sum())
    moved = float((b - b0).pow(2).sum())
    return survival, (math.sqrt(moved / spread) if spread > 0 else 0.0)


def pairs_survival(baseline: Baseline, predictions: torch.Tensor, pairs: Sequence[int]) -> float:
    """Survival in the prediction, as :func:`prediction_proxies` reads it, of the validation pairs at indices
    ``pairs`` only (one strength's predictions ``[rows, ...]``): ``sum_{i in pairs} <D_i(lambda), D_i(0)> /
    sum_{i in pairs} |D_i(0)|^2``. Over every pair it is the pooled survival; over one script's pairs it is that
    script's (:mod:`core.scripts`), which the pooled figure weighs by its pairs' difference and so can hide."""
    n = baseline.pairs
    index = torch.as_tensor(list(pairs), dtype=torch.long)
    if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= n:
        raise ValueError(f"pair indices {list(pairs)} must be non-empty and within the {n} validation pairs")
    p0, p = baseline.predictions, predictions.reshape(baseline.predictions.shape)
    survival = _kept_share((p0[:n] - p0[n:2 * n])[index], (p[:n] - p[n:2 * n])[index])
    return 1.0 if survival is None else survival


def distinction_proxies(baseline: Baseline, predictions: torch.Tensor) -> tuple[float, float]:
    """``(relative movement, distinction loss)`` of the benign prompts in one strength's predictions ``[rows, ...]``.

    Both look only at what tells benign prompts apart, ``C = pred_b - mean_b pred_b`` (the change every benign
    prompt shares is dropped: it moves outputs without confusing one prompt with another):

    - relative movement ``|C(lambda) - C(0)| / |C(0)|``: 0 = their differences are untouched;
    - distinction loss ``1 - sum_i <C_i(lambda), C_i(0)> / sum_i |C_i(0)|^2``: the share of their differences the
      edit removes, signed like efficacy (< 0 when prompts grow more distinct).
    """
    c0 = baseline.predictions[baseline.benign_rows]
    c = predictions.reshape(baseline.predictions.shape)[baseline.benign_rows]
    c0, c = c0 - c0.mean(0), c - c.mean(0)
    energy = float((c0 * c0).sum())
    if energy <= 0:
        return 0.0, 0.0
    return math.sqrt(float((c - c0).pow(2).sum()) / energy), 1.0 - float((c * c0).sum()) / energy


def keep_loss(baseline: Baseline, predictions: torch.Tensor) -> float:
    """The share of the keep pairs' difference ``K_i = pred(a_i) - pred(b_i)`` that one strength's predictions
    ``[rows, ...]`` lose: ``1 - sum_i <K_i(lambda), K_i(0)> / sum_i |K_i(0)|^2``, efficacy's formula on pairs the
    edit should leave alone (0 = kept, 1 = gone, < 0 = they differ more). Guidance scales a pair's difference by
    ``g`` before and after the edit (both sides share the negative prompt's row), so this is also the guided figure."""
    if not baseline.keep:
        raise ValueError("keep loss needs keep pairs: measure the baseline with keep=[(prompt, prompt with one thing "
                         "changed), ...]")
    first, second = baseline.keep_rows
    p0, p = baseline.predictions, predictions.reshape(baseline.predictions.shape)
    kept = _kept_share(p0[first] - p0[second], p[first] - p[second])
    if kept is None:
        raise ValueError("the keep pairs' two sides give the same prediction before the edit: each pair must differ "
                         "(e.g. 'a red car' | 'a blue car')")
    return 1.0 - kept


def toward_concept(baseline: Baseline, predictions: torch.Tensor) -> float:
    """How far one strength's predictions ``[rows, ...]`` move the validation pairs' safe sides toward their unsafe
    sides: ``sum_i <S_i(lambda) - S_i(0), U_i(0) - S_i(0)> / sum_i |U_i(0) - S_i(0)|^2`` (0 = the safe sides stay,
    1 = they reach the unsafe sides, < 0 = they move away). Both sides share the negative prompt's row, so guidance
    scales it alike: it is also the guided figure."""
    n = baseline.pairs
    p0, p = baseline.predictions, predictions.reshape(baseline.predictions.shape)
    share = _kept_share(p0[:n] - p0[n:2 * n], p[n:2 * n] - p0[n:2 * n])
    return 0.0 if share is None else share


def _kept_share(before: torch.Tensor, after: torch.Tensor) -> float | None:
    """``sum_i <after_i, before_i> / sum_i |before_i|^2`` for pair differences ``[pairs, ...]`` before and after an
    edit (survival, signed); None when every difference before is zero."""
    energy = float((before * before).sum())
    return float((after * before).sum()) / energy if energy > 0 else None


def guided_collateral(baseline: Baseline, predictions: torch.Tensor, guidance: float) -> float:
    """Collateral of the guided prediction ``G_b = u + g (c_b - u)`` for one strength's predictions ``[rows, ...]``
    (``u``: the negative prompt's row, which the baseline must have): ``|G_b(lambda) - G_b(0)| / |G_b(0) - mean_b
    G_b(0)|``. At ``g = 1`` it is collateral; a change all rows share counts ``1 / g`` of it."""
    if not baseline.negative:
        raise ValueError("guided collateral needs the negative prompt's row: measure the baseline with negative=...")
    if not (math.isfinite(guidance) and guidance > 0):
        raise ValueError(f"guidance must be a finite number > 0 (the sampler's cfg), got {guidance!r}")
    p0, p = baseline.predictions, predictions.reshape(baseline.predictions.shape)
    rows = baseline.benign_rows
    g0 = p0[-1] + guidance * (p0[rows] - p0[-1])
    g = p[-1] + guidance * (p[rows] - p[-1])
    spread = float((g0 - g0.mean(0)).pow(2).sum())
    return math.sqrt(float((g - g0).pow(2).sum()) / spread) if spread > 0 else 0.0


def negative_concept_share(baseline: Baseline, predictions: torch.Tensor) -> float | None:
    """How much the negative prompt's row moves like the validation pairs' unsafe rows rather than their safe rows,
    for one strength's predictions ``[rows, ...]`` (read at full projection): ``(m_neg - mean_i m_s_i) / (mean_i
    m_u_i - mean_i m_s_i)`` with ``m_neg = |u(lambda) - u(0)|`` (``u`` the negative's row ``[...]``), ``m_u_i =
    |unsafe_i(lambda) - unsafe_i(0)|`` and ``m_s_i = |safe_i(lambda) - safe_i(0)|`` (norms over the prediction).
    0 = it moves like a safe prompt, 1 = like a prompt showing the concept.

    The scale runs from the safe sides, not from the benign prompts: the safe sides share the unsafe sides' wording,
    so only what the concept adds sets the scale (on the tiny Wan the safe sides moved about as much as the unsafe
    ones, 0.127 against 0.129, benign prompts 0.075: scaled from the benign prompts, "a shiny box" read 1.59 and
    "Rolex" -0.50). None when the concept's own move is not detectable: fewer than 2 pairs, or ``d_i = m_u_i -
    m_s_i`` not clearly above 0 in a paired test, ``mean(d) > 2 sd(d) / sqrt(n)`` (``sd`` with ddof 1; with ``sd``
    0, ``mean(d) > 0``): without it the share would read the pairs' noise. None too when ``mean(d)`` is not above
    the spread (sd) of the benign prompts' moves: prompts' wording alone moves them that much apart, so a negative
    naming no concept would read far from 0 (the random tiny Wan: ``mean(d)`` 0.002 against a spread of 0.013, "a
    shiny box" read 17.7 and "a Rolex timepiece" -42; the organism's concepts clear it 2.5-14 times).

    A negative that names the concept ("nudity, naked") loses it under the edit as the unsafe prompts do; guided
    collateral ``|G_b(lambda) - G_b(0)|`` with ``G_b = u + g (c_b - u)`` then counts that move, ``(1 - g) du``, on
    every benign prompt (the organism's nudity at strength 1: 0.77 against 0.21 with an empty negative). At or above
    :data:`NEGATIVE_CARRIES_CONCEPT` the check reads the conditional collateral instead."""
    if not baseline.negative:
        raise ValueError("the negative prompt's share of the concept needs its row: measure the baseline with "
                         "negative=...")
    n = baseline.pairs
    p0, p = baseline.predictions, predictions.reshape(baseline.predictions.shape)
    if n < 2:
        return None
    m_neg = float((p[-1] - p0[-1]).norm())
    m_u = (p[:n] - p0[:n]).reshape(n, -1).norm(dim=1)  # [n]
    m_s = (p[n:2 * n] - p0[n:2 * n]).reshape(n, -1).norm(dim=1)  # [n]
    d = m_u - m_s  # [n]: what the concept adds to each pair's move
    mean, sd = float(d.mean()), float(d.std(correction=1))
    if not (mean > 2 * sd / math.sqrt(n) if sd > 0 else mean > 0):
        return None
    rows = baseline.benign_rows
    m_b = (p[rows] - p0[rows]).reshape(baseline.benign, -1).norm(dim=1)  # [benign]
    if not mean > float(m_b.std(correction=1)):
        return None
    return (m_neg - float(m_s.mean())) / (float(m_u.mean()) - float(m_s.mean()))
