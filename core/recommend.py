"""The check's recommendation: the strength with the best trade-off between removing the concept and moving benign
prompts, from the figures measured per strength (:mod:`core.check_figures`), and the constants of its rule (documented
in :func:`recommend`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .strengths import parse_strengths

#: :func:`recommend`: a strength "removes the concept" when it removes this share of the validation pairs' difference.
REMOVED = 0.9
#: :func:`recommend`: largest prediction collateral accepted, in units of the benign prompts' natural variation.
COLLATERAL_BUDGET = 0.5
#: :func:`recommend`: the strength at which the edit ``W - lambda (W U) U^T`` projects the concept out of the edited
#: layers' inputs entirely (``U`` orthonormal); removal in the prediction alone does not justify less.
FULL_PROJECTION = 1.0
#: :func:`recommend`: largest share of the validation pairs' difference by which an edit may move their safe sides
#: toward their unsafe sides (:func:`toward_concept`), per unit of strength. An edit of the concept leaves the safe
#: sides where they are (on the organism at strength 1: -0.06..0.00 for the trademark, red, nudity and violence); one
#: whose pairs had their sides swapped moves them about half-way at strength 1 (violence 0.54, red 0.45: the concept
#: then appears in benign prompts).
TOWARD_CONCEPT_LIMIT = 0.25
#: What to do about an edit that moves the safe prompts toward the concept (the recommendation's reason and the
#: table's warning end with it).
_SWAPPED_REMEDY = ("are the sides of the vector's pairs swapped? Pair Encoder reads 'unsafe | safe', the concept on "
                   "the left. With target zero, which also moves the safe prompts' own component, try safe_mean")


def _full_projection_index(strengths: Sequence[float], full_projection: float | None) -> int | None:
    """The grid index read as full projection: ``full_projection`` (1 when None) or the largest strength above 0
    below it; with none there, the smallest strength above 0 (a grid such as ``0, 1.5, 2`` still gets the figure);
    None when the grid has no strength above 0."""
    bound = (FULL_PROJECTION if full_projection is None else full_projection) + 1e-9
    above = [i for i, s in enumerate(strengths) if s > 0]
    below = [i for i in above if strengths[i] <= bound]
    return below[-1] if below else above[0] if above else None


def recommend(strengths: Sequence[float], efficacy: Sequence[float], collateral: Sequence[float], *,
              removed: float = REMOVED, budget: float = COLLATERAL_BUDGET,
              full_projection: float | None = FULL_PROJECTION, name: str = "collateral",
              toward: Sequence[float] | None = None, toward_limit: float = TOWARD_CONCEPT_LIMIT) -> tuple[float, str]:
    """The strength with the best trade-off, and why.

    Rule, among strengths above 0 whose collateral is within ``budget`` (benign predictions move by at most that
    share of their natural variation):

    1. if some strength removes at least ``removed`` (0.9) of the validation pairs' difference from the
       prediction, the smallest such strength: the concept is gone there, and more strength only adds collateral.
    2. otherwise (the pairs differ in more than the concept, e.g. extra words the edit does not touch, so
       removal never reaches 0.9), the strength that ends the steepest rise of removal: the grid step with the
       largest gain per unit of strength. Removal of a concept is a switch in the strength (on the organism the
       concept rate falls like a sigmoid); past the steepest part each step buys less removal for as much added
       collateral. (A first local maximum of the gain was tried and rejected: noise at small strengths made it
       pick 0.25 on the organism's trademark at one timestep.)
    3. if removal never rises, the strength that removes most.

    Then, with ``full_projection`` (1.0 for the nodes' edit ``W - lambda (W U) U^T``, orthonormal ``U``), a choice
    below it is raised to the smallest strength on the grid at or above it, unless that is over the collateral
    budget: below it, ``1 - lambda`` of the concept direction is left in every edited layer's input, and sampling
    (every step, amplified by guidance) reads what a one-timestep prediction on one noise shows as removed. On the
    organism's nudity, the prediction lost 98 % of the pairs' difference at strength 0.5 while sampling still drew
    the concept for 65 % of the prompts (validation split; 1.0 removed it for all). The floor was first applied
    to rule 1 only; it was extended to rules 2-3 after the trademark on the retrained organism (stage 3) showed the
    same thing through rule 2 (recommended 0.75: 91 % drop; 1.0: 98 %).

    ``toward`` (:func:`toward_concept` per strength), when given: if some strength up to ``full_projection`` moves
    the validation pairs' safe sides toward their unsafe sides by more than ``toward_limit`` per unit of strength,
    the edit adds the concept (a vector whose pairs have their sides swapped), whatever its removal reads: recommend
    0 and say so. A larger strength that does so is never recommended (past full projection the edit pushes beyond
    the safe side).

    If no strength above 0 is within the budget, or none within it removes anything, recommend 0 and say so.
    ``strengths`` is a grid as :func:`parse_strengths` returns it (sorted, no repeats, from 0), one figure of each
    list per strength; any other is a ValueError. ``name``: what the reason calls ``collateral`` ("guided
    collateral" when it is :func:`guided_collateral`).
    """
    strengths, efficacy, collateral = list(strengths), list(efficacy), list(collateral)
    toward = [0.0] * len(strengths) if toward is None else list(toward)
    if (tuple(strengths) != parse_strengths(strengths)
            or not len(strengths) == len(efficacy) == len(collateral) == len(toward)):
        raise ValueError(f"recommend() needs the strength grid as parse_strengths() gives it (sorted, no repeats, "
                         f"starting at 0) with one efficacy and one collateral (and toward figure, if any) per "
                         f"strength; got strengths {strengths}, {len(efficacy)} efficacies, {len(collateral)} "
                         f"collaterals and {len(toward)} toward figures: pass parse_strengths(grid) and the figures "
                         f"measured in that order")
    # strengths past full projection that move the safe prompts toward the concept (the vector itself is judged below)
    crossing = set(_over_toward(strengths, toward, toward_limit))
    allowed = [i for i, s in enumerate(strengths) if s > 0 and collateral[i] <= budget and i not in crossing]
    if max(efficacy) <= 0:
        return 0.0, "no strength removes any of the validation pairs' difference (check the vector and the pairs)"
    adding = _adds_the_concept(strengths, toward, toward_limit, full_projection)
    if adding is not None:
        return 0.0, (f"the edit moves the validation pairs' safe prompts {toward[adding]:.0%} of the way toward their "
                     f"unsafe ones at strength {strengths[adding]:g} (more than {toward_limit:.0%} per unit of "
                     f"strength): the edit adds the concept; {_SWAPPED_REMEDY}")
    if not allowed:
        return 0.0, (f"every strength above 0 moves benign prompts by more than {budget:g} of their natural "
                     f"variation ({name}); try another layer group or a vector from more pairs")
    if max(efficacy[i] for i in allowed) <= 0:
        return 0.0, (f"only strengths over the {name} budget {budget:g} remove any of the validation pairs' "
                     "difference; try another layer group or a vector from more pairs")
    i, reason = _by_removal(strengths, efficacy, collateral, allowed, removed, budget, name)
    if full_projection is not None and strengths[i] < full_projection:
        at_full = [k for k in allowed if strengths[k] >= full_projection]
        if at_full:
            j = min(at_full, key=lambda k: strengths[k])
            return strengths[j], (f"{reason}; raised to {strengths[j]:g}: a strength below {full_projection:g} leaves "
                                  f"part of the concept direction in the edited layers, which sampling amplifies "
                                  f"({efficacy[j]:.0%} removed; {name} {collateral[j]:.3f})")
        if strengths[-1] < full_projection:
            return strengths[i], (f"{reason}; below full projection ({full_projection:g}), which the grid does not "
                                  f"reach: sampling may still show some of the concept (add {full_projection:g})")
        return strengths[i], (f"{reason}; below full projection ({full_projection:g}), which is over the {name} "
                              f"budget {budget:g}: sampling may still show some of the concept")
    return strengths[i], reason


def _over_toward(strengths, toward, limit: float) -> list[int]:
    """Grid indices whose :func:`toward_concept` exceeds ``limit`` per unit of strength."""
    return [i for i, s in enumerate(strengths) if s > 0 and toward[i] > limit * s]


def _adds_the_concept(strengths, toward, limit: float, up_to: float | None = FULL_PROJECTION) -> int | None:
    """The first grid index up to strength ``up_to`` (or the smallest strength above 0, if larger) whose
    :func:`toward_concept` exceeds ``limit`` per unit of strength, or None: the edit itself adds the concept. Judged
    per unit because a swapped vector's movement grows with the strength (on the organism's red 0.24 at 0.5, 0.45
    at 1): ruling out single strengths let it be recommended at 0.5, half-way to adding the concept. Beyond full
    projection the edit pushes past the safe side by design (the organism's correct nudity vector with target zero,
    at 0.08 at strength 1, crossed over from 1.25, 0.38): such strengths are ruled out one by one instead."""
    positive = [s for s in strengths if s > 0]
    if not positive:
        return None
    bound = max(math.inf if up_to is None else up_to, positive[0]) + 1e-9
    over = [i for i in _over_toward(strengths, toward, limit) if strengths[i] <= bound]
    return over[0] if over else None


def _by_removal(strengths, efficacy, collateral, allowed, removed, budget, name) -> tuple[int, str]:
    """Rules 1-3 of :func:`recommend` (before the full-projection floor): the chosen grid index and why."""
    reaching = [i for i in allowed if efficacy[i] >= removed]
    if reaching:
        i = min(reaching, key=lambda k: strengths[k])
        return i, (f"smallest strength removing >= {removed:.0%} of the validation pairs' difference "
                   f"({efficacy[i]:.0%} at {strengths[i]:g}); {name} {collateral[i]:.3f}")
    gains = {i: (efficacy[i] - efficacy[i - 1]) / (strengths[i] - strengths[i - 1]) for i in range(1, len(strengths))}
    rising = [i for i in allowed if gains[i] > 0]
    # strengths past the budget may remove it: "no strength removes 90%" then misread the table beside it
    over = any(efficacy[k] >= removed for k in range(1, len(strengths)) if k not in allowed)
    none = f"no strength within the {name} budget {budget:g} removes" if over else "no strength removes"
    if rising:
        i = max(rising, key=lambda k: (gains[k], -strengths[k]))
        return i, (f"end of the steepest rise of removal ({efficacy[i]:.0%} removed at {strengths[i]:g}; {none} "
                   f"{removed:.0%}); {name} {collateral[i]:.3f}")
    i = max(allowed, key=lambda k: (efficacy[k], -strengths[k]))
    return i, f"most removed ({efficacy[i]:.0%} at {strengths[i]:g}) within the {name} budget {budget:g}"
