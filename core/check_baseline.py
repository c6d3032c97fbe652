"""What the unedited model does on the check's rows (:class:`Baseline`): every figure of :mod:`core.check_figures` is
read against it. :func:`core.check.measure_baseline` measures it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

@dataclass(frozen=True)
class Baseline:
    """What the unedited model does on the check's rows: predictions and the edited layers' pooled inputs.

    Rows are ``pairs`` unsafe prompts, then their safe counterparts, then ``benign`` prompts, then the ``keep``
    pairs' first sides and their second sides, then (``negative``) the negative prompt. ``predictions`` ``[rows,
    ...]`` float64; ``inputs[layer]`` ``[rows, d]`` float64 (mean over timesteps).
    """

    pairs: int
    benign: int
    predictions: torch.Tensor
    inputs: Mapping[str, torch.Tensor]
    forwards: int
    negative: bool = False
    keep: int = 0

    @property
    def benign_rows(self) -> slice:
        return slice(2 * self.pairs, 2 * self.pairs + self.benign)

    @property
    def keep_rows(self) -> tuple[slice, slice]:
        """The keep pairs' first sides and second sides."""
        start = 2 * self.pairs + self.benign
        return slice(start, start + self.keep), slice(start + self.keep, start + 2 * self.keep)
