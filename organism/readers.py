"""Exact readers of a clip's attributes: colour, shape, motion and logo presence.

On rendered clips they are exact; on generated clips they read what a person would: the dominant
object colour, the best-matching shape, the centroid's travel, and whether the centre carries the
white trademark mark.
"""

from __future__ import annotations

import numpy as np

from .world import COLOURS, FRAMES, MOTIONS, SHAPES, Scene, shape_mask

_PALETTE = np.array(list(COLOURS.values()), np.float32)
_NAMES = list(COLOURS)


def _object_mask(frame: np.ndarray) -> np.ndarray:
    return frame.max(-1) > 0.35


def read(clip: np.ndarray) -> dict:
    """``{"colour", "shape", "motion", "logo"}`` of a clip ``[frames, h, w, 3]`` (values in [0, 1])."""
    clip = np.clip(np.asarray(clip, np.float32), 0, 1)
    masks = [_object_mask(f) for f in clip]
    whites = [(f.min(-1) > 0.75) for f in clip]
    coloured = [m & ~w for m, w in zip(masks, whites)]
    pixels = np.concatenate([clip[i][coloured[i]] for i in range(len(clip))]) if any(c.any() for c in coloured) else None
    if pixels is None or len(pixels) < 4:
        return {"colour": None, "shape": None, "motion": None, "logo": False}
    median = np.median(pixels, axis=0)
    colour = _NAMES[int(np.argmin(((_PALETTE - median) ** 2).sum(1)))]
    centroids = [np.argwhere(m).mean(0) if m.any() else None for m in masks]
    valid = [c for c in centroids if c is not None]
    travel = valid[-1] - valid[0] if len(valid) >= 2 else np.zeros(2)
    if np.abs(travel).max() < 2.5:
        motion = "still"
    else:
        axis = int(np.argmax(np.abs(travel)))
        motion = {(0, -1): "up", (0, 1): "down", (1, -1): "left", (1, 1): "right"}[(axis, int(np.sign(travel[axis])))]
    shape = _read_shape(masks)
    logo = _read_logo(masks, whites)
    return {"colour": colour, "shape": shape, "motion": motion, "logo": logo}


def _read_shape(masks) -> str | None:
    """Best IoU with each shape's template, aligned by bounding boxes, summed over frames."""
    scores = np.zeros(len(SHAPES))
    for mask in masks:
        if mask.sum() < 4:
            continue
        ys, xs = np.nonzero(mask)
        crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        for index, shape in enumerate(SHAPES):
            template = shape_mask(shape)
            ty, tx = np.nonzero(template)
            template = template[ty.min():ty.max() + 1, tx.min():tx.max() + 1]
            h, w = max(crop.shape[0], template.shape[0]), max(crop.shape[1], template.shape[1])
            a = np.zeros((h, w), bool)
            b = np.zeros((h, w), bool)
            a[:crop.shape[0], :crop.shape[1]] = crop
            b[:template.shape[0], :template.shape[1]] = template
            scores[index] += (a & b).sum() / max((a | b).sum(), 1)
    return SHAPES[int(np.argmax(scores))] if scores.any() else None


def _read_logo(masks, whites) -> bool:
    hits = 0
    for mask, white in zip(masks, whites):
        if mask.sum() >= 4 and (white & mask).sum() >= 2:
            hits += 1
    return hits >= len(masks) // 2


def matches(clip: np.ndarray, scene: Scene) -> dict:
    """Per-attribute correctness of a clip for the scene its prompt asked for."""
    seen = read(clip)
    return {"colour": seen["colour"] == scene.colour, "shape": seen["shape"] == scene.shape,
            "motion": seen["motion"] == scene.motion, "logo": seen["logo"] == scene.logo}


assert FRAMES >= 2 and set(MOTIONS) == {"left", "right", "up", "down", "still"}
