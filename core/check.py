"""Unlearning check: how much of a concept an edit removes and how much else it moves, per strength.

Given a model (any ``torch.nn.Module``), a forward callable that runs it on prompt rows, a refusal basis,
*held-out* validation pairs and benign prompts, the check measures for a grid of strengths lambda
(:mod:`core.strengths`) the figures of :mod:`core.check_figures` (efficacy, collateral, guided collateral, what tells
benign prompts apart, keep loss, how far the safe prompts move toward the concept). This module runs it: the unedited
model once (:func:`measure_baseline`), one forward per strength (:func:`check_strengths`, :func:`run_check`), and the
result (:class:`CheckResult`).

The recommendation (:func:`core.recommend.recommend`) is documented there. Nothing here imports comfy: the caller's
``forward(rows, recorder)`` runs its model (ComfyUI's sampling stack in ``nodes/check.py``, the organism in
``bench/check_validation.py``); edits are applied by output hooks (:class:`core.check_hooks.EditHooks`) that add the
low-rank change, the same maths as the weight patch Apply Unlearning folds in.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .activations import ActivationRecorder
from .check_baseline import Baseline
from .check_figures import (distinction_proxies, guided_collateral, keep_loss, layer_proxies, negative_concept_share,
                            pairs_survival, prediction_proxies, toward_concept)
from .check_hooks import EditHooks, ReplayCache
from .devices import cpu_float64
from .pairs import prompt_digest
from .scripts import pair_script, script_groups
from .recommend import (COLLATERAL_BUDGET, FULL_PROJECTION, REMOVED, TOWARD_CONCEPT_LIMIT, _SWAPPED_REMEDY,
                        _adds_the_concept, _full_projection_index, recommend)
from .basis import RefusalBasis
from .strengths import DEFAULT_STRENGTHS, list_entries, parse_strengths

# Re-exported for scripts, tests and README, which import them from here (bench/check_validation.py, tests/core/
# test_check.py): every name core.check defined before its strength grid, hooks, figures and recommendation moved out.
__all__ = [
    "COLLATERAL_BUDGET", "DEFAULT_STRENGTHS", "FULL_PROJECTION", "NEGATIVE_CARRIES_CONCEPT", "REMOVED",
    "TOWARD_CONCEPT_LIMIT", "Baseline", "CheckResult", "EditHooks", "Forward", "ReplayCache", "check_strengths",
    "distinction_proxies", "guided_collateral", "keep_loss", "layer_proxies", "list_entries", "measure_baseline",
    "negative_concept_share", "overlapping_pairs", "parse_strengths", "prediction_proxies", "recommend", "run_check",
    "toward_concept",
]

#: :func:`negative_concept_share` at or above this: the negative prompt moves under the edit like the concept's prompts
#: do, so it carries the concept and guided collateral counts its own move (the edit removing the concept from the
#: negative) on every benign prompt; the recommendation then reads the conditional collateral. Halfway from a benign
#: prompt's move to the concept prompts', written down before it was measured (not tuned).
NEGATIVE_CARRIES_CONCEPT = 0.5
#: :meth:`CheckResult.pair_line`: up to this many validation pairs, each pair's share is listed.
PAIRS_LISTED = 12
#: :meth:`CheckResult.pair_warning` names at most this many pairs (the least removed first).
PAIRS_LISTED_IN_WARNING = 3
#: A pair's name in the table is its unsafe side cut to this many characters.
PAIR_NAME_CHARACTERS = 40

Forward = Callable[[Sequence, "ActivationRecorder | None"], torch.Tensor]


def overlapping_pairs(estimation: Sequence, validation: Sequence) -> list[tuple[str, str]]:
    """Validation pairs whose prompt showing the concept is also one of the estimation pairs' (the refusal
    vector's), compared case- and whitespace-insensitively (through :func:`core.pairs.prompt_digest`, so a vector
    saved with its pairs as digests is compared too). A check on the pairs the vector was fitted on measures how
    well it fits them, not whether it removes the concept from other wording."""
    seen = {prompt_digest(_pair(pair)[0]) for pair in estimation}
    return [_pair(pair) for pair in validation if prompt_digest(_pair(pair)[0]) in seen]


def _pair(pair) -> tuple[str, str]:
    return (pair.unsafe, pair.safe) if hasattr(pair, "unsafe") else (str(pair[0]), str(pair[1]))


@dataclass(frozen=True)
class CheckResult:
    """The check's measurements per strength and its recommendation (the figures are defined in
    :mod:`core.check_figures`)."""

    strengths: tuple[float, ...]
    survival_layers: tuple[float, ...]
    survival_prediction: tuple[float, ...]
    collateral_layers: tuple[float, ...]
    collateral_prediction: tuple[float, ...]
    recommended: float
    reason: str
    layers: tuple[str, ...]
    label: str = ""
    forwards: int = 0
    extra: dict = field(default_factory=dict)
    relative_movement: tuple[float, ...] = ()
    distinction_loss: tuple[float, ...] = ()
    collateral_guided: tuple[float, ...] = ()
    guidance: float | None = None
    keep_loss: tuple[float, ...] = ()
    toward_concept: tuple[float, ...] = ()
    negative_concept_share: float | None = None
    #: the share was read (the check had the negative prompt's row and a strength above 0): a None share then means
    #: the validation pairs could not tell, not that there was no negative
    negative_share_read: bool = False
    #: the strength the share was read at: full projection (1), else the largest grid strength below it, else the
    #: smallest above it
    negative_share_strength: float | None = None
    #: removal per script of the validation pairs (:mod:`core.scripts`), only when they span 2 or more scripts:
    #: ``((script, pairs, efficacy per strength), ...)``, the largest group first; each efficacy is
    #: :func:`pairs_survival` of the group's pairs, subtracted from 1. The recommendation reads the pooled efficacy.
    removed_by_script: tuple[tuple[str, int, tuple[float, ...]], ...] = ()
    #: removal of each validation pair on its own per strength, ``[pairs][strengths]``: :func:`pairs_survival` of
    #: that pair, subtracted from 1 (docs/benchmarks.md, "Which validation pair keeps the concept?")
    removed_by_pair: tuple[tuple[float, ...], ...] = ()
    #: what the table calls each validation pair: its unsafe side when the pairs are text (the nodes pass it),
    #: else empty and the table numbers them
    pair_names: tuple[str, ...] = ()
    #: the share of the pairs' difference the recommendation counts as removed (:data:`REMOVED`)
    removed_threshold: float = REMOVED

    @property
    def negative_carries_concept(self) -> bool:
        """The negative prompt moves under the edit like the concept's prompts (:func:`negative_concept_share` at
        full projection >= :data:`NEGATIVE_CARRIES_CONCEPT`): guided collateral would count its move as collateral."""
        return self.negative_concept_share is not None and self.negative_concept_share >= NEGATIVE_CARRIES_CONCEPT

    @property
    def collateral(self) -> tuple[float, ...]:
        """The collateral the recommendation used: guided (:func:`guided_collateral`) when the check had the
        negative prompt and the sampler's guidance, else the conditional prediction's. Also the conditional one when
        the negative carries the concept (:attr:`negative_carries_concept`): leaving the negative's own move ``(1 -
        g) du`` out of the guided move leaves ``g dc_b``, whose ratio to the guided spread ``g |c_b - mean c_b|`` is
        the conditional collateral."""
        if self.negative_carries_concept:
            return self.collateral_prediction
        return self.collateral_guided or self.collateral_prediction

    @property
    def efficacy(self) -> tuple[float, ...]:
        """1 - survival in the denoiser's prediction: the share of the validation pairs' difference removed."""
        return tuple(1.0 - s for s in self.survival_prediction)

    @property
    def efficacy_layers(self) -> tuple[float, ...]:
        return tuple(1.0 - s for s in self.survival_layers)

    @property
    def collateral_read(self) -> str:
        """Which collateral :attr:`collateral` is: ``"guided"`` or ``"conditional"``."""
        return "guided" if self.collateral_guided and not self.negative_carries_concept else "conditional"

    def at(self, strength: float) -> dict:
        """The row of ``strength`` (which must be on the grid). Its ``collateral`` is the conditional prediction's
        (:attr:`collateral_prediction`); ``collateral_guided``, when measured, is what :attr:`collateral` returns."""
        index = self._index(strength)
        return {"strength": self.strengths[index], "efficacy": self.efficacy[index],
                "efficacy_layers": self.efficacy_layers[index], "collateral": self.collateral_prediction[index],
                "collateral_layers": self.collateral_layers[index],
                **({"relative_movement": self.relative_movement[index],
                    "distinction_loss": self.distinction_loss[index]} if self.relative_movement else {}),
                **({"collateral_guided": self.collateral_guided[index]} if self.collateral_guided else {}),
                **({"keep_loss": self.keep_loss[index]} if self.keep_loss else {}),
                **({"toward_concept": self.toward_concept[index]} if self.toward_concept else {})}

    def _index(self, strength: float) -> int:
        index = min(range(len(self.strengths)), key=lambda i: abs(self.strengths[i] - strength))
        if abs(self.strengths[index] - strength) > 1e-9:
            raise ValueError(f"strength {strength} is not on the checked grid {list(self.strengths)}")
        return index

    def table(self) -> str:
        """A short fixed-width table, the recommended row marked with ``*``."""
        guided, toward = bool(self.collateral_guided), bool(self.toward_concept)
        head = (f"{'strength':>8} {'removed':>8} {'removed@layers':>14} {'collateral':>10} {'collat@layers':>13}"
                + (f" {'guided':>8}" if guided else "") + (f" {'safe->concept':>13}" if toward else ""))
        lines = [f"{self.label}" if self.label else "", head]
        for i, s in enumerate(self.strengths):
            mark = "*" if abs(s - self.recommended) < 1e-9 else " "
            # one decimal: two vectors of one concept differ by about a point here, and the higher one removed more
            # when generating (docs/benchmarks.md, "Can the check compare two vectors of one concept?")
            lines.append(f"{s:>7.2f}{mark} {self.efficacy[i]:>8.1%} {self.efficacy_layers[i]:>14.1%} "
                         f"{self.collateral_prediction[i]:>10.3f} {self.collateral_layers[i]:>13.3f}"
                         + (f" {self.collateral_guided[i]:>8.3f}" if guided else "")
                         + (f" {self.toward_concept[i]:>13.0%}" if toward else ""))
        lines.append(f"recommended strength {self.recommended:g}: {self.reason}")
        lines.append(self.script_line())
        at = "" if self.negative_share_strength is None else f" at strength {self.negative_share_strength:g}"
        if self.negative_concept_share is not None:
            read = ("carries the concept: collateral read on the conditional prediction (guided shown, not used)"
                    if self.negative_carries_concept else "guided collateral kept")
            lines.append(f"negative prompt moves like the concept: {self.negative_concept_share:.2f}{at} "
                         "(0 = like a safe prompt, 1 = like the concept's; >= "
                         f"{NEGATIVE_CARRIES_CONCEPT:g}: {read})")
        elif self.negative_share_read:
            lines.append("negative prompt: the check cannot tell whether it carries the concept (the validation "
                         "pairs' unsafe sides do not move clearly more than their safe sides, or by less than the "
                         f"benign prompts' moves differ among themselves{at}); "
                         + ("guided collateral kept" if self.collateral_guided else "collateral as measured"))
        lines.append(self.pair_line())
        for warning in (self.toward_concept_warning(), self.script_warning(), self.pair_warning(),
                        self.negative_warning()):
            if warning:
                lines.append(warning)
        return "\n".join(line for line in lines if line)

    @property
    def script_strength(self) -> float:
        """The strength the per-script removal is shown at: the recommended one, or where that is 0 (where every
        share reads 0), the one read as full projection."""
        if self.recommended > 0:
            return self.recommended
        index = _full_projection_index(self.strengths, FULL_PROJECTION)
        return self.recommended if index is None else self.strengths[index]

    def removed_by_script_at(self, strength: float) -> list[tuple[str, int, float]]:
        """``[(script, pairs, efficacy at strength), ...]`` from :attr:`removed_by_script`; empty when the
        validation pairs are in one script."""
        index = self._index(strength)
        return [(script, pairs, efficacy[index]) for script, pairs, efficacy in self.removed_by_script]

    def removed_by_pair_at(self, strength: float) -> list[float]:
        """Each validation pair's removed share at ``strength``, in the pairs' order; empty when not measured."""
        index = self._index(strength)
        return [efficacy[index] for efficacy in self.removed_by_pair]

    def pair_name(self, index: int) -> str:
        """``pair 3 ('a Rolex watch on a ...')``: a validation pair's number from 1, and its name if it has one."""
        name = self.pair_names[index] if index < len(self.pair_names) else ""
        short = name if len(name) <= PAIR_NAME_CHARACTERS else name[:PAIR_NAME_CHARACTERS - 3].rstrip() + "..."
        return f"pair {index + 1}" + (f" ({short!r})" if short else "")

    def pair_line(self) -> str:
        """The table's line of each validation pair's removal at :attr:`script_strength` (for more than
        :data:`PAIRS_LISTED` pairs, the least removed one, the median and the count under the threshold); empty for
        one pair."""
        shares = self.removed_by_pair_at(self.script_strength) if self.removed_by_pair else []
        if len(shares) < 2:
            return ""
        least = min(range(len(shares)), key=shares.__getitem__)
        head = f"removed by pair at {self.script_strength:.2f}: "
        if len(shares) <= PAIRS_LISTED:
            return head + " ".join(f"{share:.0%}" for share in shares) + f" (least: {self.pair_name(least)})"
        under = sum(share < self.removed_threshold for share in shares)
        return (head + f"least {shares[least]:.0%} ({self.pair_name(least)}), median "
                f"{statistics.median(shares):.0%}, {under} of {len(shares)} under {self.removed_threshold:.0%}")

    def pair_warning(self) -> str:
        """A line naming the validation pairs the edit removes less than :attr:`removed_threshold` of at the
        recommended strength while the pooled share reaches it; empty otherwise. On the organism such a pair kept
        the concept more often than the others when generated (docs/benchmarks.md, "Which validation pair keeps the
        concept?")."""
        index = self._index(self.recommended)
        if self.recommended <= 0 or len(self.removed_by_pair) < 2 or self.efficacy[index] < self.removed_threshold:
            return ""
        shares = self.removed_by_pair_at(self.recommended)
        behind = sorted((i for i, share in enumerate(shares) if share < self.removed_threshold), key=shares.__getitem__)
        if not behind:
            return ""
        listed = ", ".join(f"{self.pair_name(i)} at {shares[i]:.0%}" for i in behind[:PAIRS_LISTED_IN_WARNING])
        more = len(behind) - PAIRS_LISTED_IN_WARNING
        listed += f" and {more} more" if more > 0 else ""
        them = "that prompt" if len(behind) == 1 else "those prompts"
        return (f"WARNING: at strength {self.recommended:g} the edit removes {self.efficacy[index]:.0%} of the "
                f"validation pairs' difference pooled, but less than {self.removed_threshold:.0%} of "
                f"{_pairs(len(behind))}: {listed}. The concept worded that way may stay: render {them} at this "
                f"strength, and if the concept is still there, add estimation pairs worded like {them} to the "
                "vector's Pair Encoder and compute the vector again")

    def script_line(self) -> str:
        """The table's line of removal per script at :attr:`script_strength`; empty for pairs in one script."""
        shares = self.removed_by_script_at(self.script_strength)
        if not shares:
            return ""
        listed = ", ".join(f"{script} {removed:.0%} ({_pairs(pairs)})" for script, pairs, removed in shares)
        return f"removed by script at {self.script_strength:.2f}: {listed}"

    def script_warning(self) -> str:
        """A line naming the scripts whose pairs keep more of their difference than :attr:`removed_threshold` allows
        at the recommended strength while the pooled share reaches it; empty otherwise."""
        shares = self.removed_by_script_at(self.recommended)
        index = self._index(self.recommended)
        if not shares or self.efficacy[index] < self.removed_threshold:
            return ""
        behind = [(script, pairs, removed) for script, pairs, removed in shares if removed < self.removed_threshold]
        if not behind:
            return ""
        listed = " and ".join(f"{script} ({removed:.0%}, {_pairs(pairs)})" for script, pairs, removed in behind)
        those = "that script" if len(behind) == 1 else "those scripts"
        return (f"WARNING: at strength {self.recommended:g} the edit removes {self.efficacy[index]:.0%} of the "
                f"validation pairs' difference pooled, but less than {self.removed_threshold:.0%} of the pairs "
                f"written in {listed}: the concept written in {those} is not removed as well. Add estimation pairs "
                f"written in {those} to the vector's Pair Encoder and compute the vector again")

    def negative_warning(self) -> str:
        """A line saying that the negative prompt carries the concept (:attr:`negative_carries_concept`); empty
        otherwise."""
        if not self.negative_carries_concept:
            return ""
        return ("WARNING: the negative prompt names the concept: the edit removes the concept from it too, so it no "
                "longer steers away from the concept (on the organism a 'red' negative with the edit left 9 of 192 "
                "no-colour clips red, against 0 with the negative alone). Keep the negative or not, but judge the "
                "edit on its own: the collateral here is the conditional prediction's, as with no negative")

    def toward_concept_warning(self, limit: float = TOWARD_CONCEPT_LIMIT) -> str:
        """A line saying that the edit moves the safe prompts toward the concept, when some strength moves them by
        more than ``limit`` of the pairs' difference per unit of strength, up to full projection; empty otherwise."""
        i = _adds_the_concept(self.strengths, self.toward_concept, limit) if self.toward_concept else None
        if i is None:
            return ""
        return (f"WARNING: at strength {self.strengths[i]:g} the edit moves the validation pairs' safe prompts "
                f"{self.toward_concept[i]:.0%} of the way toward their unsafe ones (safe->concept): it adds the "
                f"concept instead of removing it. {_SWAPPED_REMEDY[0].upper()}{_SWAPPED_REMEDY[1:]}")

    def as_dict(self) -> dict:
        return {"label": self.label, "layers": list(self.layers), "strengths": list(self.strengths),
                "efficacy": list(self.efficacy), "efficacy_layers": list(self.efficacy_layers),
                "collateral": list(self.collateral_prediction), "collateral_layers": list(self.collateral_layers),
                "relative_movement": list(self.relative_movement), "distinction_loss": list(self.distinction_loss),
                "collateral_guided": list(self.collateral_guided), "guidance": self.guidance,
                "keep_loss": list(self.keep_loss), "toward_concept": list(self.toward_concept),
                "negative_concept_share": self.negative_concept_share, "negative_share_read": self.negative_share_read,
                "negative_share_strength": self.negative_share_strength,
                "removed_by_script": [{"script": script, "pairs": pairs, "efficacy": list(efficacy)}
                                      for script, pairs, efficacy in self.removed_by_script],
                "removed_by_pair": [list(efficacy) for efficacy in self.removed_by_pair],
                "pair_names": list(self.pair_names),
                "collateral_read": self.collateral_read, "recommended": self.recommended, "reason": self.reason,
                "forwards": self.forwards}


