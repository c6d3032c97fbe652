"""Unlearning audit: what a model that arrives edited has lost of a concept, read against the model it came from.

Unlearning Check (:mod:`core.check`) applies one refusal vector's edit itself, strength by strength. A model edited
elsewhere, such as a LoRA the pack exported and a loader applied, a checkpoint saved with the edit baked in, a merge, or
another method's fine-tune of the same architecture, can only be compared with its original: both run on the same rows
with the same noise and timesteps, and the edited model's predictions are read against the original's
(:class:`~core.check_baseline.Baseline`) with the check's own figures (:mod:`core.check_figures`):

- **removed**: the share of the validation pairs' unsafe-minus-safe prediction difference that is gone
  (``1 - survival``; above 1 when the sides cross, below 0 when they differ more);
- **collateral**: how far the benign prompts' predictions move, in units of their natural variation; with the
  sampler's negative prompt and cfg also **guided collateral**, on what the sampler combines;
- **toward the concept**: how far the safe sides move toward the unsafe ones (a removal figure cannot tell removing
  the concept from adding it to everything);
- **removed per script**, when the validation pairs span 2 or more writing systems.

No refusal vector is needed, so the audit reads any edit of the same model, whoever made it. What it does not do:
say whether the edit is *good*. Its figures are the check's proxies of one small latent and a few timesteps. On the
organism (``bench/audit_validation.py``, docs/benchmarks.md) they rank other methods' edits (UCE, fine-tunes, weight
noise) as generating does, removal against the concept-rate drop at Spearman 0.84-0.97, but their levels are not
the pack's: UCE and fine-tune edits that read 96 % removed still drew the concept in 76-86 % of the videos that
showed it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .check import NEGATIVE_CARRIES_CONCEPT, Forward, _chunks, _prediction, _rows, _script_groups, measure_baseline
from .check_baseline import Baseline
from .check_figures import (guided_collateral, negative_concept_share, pairs_survival, prediction_proxies,
                            toward_concept)
from .recommend import REMOVED, TOWARD_CONCEPT_LIMIT


#: :meth:`AuditResult.warnings`: an edited model whose pairs' difference is larger than the original's by more than this
#: share is more likely the original connected as the edited one than an edit (a margin over rounding, set before
#: measuring). Removal alone cannot tell: it projects the edited model's difference on the original's, and the
#: original's on a small residual reads as removed.
SWAPPED_MODELS = 0.1


@dataclass(frozen=True)
class AuditResult:
    """The edited model's figures against the original's (each defined in :mod:`core.check_figures`)."""

    removed: float
    collateral: float
    toward_concept: float
    #: ``|D_edited| / |D_original|`` over the validation pairs' prediction differences: their size, where removal is
    #: their projection (1 = as large as before)
    difference_ratio: float
    pairs: int
    benign: int
    forwards: int
    #: with the negative prompt's row and the sampler's cfg
    collateral_guided: float | None = None
    guidance: float | None = None
    #: how much the negative prompt moves like the concept's prompts (None without a negative, or when the pairs
    #: cannot tell)
    negative_concept_share: float | None = None
    #: ``((script, pairs, removed), ...)``, only when the validation pairs span 2 or more scripts
    removed_by_script: tuple[tuple[str, int, float], ...] = ()
    #: each validation pair's removed share on its own (:func:`pairs_survival` of that pair, subtracted from 1), for
    #: scripts: not in the table or the warnings, since on other methods' edits it did not tell which pairs keep the
    #: concept (docs/benchmarks.md, "Which validation pair keeps the concept?")
    removed_by_pair: tuple[float, ...] = ()

    @property
    def negative_carries_concept(self) -> bool:
        share = self.negative_concept_share
        return share is not None and share >= NEGATIVE_CARRIES_CONCEPT

    @property
    def collateral_read(self) -> str:
        """What :attr:`headline_collateral` is: ``guided``, ``conditional`` (a negative that carries the concept moves
        with it, so guided collateral would count that move on every benign prompt) or ``collateral`` (no negative)."""
        if self.collateral_guided is None:
            return "collateral"
        return "conditional" if self.negative_carries_concept else "guided"

    @property
    def headline_collateral(self) -> float:
        """The collateral the audit leads with: guided where it can be read, else the conditional prediction's."""
        return self.collateral_guided if self.collateral_read == "guided" else self.collateral

    def warnings(self) -> list[str]:
        """Lines on what the figures alone would hide: the concept added instead of removed, a negative prompt that
        carries the concept, a script whose pairs keep the concept while the pooled share reads removed."""
        lines = []
        # removed >= 1: the sides crossed (an edit past full removal also grows the difference, reversed)
        if self.difference_ratio > 1.0 + SWAPPED_MODELS and self.removed < 1.0:
            lines.append("WARNING: the edited model's pairs differ more than the original's "
                         f"({self.difference_ratio:.2f} times as much) without their sides crossing: are "
                         "original_model and edited_model swapped, or does the edit strengthen the concept?")
        if self.toward_concept > TOWARD_CONCEPT_LIMIT:
            lines.append("WARNING: the edited model moves the validation pairs' safe prompts "
                         f"{self.toward_concept:.0%} of the way toward their unsafe ones (safe->concept): it adds "
                         "the concept to prompts without it rather than removing it from prompts with it")
        if self.negative_carries_concept:
            # An edit made elsewhere can move an empty negative that far (UCE at its default erase scale on the
            # organism, bench/audit_validation.py): the move alone cannot say which cause it is.
            share = self.negative_concept_share
            lines.append(f"WARNING: the negative prompt moves like the concept's prompts ({share:.2f} of their extra "
                         "move): either it names the concept and the edit removed it from the negative "
                         "too, or the edit moves prompts without the concept as far as prompts with it (an empty "
                         "negative names nothing). Collateral is read on the conditional prediction"
                         + ("" if self.collateral_guided is None else "; guided collateral, which counts the "
                            f"negative's move, is {self.collateral_guided:.3f}"))
        if self.removed >= REMOVED:
            behind = [(script, pairs, share) for script, pairs, share in self.removed_by_script if share < REMOVED]
            if behind:
                listed = " and ".join(f"{script} ({share:.0%}, {pairs} pairs)" for script, pairs, share in behind)
                lines.append(f"WARNING: {self.removed:.0%} of the pairs' difference is removed pooled, but less than "
                             f"{REMOVED:.0%} of the pairs written in {listed}")
        return lines

    def table(self) -> str:
        """The audit as text, one figure per line."""
        lines = [f"removed: {self.removed:.1%} of the validation pairs' difference ({self.pairs} pairs; what is left "
                 f"is {self.difference_ratio:.2f} of its size)",
                 f"collateral: {self.collateral:.3f} (benign prompts' move in units of their spread, "
                 f"{self.benign} prompts; 0 = unchanged, 1 = as far as another benign prompt)"]
        if self.collateral_guided is not None:
            lines.append(f"guided collateral: {self.collateral_guided:.3f} (cfg {self.guidance:g}"
                         + (", not read: the negative moves like the concept's prompts)"
                            if self.negative_carries_concept else ")"))
        lines.append(f"toward the concept: {self.toward_concept:.1%} (safe sides' move toward the unsafe ones)")
        if self.removed_by_script:
            lines.append("removed by script: " + ", ".join(f"{script} {share:.0%} ({pairs} pairs)"
                                                           for script, pairs, share in self.removed_by_script))
        lines.append(f"forwards: {self.forwards} (original and edited model)")
        return "\n".join(lines + self.warnings())

    def as_dict(self) -> dict:
        return {"removed": self.removed, "collateral": self.collateral, "collateral_guided": self.collateral_guided,
                "guidance": self.guidance, "collateral_read": self.collateral_read,
                "headline_collateral": self.headline_collateral, "toward_concept": self.toward_concept,
                "difference_ratio": self.difference_ratio, "negative_concept_share": self.negative_concept_share,
                "removed_by_script": [{"script": script, "pairs": pairs, "removed": share}
                                      for script, pairs, share in self.removed_by_script],
                "pairs": self.pairs, "benign": self.benign, "forwards": self.forwards, "warnings": self.warnings()}


