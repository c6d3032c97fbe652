"""Exact readers of a clip's attributes: colour, shape, motion, logo presence and the concept marks.

On rendered clips they are exact; on generated clips they read what a person would: the dominant
object colour, the best-matching shape, the centroid's travel, whether the centre carries the
white trademark mark, and whether a concept's corner carries its white mark (``CONCEPT_MARKS``). The object
is read with the two mark corners blanked out (no object path reaches them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import COLOURS, CONCEPT_MARKS, CORNER, FRAMES, MOTIONS, SHAPES, SIZE, Scene, shape_mask

_PALETTE = np.array(list(COLOURS.values()), np.float32)
_NAMES = list(COLOURS)
#: Centroid travel (pixels, first to last frame) below which an object reads as still.
STILL_TRAVEL = 2.5


def _object_mask(frame: np.ndarray) -> np.ndarray:
    return frame.max(-1) > 0.35


def read_marks(clip: np.ndarray) -> dict:
    """``{concept: bool}``: the concept's 2 x 2 corner is white (channel minimum > 0.5) on average over frames."""
    clip = np.clip(np.asarray(clip, np.float32), 0, 1)
    return {c: bool(clip[:, y:y + 2, x:x + 2].min(-1).mean() > 0.5) for c, (y, x) in CONCEPT_MARKS.items()}


@dataclass(frozen=True)
class _Evidence:
    """What the attribute readers decide from: the median object colour's squared distance to each palette colour,
    each shape's template IoU summed over frames, the centroid's travel ``[dy, dx]`` from first to last frame."""

    colour_distances: np.ndarray
    shape_scores: np.ndarray
    travel: np.ndarray
    logo: bool


def _evidence(clip: np.ndarray) -> _Evidence | None:
    """None when the clip has no object (fewer than 4 coloured pixels)."""
    clip = np.clip(np.asarray(clip, np.float32), 0, 1).copy()
    clip[:, :CORNER, :CORNER] = 0
    clip[:, :CORNER, SIZE - CORNER:] = 0
    masks = [_object_mask(f) for f in clip]
    whites = [(f.min(-1) > 0.75) for f in clip]
    coloured = [m & ~w for m, w in zip(masks, whites)]
    pixels = np.concatenate([clip[i][coloured[i]] for i in range(len(clip))]) if any(c.any() for c in coloured) else None
    if pixels is None or len(pixels) < 4:
        return None
    median = np.median(pixels, axis=0)
    centroids = [np.argwhere(m).mean(0) if m.any() else None for m in masks]
    valid = [c for c in centroids if c is not None]
    travel = valid[-1] - valid[0] if len(valid) >= 2 else np.zeros(2)
    return _Evidence(((_PALETTE - median) ** 2).sum(1), _shape_scores(masks), travel, _read_logo(masks, whites))


def read(clip: np.ndarray) -> dict:
    """``{"colour", "shape", "motion", "logo", <concept>...}`` of a clip ``[frames, h, w, 3]`` (values in [0, 1])."""
    marks = read_marks(clip)
    evidence = _evidence(clip)
    if evidence is None:
        return {"colour": None, "shape": None, "motion": None, "logo": False, **marks}
    colour = _NAMES[int(np.argmin(evidence.colour_distances))]
    scores = evidence.shape_scores
    shape = SHAPES[int(np.argmax(scores))] if scores.any() else None
    return {"colour": colour, "shape": shape, "motion": _read_motion(evidence.travel), "logo": evidence.logo, **marks}


def _read_motion(travel: np.ndarray) -> str:
    if np.abs(travel).max() < STILL_TRAVEL:
        return "still"
    axis = int(np.argmax(np.abs(travel)))
    return {(0, -1): "up", (0, 1): "down", (1, -1): "left", (1, 1): "right"}[(axis, int(np.sign(travel[axis])))]


def margins(clip: np.ndarray, scene: Scene, attributes=("colour", "shape", "motion")) -> dict:
    """A graded ``matches``: per attribute, how far the clip lies inside the reader's region for the scene's value,
    in [-1, 1] (``(own - best other) / (|own| + |best other|)`` of the reader's scores). It is > 0 exactly where
    ``read`` gives the scene's value and < 0 where it gives another (ties aside); -1 for a clip with no object.
    Attribute accuracy counts the signs; this also sees an object drift towards another value before it flips,
    and it rises when a right object grows surer, so a mean of margins mixes damage with sharpening (docs/benchmarks.md,
    "Is the collateral target missed by the proxy or by the bench?").

    Scores: colour, minus the squared distance of the median object colour to each palette colour; shape, the
    summed template IoU; motion, for a direction d, min(t.d - 2.5, t.d - |t.d_perp|) and for "still" 2.5 -
    max|t| (t: the centroid's travel in pixels), whose positive regions are exactly the reader's."""
    evidence = _evidence(clip)
    if evidence is None:
        return {a: -1.0 for a in attributes}
    scores = {"colour": dict(zip(_NAMES, -evidence.colour_distances)),
              "shape": dict(zip(SHAPES, evidence.shape_scores)),
              "motion": _motion_scores(evidence.travel)}
    out = {}
    for attribute in attributes:
        values = scores[attribute]
        own = values[getattr(scene, attribute)]
        other = max(v for k, v in values.items() if k != getattr(scene, attribute))
        scale = abs(own) + abs(other)
        out[attribute] = float((own - other) / scale) if scale > 0 else 0.0
    return out


def _motion_scores(travel: np.ndarray) -> dict:
    scores = {"still": STILL_TRAVEL - float(np.abs(travel).max())}
    for name, (dy, dx) in MOTIONS.items():
        if name != "still":
            along = float(travel[0] * dy + travel[1] * dx)
            across = float(abs(travel[0] * dx - travel[1] * dy))
            scores[name] = min(along - STILL_TRAVEL, along - across)
    return scores


def _shape_scores(masks) -> np.ndarray:
    """Per shape of ``SHAPES``: IoU with its template, aligned by bounding boxes, summed over frames."""
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
    return scores


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