def _pairs(count: int) -> str:
    return f"{count} pair" if count == 1 else f"{count} pairs"


def _rows(validation: Sequence, benign: Sequence, negative=None, keep: Sequence = ()) -> tuple[list, int, int, int]:
    pairs = [_sides(p) for p in validation]
    kept = [_sides(p) for p in keep]
    if not pairs:
        raise ValueError("no validation pairs: give held-out pairs (not the ones the refusal vector was fitted on), "
                         "e.g. 5 'unsafe | safe' lines in other wording")
    benign = list(benign)
    if len(benign) < 2:
        raise ValueError(f"need at least 2 benign prompts to measure their natural variation, got {len(benign)}; "
                         "12 everyday prompts without the concept are a good start")
    rows = ([p[0] for p in pairs] + [p[1] for p in pairs] + benign + [p[0] for p in kept] + [p[1] for p in kept]
            + ([] if negative is None else [negative]))
    return rows, len(pairs), len(benign), len(kept)


def _sides(pair) -> tuple:
    """A pair's two rows as ``forward`` reads them (text, or whatever the caller's rows are)."""
    return (pair.unsafe, pair.safe) if hasattr(pair, "unsafe") else tuple(pair)


def _chunks(rows: list, size: int) -> list[list]:
    size = max(1, int(size))
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def measure_baseline(module: torch.nn.Module, forward: Forward, validation: Sequence, benign: Sequence,
                     layers: Sequence[str], *, negative=None, keep: Sequence = (), batch_size: int = 64,
                     on_forward: Callable[[], None] | None = None, batch_dim: int = 0) -> Baseline:
    """Run the unedited model once on every row, recording the inputs of ``layers`` (none: predictions only).

    Args:
        module: the model whose sub-modules ``layers`` are recorded.
        forward: ``forward(rows, recorder) -> predictions [len(rows), ...]``. It must evaluate all ``rows`` in
            one model call per timestep (so each recorded layer sees ``len(rows)`` rows per timestep), use the
            same noise and timesteps on every call, and, given a recorder, set its token mask for layers that
            read a padded text context (``ActivationRecorder.set_token_mask``).
        validation: held-out ``(unsafe, safe)`` pairs (or ``PromptPair``), in whatever form ``forward`` reads.
        benign: prompts without the concept (at least 2).
        negative: the negative prompt the sampler pairs with them (a last row, for :func:`guided_collateral`).
        keep: pairs that differ only in what the edit must keep (for :func:`keep_loss`); none by default.
        batch_size: most rows per forward.
        on_forward: called after every forward (progress; it may raise to cancel).
        batch_dim: the batch's axis in the layers' inputs (``ActivationRecorder``; -2 for Cosmos 1.0's token-major
            layout).
    """
    rows, n_pairs, n_benign, n_keep = _rows(validation, benign, negative, keep)
    predictions, inputs, forwards = [], {name: [] for name in layers}, 0
    # no layers: predictions only (core.audit), and forward gets no recorder
    recording = ActivationRecorder(module, list(layers), batch_dim=batch_dim) if layers else contextlib.nullcontext()
    with recording as recorder:
        for chunk in _chunks(rows, batch_size):
            predictions.append(_prediction(forward(chunk, recorder), len(chunk)))
            for name, values in (recorder.take() if recorder is not None else {}).items():
                if values.shape[0] % len(chunk):
                    raise ValueError(f"layer {name!r} recorded {values.shape[0]} rows for a forward of {len(chunk)} "
                                     "rows: the forward must run all rows in one model call per timestep")
                inputs[name].append(values.reshape(-1, len(chunk), values.shape[1]).mean(0))
            forwards += 1
            if on_forward is not None:
                on_forward()
    baseline = Baseline(pairs=n_pairs, benign=n_benign, predictions=torch.cat(predictions),
                        inputs={name: torch.cat(v) for name, v in inputs.items()}, forwards=forwards,
                        negative=negative is not None, keep=n_keep)
    _require_differences(baseline)
    return baseline


