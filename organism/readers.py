"""Exact readers of a clip's attributes: colour, shape, motion, logo presence and the concept marks.

On rendered clips they are exact; on generated clips they read what a person would: the dominant
object colour, the best-matching shape, the centroid's travel, whether the centre carries the
white trademark mark, and whether a concept's corner carries its white mark (``CONCEPT_MARKS``). The object
is read with the two mark corners blanked out (no object path reaches them).
"""

from __future__ import annotations

import numpy as np

from .world import COLOURS, CONCEPT_MARKS, CORNER, FRAMES, MOTIONS, SHAPES, SIZE, Scene, shape_mask

_PALETTE = np.array(list(COLOURS.values()), np.float32)
_NAMES = list(COLOURS)


def _object_mask(frame: np.ndarray) -> np.ndarray:
    return frame.max(-1) > 0.35


def read_marks(clip: np.ndarray) -> dict:
    """``{concept: bool}``: the concept's 2 x 2 corner is white (channel minimum > 0.5) on average over frames."""
    clip = np.clip(np.asarray(clip, np.float32), 0, 1)
    return {c: bool(clip[:, y:y + 2, x:x + 2].min(-1).mean() > 0.5) for c, (y, x) in CONCEPT_MARKS.items()}


def read(clip: np.ndarray) -> dict:
    """``{"colour", "shape", "motion", "logo", <concept>...}`` of a clip ``[frames, h, w, 3]`` (values in [0, 1])."""
    clip = np.clip(np.asarray(clip, np.float32), 0, 1)
    marks = read_marks(clip)
    clip = clip.copy()
    clip[:, :CORNER, :CORNER] = 0
    clip[:, :CORNER, SIZE - CORNER:] = 0
    masks = [_object_mask(f) for f in clip]
    whites = [(f.min(-1) > 0.75) for f in clip]
    coloured = [m & ~w for m, w in zip(masks, whites)]
    pixels = np.concatenate([clip[i][coloured[i]] for i in range(len(clip))]) if any(c.any() for c in coloured) else None
    if pixels is None or len(pixels) < 4:
        return {"colour": None, "shape": None, "motion": None, "logo": False, **marks}
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
    return {"colour": colour, "shape": shape, "motion": motion, "logo": logo, **marks}


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
            "motion": seen["motion"] == scene.motion, "logo": seen["logo"] == scene.logo,
            **{c: seen[c] == (c in scene.marks) for c in CONCEPT_MARKS}}


assert FRAMES >= 2 and set(MOTIONS) == {"left", "right", "up", "down", "still"}