def audit_predictions(baseline: Baseline, predictions: torch.Tensor, *, guidance: float | None = None,
                      groups: dict[str, list[int]] | None = None, forwards: int = 0) -> AuditResult:
    """The audit of an edited model's ``predictions`` ``[rows, ...]`` on the rows of the original's ``baseline``.

    ``guidance`` (the sampler's cfg) needs the baseline's negative row; ``groups``: ``{script: pair indices}`` of
    the validation pairs (2 or more scripts), for removal per script."""
    survival, collateral = prediction_proxies(baseline, predictions)
    n, p0, p = baseline.pairs, baseline.predictions, predictions.reshape(baseline.predictions.shape)
    energy = float((p0[:n] - p0[n:2 * n]).pow(2).sum())
    ratio = (float((p[:n] - p[n:2 * n]).pow(2).sum()) / energy) ** 0.5 if energy > 0 else 1.0
    guided = None if guidance is None else guided_collateral(baseline, predictions, guidance)
    share = negative_concept_share(baseline, predictions) if baseline.negative else None
    by_script = tuple((script, len(indices), 1.0 - pairs_survival(baseline, predictions, indices))
                      for script, indices in (groups or {}).items())
    by_pair = tuple(1.0 - pairs_survival(baseline, predictions, [pair]) for pair in range(n))
    return AuditResult(removed=1.0 - survival, collateral=collateral,
                       toward_concept=toward_concept(baseline, predictions), difference_ratio=ratio,
                       pairs=baseline.pairs, benign=baseline.benign, forwards=forwards, collateral_guided=guided,
                       guidance=None if guidance is None else float(guidance), negative_concept_share=share,
                       removed_by_script=by_script, removed_by_pair=by_pair)


def run_audit(module: torch.nn.Module, original: Forward, edited: Forward, validation: Sequence, benign: Sequence, *,
              negative=None, guidance: float | None = None, scripts: Sequence[str] | None = None,
              batch_size: int = 64, on_forward: Callable[[], None] | None = None) -> AuditResult:
    """Run the original model (``original(rows, recorder)``, its diffusion ``module``) and the edited one
    (``edited(rows, None)``) on the same rows, then :func:`audit_predictions`.

    Both forwards must use the same noise, timesteps and latent (``core.check.measure_baseline`` says what a forward
    must do). ``negative`` (a row as the forwards read it) with ``guidance`` adds guided collateral. ``scripts``: one
    script per validation pair (:func:`core.scripts.pair_script`), for rows that are not text."""
    if guidance is not None and negative is None:
        raise ValueError("guidance (the sampler's cfg) is read on the negative prompt's row: pass negative=... too")
    baseline = measure_baseline(module, original, validation, benign, [], negative=negative, batch_size=batch_size,
                                on_forward=on_forward)
    rows, _, _, _ = _rows(validation, benign, negative)
    outputs = []
    for chunk in _chunks(rows, batch_size):
        outputs.append(_prediction(edited(chunk, None), len(chunk)))
        if on_forward is not None:
            on_forward()
    return audit_predictions(baseline, torch.cat(outputs), guidance=guidance,
                             groups=_script_groups(validation, scripts),
                             forwards=baseline.forwards + len(outputs))