def _require_differences(baseline: Baseline) -> None:
    """Every figure is a share of a difference the unedited model makes: between each pair's sides (efficacy) and
    among the benign prompts (collateral). Where that difference is zero the share is undefined (it read 0 %
    removed, or 0 collateral at any strength, which let every strength pass the budget)."""
    p, n = baseline.predictions, baseline.pairs
    if not (p[:n] - p[n:2 * n]).abs().max() > 0:
        raise ValueError("the unedited model predicts the same for both sides of every validation pair, so no share "
                         "of their difference can be measured: the check's latent may be empty or too small for this "
                         "model, or the pairs' sides encode alike; check width/height and the pairs")
    benign = p[baseline.benign_rows]
    if not (benign - benign.mean(0)).abs().max() > 0:
        raise ValueError(f"the {baseline.benign} benign prompts give the same prediction, so they show no natural "
                         "variation to measure collateral against: use different everyday prompts (ones that differ "
                         "only in spacing or case may encode alike)")


def _prediction(output, rows: int) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.shape[0] != rows:
        raise ValueError(f"forward must return a tensor with one row per prompt ({rows}), got "
                         f"{getattr(output, 'shape', type(output).__name__)}")
    if not torch.isfinite(output).all():
        raise ValueError(f"the model's prediction holds NaN or Inf ({output.dtype}): a strength too large for the "
                         "model's number format, or a model that overflows at this latent size; lower the largest "
                         "strength or check the model at these settings")
    return cpu_float64(output).reshape(rows, -1)


