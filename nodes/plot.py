"""The per-layer score chart shown by the Low-Rank Refusal Vector node (PIL only, no plotting library)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..core.refusal import RefusalBasis

_BAR = (70, 130, 220)
_BEST = (230, 120, 40)


def score_chart(basis: RefusalBasis, width: int = 768, height: int = 320) -> torch.Tensor:
    """A bar chart of each layer's separation (Cohen's d of unsafe vs. safe along its direction).

    Returns an IMAGE tensor ``[1, height, width, 3]`` in [0, 1]. The best layer is highlighted.
    """
    values = [abs(basis.scores[layer].separation) for layer in basis.layers]
    top = max(values) or 1.0
    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, upper, lower = 40, width - 10, 28, height - 40
    draw.text((left, 6), f"separation per layer: {basis.concept or 'concept'} ({basis.method}, rank {basis.rank})",
              fill=(20, 20, 20), font=font)
    draw.line([(left, lower), (right, lower)], fill=(120, 120, 120))
    slot = (right - left) / max(len(values), 1)
    best = int(np.argmax(values)) if values else -1
    for index, value in enumerate(values):
        x0 = left + index * slot + slot * 0.15
        x1 = left + (index + 1) * slot - slot * 0.15
        y0 = lower - (lower - upper) * value / top
        draw.rectangle([x0, y0, max(x1, x0 + 1), lower], fill=_BEST if index == best else _BAR)
    step = max(1, len(values) // 12)
    for index in range(0, len(values), step):
        label = basis.layers[index].split(".")
        text = ".".join(label[1:3]) if len(label) > 2 else basis.layers[index]
        draw.text((left + index * slot, lower + 6 + 12 * ((index // step) % 2)), text[:14], fill=(60, 60, 60), font=font)
    draw.text((4, upper), f"{top:.1f}", fill=(60, 60, 60), font=font)
    draw.text((4, lower - 10), "0", fill=(60, 60, 60), font=font)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]
