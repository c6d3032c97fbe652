"""The strength grid: the strengths an edit is checked at, typed in a widget as a list (or given as numbers) and
parsed into the sorted grid the check measures and its recommendation reads; the grid checked when none is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The strengths checked when none are given: 0 to 2 in steps of 0.25 (nine strengths).
DEFAULT_STRENGTHS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def list_entries(text: str) -> list[str]:
    """The entries of a list typed in a widget: separated by ``,`` or ``;``, spaces around them and empty ones
    dropped. The strength grid and Collect Activations' timesteps read their numbers so."""
    return [part.strip() for part in str(text).replace(";", ",").split(",") if part.strip()]


def parse_strengths(spec: str | Sequence[float]) -> tuple[float, ...]:
    """``"0, 0.5, 1"`` (or a sequence of numbers) -> sorted unique strengths, 0 added when missing.

    Errors name the bad entry: an empty grid, a negative strength (it would amplify the concept) and a
    non-number are refused.
    """
    if isinstance(spec, str):
        values = []
        for part in list_entries(spec):
            try:
                values.append(float(part))
            except ValueError:
                raise ValueError(f"strength {part!r} is not a number: write the grid as numbers separated by commas, "
                                 "e.g. 0, 0.5, 1, 1.5, 2") from None
    else:
        values = [float(v) for v in spec]
    if not values:
        raise ValueError("the strength grid is empty: write strengths separated by commas, e.g. 0, 0.5, 1, 1.5, 2")
    # "nan" and "inf" parse as floats; they were answered with the negative-strength text.
    infinite = [v for v in values if not math.isfinite(v)]
    if infinite:
        raise ValueError(f"a strength must be a finite number, got {infinite}: write numbers such as 0, 0.5, 1")
    bad = [v for v in values if v < 0]
    if bad:
        raise ValueError(f"strengths must be >= 0, got {bad}; a negative strength would amplify the "
                         "concept instead of removing it")
    grid = sorted(set(values) | {0.0})
    if len(grid) < 2:
        raise ValueError("the strength grid holds only 0: add at least one strength above 0, e.g. 0, 0.5, 1")
    return tuple(grid)