def _require_every_layer_ran(hooks: EditHooks, before: dict[str, int], strength: float) -> None:
    """A forward at an edited strength must run every edited layer: one that did not measured the unedited model (a
    step cache on the model answering the call from an earlier one read 0 % removed at every strength)."""
    skipped = [layer for layer in hooks.layers if hooks.calls[layer] == before[layer]]
    if skipped:
        raise ValueError(f"at strength {strength:g} the model's forward never ran {skipped[0]!r}"
                         f"{f' (and {len(skipped) - 1} more edited layers)' if len(skipped) > 1 else ''}: something "
                         "on the model answers calls without running its layers (a step cache such as TeaCache or "
                         "MagCache), so the edit cannot be measured; check the model from before such nodes")


def check_strengths(module: torch.nn.Module, forward: Forward, basis: RefusalBasis, baseline: Baseline,
                    strengths: Sequence[float], *, layers: Sequence[str] | None = None,
                    weights: Mapping[str, torch.Tensor] | None = None, target: str = "safe_mean",
                    rows: tuple[Sequence, ...] | None = None, keep: Sequence = (), batch_size: int = 64,
                    label: str = "", guidance: float | None = None, on_forward: Callable[[], None] | None = None,
                    removed: float = REMOVED,
                    budget: float = COLLATERAL_BUDGET, full_projection: float | None = FULL_PROJECTION,
                    negative_as: CheckResult | None = None, scripts: Sequence[str] | None = None,
                    pair_names: Sequence[str] | None = None) -> CheckResult:
    """Efficacy and collateral of editing ``layers`` (default: all of ``basis``) at every strength.

    Layer-level figures come from ``baseline``'s recorded inputs in closed form; the prediction needs one
    forward of every row per strength above 0 (``len(rows) / batch_size`` forwards each), with the edit
    applied by :class:`EditHooks`. ``rows`` are the ``(validation, benign)`` or ``(validation, benign, negative)``
    the baseline was measured on; with the negative prompt, ``guidance`` (the sampler's cfg) adds
    :func:`guided_collateral` per strength; ``keep``, the keep pairs the baseline was measured with, adds
    :func:`keep_loss`. ``negative_as``: take the negative prompt's share from that result (the check of the whole
    edit) instead of reading it here, so that a sweep's layer groups read collateral in one unit: read per group, a
    group whose own share crossed the line was drawn in conditional collateral on an axis saying guided.
    ``scripts``: the script of each validation pair (:func:`core.scripts.pair_script`), for rows that are not text
    (the nodes' conditionings); read from the pairs themselves when they are text. With 2 or more scripts the result
    carries the removal of each script's pairs per strength (:attr:`CheckResult.removed_by_script`); always, each
    pair's own (:attr:`CheckResult.removed_by_pair`), named in the table by ``pair_names`` (one per pair; default:
    the unsafe sides of text pairs, else their numbers).
    """
    strengths = parse_strengths(strengths)
    layers = list(layers or basis.layers)
    missing = [layer for layer in layers if layer not in baseline.inputs]
    if missing:
        raise ValueError(f"the baseline recorded no inputs for {missing}: measure it with these layers")
    if rows is None:
        raise ValueError("check_strengths needs rows=(validation, benign), the rows the baseline was measured on")
    all_rows, n_pairs, n_benign, n_keep = _rows(*rows, keep=keep)
    if (n_pairs, n_benign, len(rows) == 3, n_keep) != (baseline.pairs, baseline.benign, baseline.negative,
                                                       baseline.keep):
        raise ValueError(f"rows ({n_pairs} pairs, {n_benign} benign, negative: {len(rows) == 3}, {n_keep} keep pairs) "
                         f"are not the baseline's ({baseline.pairs}, {baseline.benign}, {baseline.negative}, "
                         f"{baseline.keep})")
    if guidance is not None and not baseline.negative:
        raise ValueError("guidance needs the negative prompt: measure the baseline and pass rows with negative=...")
    groups = _script_groups(rows[0], scripts)
    by_script = {script: [] for script in groups}
    by_pair = [[] for _ in range(n_pairs)]
    survival_l, collateral_l = layer_proxies(baseline, module, basis, layers, strengths, weights=weights, target=target)
    survival_p, collateral_p, forwards, distinctions, guided, kept, toward = [], [], 0, [], [], [], []
    full = _full_projection_index(strengths, full_projection)
    share = None
    with EditHooks(module, basis, layers, weights=weights, target=target) as hooks:
        for strength in strengths:
            if strength == 0.0:
                survival_p.append(1.0)
                collateral_p.append(0.0)
                distinctions.append((0.0, 0.0))
                guided.append(0.0)
                kept.append(0.0)
                toward.append(0.0)
                for shares in (*by_script.values(), *by_pair):
                    shares.append(0.0)
                continue
            hooks.strength = strength
            outputs = []
            for chunk in _chunks(all_rows, batch_size):
                before = dict(hooks.calls)
                outputs.append(_prediction(forward(chunk, None), len(chunk)))
                _require_every_layer_ran(hooks, before, strength)
                forwards += 1
                if on_forward is not None:
                    on_forward()
            predictions = torch.cat(outputs)
            survival, collateral = prediction_proxies(baseline, predictions)
            survival_p.append(survival)
            collateral_p.append(collateral)
            for script, shares in by_script.items():
                shares.append(1.0 - pairs_survival(baseline, predictions, groups[script]))
            for pair, shares in enumerate(by_pair):
                shares.append(1.0 - pairs_survival(baseline, predictions, [pair]))
            distinctions.append(distinction_proxies(baseline, predictions))
            toward.append(toward_concept(baseline, predictions))
            if guidance is not None:
                guided.append(guided_collateral(baseline, predictions, guidance))
            if baseline.negative and negative_as is None and strengths.index(strength) == full:
                share = negative_concept_share(baseline, predictions)
            if baseline.keep:
                kept.append(keep_loss(baseline, predictions))
    efficacy = [1.0 - s for s in survival_p]
    share_read, share_at = bool(baseline.negative) and full is not None, strengths[full] if full is not None else None
    if negative_as is not None:
        share, share_read, share_at = (negative_as.negative_concept_share, negative_as.negative_share_read,
                                       negative_as.negative_share_strength)
    # the sampler's combination when known: docs/benchmarks.md, "The prediction the sampler uses?"; not with a negative that
    # carries the concept, whose own move guided collateral would count on every benign prompt
    carries = share is not None and share >= NEGATIVE_CARRIES_CONCEPT
    use_guided = guidance is not None and not carries
    ruling = guided if use_guided else collateral_p
    name = "guided collateral" if use_guided else "conditional collateral" if carries else "collateral"
    recommended, reason = recommend(strengths, efficacy, ruling, removed=removed, budget=budget,
                                    full_projection=full_projection, name=name, toward=toward)
    return CheckResult(strengths=strengths, survival_layers=tuple(survival_l), survival_prediction=tuple(survival_p),
                       collateral_layers=tuple(collateral_l), collateral_prediction=tuple(collateral_p),
                       recommended=recommended, reason=reason, layers=tuple(layers), label=label,
                       forwards=forwards + baseline.forwards, relative_movement=tuple(d[0] for d in distinctions),
                       distinction_loss=tuple(d[1] for d in distinctions),
                       collateral_guided=tuple(guided) if guidance is not None else (),
                       guidance=None if guidance is None else float(guidance),
                       keep_loss=tuple(kept) if baseline.keep else (), toward_concept=tuple(toward),
                       negative_concept_share=share, negative_share_read=share_read,
                       negative_share_strength=share_at if share_read else None,
                       removed_by_script=tuple((script, len(groups[script]), tuple(shares))
                                               for script, shares in by_script.items()),
                       removed_by_pair=tuple(tuple(shares) for shares in by_pair),
                       pair_names=_pair_names(rows[0], pair_names), removed_threshold=removed)


