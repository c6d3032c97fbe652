"""Unlearning Check's chart: removal against collateral per strength, the recommended strength ringed, the sweep's
layer groups beside it and the least-removed validation pair dashed (an IMAGE the node shows and outputs)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..core.check import CheckResult
from ..core.recommend import COLLATERAL_BUDGET
from .plot import drawable_concept

_COLOURS = [(70, 130, 220), (40, 160, 90), (200, 80, 160), (140, 110, 60), (90, 90, 90)]
_CHOSEN = (230, 120, 40)
#: the least-removed validation pair's dashed line
_LEAST = (150, 150, 200)


#: What the check's chart draws in place of a concept name its font cannot draw (the table names it).
CONCEPT_NOT_DRAWN = "concept (named in the table)"


def least_removed_pair(result: CheckResult) -> list[float]:
    """Per strength, the removed share of the validation pair removed least there; empty for fewer than 2 pairs
    (then the pooled share is that pair's)."""
    if len(result.removed_by_pair) < 2:
        return []
    return [min(shares) for shares in zip(*result.removed_by_pair)]


def check_chart(main: CheckResult, swept: list[CheckResult] = (), width: int = 768, height: int = 360,
                concept: str = "") -> torch.Tensor:
    """Efficacy (share removed) against collateral, one point per strength, the recommended one ringed. ``concept``:
    the name ``main.label`` starts with, drawn only where the font has every glyph of it (``plot.drawable_concept``).

    Returns an IMAGE tensor ``[1, height, width, 3]`` in [0, 1].
    """
    results = [main, *swept]
    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    name = concept or "concept"
    label = main.label
    if label.startswith(name):
        label = drawable_concept(concept, font, CONCEPT_NOT_DRAWN) + label[len(name):]
    left, right, upper, lower = 56, width - 150, 30, height - 40
    x_top = max([max(r.collateral) for r in results] + [COLLATERAL_BUDGET * 0.2, 1e-6]) * 1.1
    effs = [e for r in results for e in r.efficacy]
    y_low, y_top = min(0.0, min(effs)), max(1.0, max(effs))
    # within the pooled curves' axis: one pair whose difference grows (-133 % removed on the organism) would squash them
    least = [min(max(e, y_low), y_top) for e in least_removed_pair(main)]

    def at(c, e):
        return (left + (right - left) * c / x_top, lower - (lower - upper) * (e - y_low) / (y_top - y_low))

    draw.text((left, 8), f"Unlearning check: {label}", fill=(20, 20, 20), font=font)
    draw.line([(left, lower), (right, lower)], fill=(120, 120, 120))
    draw.line([(left, upper), (left, lower)], fill=(120, 120, 120))
    for frac in (0.0, 0.5, 1.0):
        y = at(0, frac)[1]
        draw.line([(left - 4, y), (left, y)], fill=(120, 120, 120))
        draw.text((8, y - 6), f"{frac:.0%}", fill=(60, 60, 60), font=font)
    draw.text((left, lower + 8), "0", fill=(60, 60, 60), font=font)
    draw.text((right - 30, lower + 8), f"{x_top:.3g}", fill=(60, 60, 60), font=font)
    guided = ("" if main.guidance is None else ", conditional: the negative carries the concept"
              if main.negative_carries_concept else f", guided at cfg {main.guidance:g}")
    draw.text((left + 60, lower + 22), f"collateral (benign change / natural variation{guided})", fill=(60, 60, 60),
              font=font)
    draw.text((8, upper - 16), "removed", fill=(60, 60, 60), font=font)
    if COLLATERAL_BUDGET < x_top:
        x = at(COLLATERAL_BUDGET, 0)[0]
        for y in range(int(upper), int(lower), 6):
            draw.line([(x, y), (x, y + 3)], fill=(200, 60, 60))
    if least:
        # the least-removed validation pair at each strength (core.check CheckResult.pair_warning), dashed
        points = [at(c, e) for c, e in zip(main.collateral, least)]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            for start in np.arange(0.0, 1.0, 0.2):
                draw.line([(x0 + (x1 - x0) * start, y0 + (y1 - y0) * start),
                           (x0 + (x1 - x0) * (start + 0.1), y0 + (y1 - y0) * (start + 0.1))], fill=_LEAST, width=1)
        draw.text((right + 10, upper + 14 * len(results)), "- - least-removed pair", fill=_LEAST, font=font)
    for index, result in enumerate(results):
        colour = _COLOURS[index % len(_COLOURS)]
        points = [at(c, e) for c, e in zip(result.collateral, result.efficacy)]
        draw.line(points, fill=colour, width=2 if index == 0 else 1)
        for (x, y), s in zip(points, result.strengths):
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            if index == 0:
                draw.text((x + 4, y - 12), f"{s:g}", fill=(40, 40, 40), font=font)
        chosen = result.strengths.index(result.recommended)
        x, y = points[chosen]
        draw.ellipse([x - 7, y - 7, x + 7, y + 7], outline=_CHOSEN, width=2)
        legend = (f"recommended: {result.recommended:g}" if index == 0
                  else f"{result.label[:16]}: {result.recommended:g}")
        draw.text((right + 10, upper + 14 * index), legend, fill=colour, font=font)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]