def _pair_names(validation: Sequence, names: Sequence[str] | None) -> tuple[str, ...]:
    """``names`` as :func:`check_strengths` takes it, checked; without it, the unsafe sides of text pairs, else ()."""
    pairs = list(validation)
    if names is None:
        sides = [_sides(pair) for pair in pairs]
        return tuple(pair[0] for pair in sides) if all(isinstance(pair[0], str) for pair in sides) else ()
    if len(names) != len(pairs):
        raise ValueError(f"pair_names names {len(names)} pairs for {len(pairs)} validation pairs: give one per pair "
                         "(its unsafe side)")
    return tuple(str(name) for name in names)


def _script_groups(validation: Sequence, scripts: Sequence[str] | None) -> dict[str, list[int]]:
    """``{script: pair indices}`` when the validation pairs span 2 or more scripts, else empty. ``scripts`` as
    :func:`check_strengths` takes it; without it, read from pairs whose two sides are text, none for other rows."""
    pairs = list(validation)
    if scripts is None:
        sides = [_sides(pair) for pair in pairs]
        if not all(len(pair) == 2 and all(isinstance(side, str) for side in pair) for pair in sides):
            return {}
        scripts = [pair_script(*pair) for pair in sides]
    scripts = list(scripts)
    if len(scripts) != len(pairs):
        raise ValueError(f"scripts names {len(scripts)} scripts for {len(pairs)} validation pairs: give one per pair "
                         "(core.scripts.pair_script of its two sides)")
    groups = script_groups(scripts)
    return groups if len(groups) >= 2 else {}


def run_check(module: torch.nn.Module, forward: Forward, basis: RefusalBasis, validation: Sequence,
              benign: Sequence, strengths: Sequence[float] | str = DEFAULT_STRENGTHS, *,
              layers: Sequence[str] | None = None, weights: Mapping[str, torch.Tensor] | None = None,
              target: str = "safe_mean", batch_size: int = 64, label: str = "", replay: Sequence[str] = (),
              negative=None, guidance: float | None = None, keep: Sequence = (),
              on_forward: Callable[[], None] | None = None, **rule) -> CheckResult:
    """:func:`measure_baseline` then :func:`check_strengths`, for one set of layers, inside a :class:`ReplayCache`
    over the edited layers and ``replay`` (other modules whose output depends only on their input and that no
    edit changes, e.g. ``["text_embedding"]`` for Wan). ``negative`` and ``guidance`` add guided collateral;
    ``keep`` pairs add keep loss."""
    strengths = parse_strengths(strengths)
    layers = list(layers or basis.layers)
    rows = (validation, benign) if negative is None else (validation, benign, negative)
    with ReplayCache(module, [*replay, *layers]):
        baseline = measure_baseline(module, forward, validation, benign, layers, negative=negative, keep=keep,
                                    batch_size=batch_size, on_forward=on_forward)
        return check_strengths(module, forward, basis, baseline, strengths, layers=layers, weights=weights,
                               target=target, rows=rows, keep=keep, batch_size=batch_size, label=label,
                               guidance=guidance, on_forward=on_forward, **rule)
