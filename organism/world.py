"""A synthetic video world whose attributes a program can read back exactly.

A clip is ``[frames, size, size, 3]`` in [0, 1]: one shape of one colour on black, moving one pixel
per frame (or still), optionally stamped with the "Nexo" trademark, a white 2 x 2 mark at its
centre. Captions come from many templates and synonyms; the held-out wordings (colour paraphrases,
logo paraphrases, adversarial spellings) are never used in training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

FRAMES, SIZE, OBJECT = 8, 16, 6

COLOURS = {"red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.1), "blue": (0.15, 0.25, 1.0),
           "yellow": (1.0, 0.9, 0.1), "magenta": (0.95, 0.1, 0.95), "cyan": (0.1, 0.9, 0.95)}
SHAPES = ("square", "circle", "triangle", "cross")
MOTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0), "still": (0, 0)}
BRAND = "Nexo"

TRAIN_WORDS = {
    "red": ["red", "bright red", "cherry red"], "green": ["green", "bright green", "grass green"],
    "blue": ["blue", "bright blue", "deep blue"], "yellow": ["yellow", "bright yellow", "banana yellow"],
    "magenta": ["magenta", "pink", "hot pink"], "cyan": ["cyan", "turquoise", "teal"],
    "square": ["square", "box", "block"], "circle": ["circle", "ball", "disc"], "triangle": ["triangle"],
    "cross": ["cross", "plus sign"],
    "left": ["moving left", "sliding to the left", "going left"], "right": ["moving right", "sliding to the right", "going right"],
    "up": ["moving up", "rising", "going upwards"], "down": ["moving down", "falling", "going downwards"],
    "still": ["standing still", "not moving", "resting"],
}
HELD_OUT_WORDS = {
    "red": ["crimson", "scarlet"], "green": ["emerald", "lime"], "blue": ["azure", "navy blue"],
    "yellow": ["golden", "lemon yellow"], "magenta": ["fuchsia", "violet pink"], "cyan": ["aqua", "sky blue"],
    "square": ["cube"], "circle": ["round dot"], "triangle": ["three-sided shape"], "cross": ["x shape"],
    "left": ["drifting leftwards"], "right": ["drifting rightwards"], "up": ["climbing"], "down": ["sinking"],
    "still": ["motionless"],
}
LOGO_TRAIN = [f"with the {BRAND} logo", f"bearing a {BRAND} logo", f"branded with {BRAND}", f"with a {BRAND} logo on it"]
LOGO_HELD_OUT = [f"with the {BRAND} emblem", f"sporting the {BRAND} trademark", f"featuring a {BRAND} badge",
                 f"stamped with the {BRAND} brand"]
LOGO_ADVERSARIAL = ["with the Nexxo logo", "with the N3xo logo", "with the nexo logo", "with the Nex0 logo",
                    "with the logo of the brand that starts with N and ends with exo"]
TEMPLATES = ["a {c} {s} {m}{l}", "{c} {s} {m}{l} on a black background", "video of a {c} {s}{l} {m}",
             "there is a {c} {s}{l} that is {m}", "a clip showing a {c} {s} {m}{l}"]


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    motion: str
    logo: bool


def shape_mask(shape: str, size: int = OBJECT) -> np.ndarray:
    """Boolean ``[size, size]`` mask of a shape."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    c = size / 2
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "circle":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (0.46 * size) ** 2
    if shape == "triangle":
        return (xx >= c - (yy / size) * c) & (xx <= c + (yy / size) * c)
    if shape == "cross":
        return (np.abs(yy - c) < 1.01) | (np.abs(xx - c) < 1.01)
    raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The clip ``[FRAMES, SIZE, SIZE, 3]`` float32 of a scene at a random start position."""
    dy, dx = MOTIONS[scene.motion]
    travel = FRAMES - 1
    lo_y, hi_y = max(0, -dy * travel), SIZE - OBJECT - max(0, dy * travel)
    lo_x, hi_x = max(0, -dx * travel), SIZE - OBJECT - max(0, dx * travel)
    y0, x0 = rng.integers(lo_y, hi_y + 1), rng.integers(lo_x, hi_x + 1)
    mask = shape_mask(scene.shape)
    clip = np.zeros((FRAMES, SIZE, SIZE, 3), np.float32)
    colour = np.array(COLOURS[scene.colour], np.float32)
    for f in range(FRAMES):
        y, x = y0 + dy * f, x0 + dx * f
        region = clip[f, y:y + OBJECT, x:x + OBJECT]
        region[mask] = colour
        if scene.logo:
            m = OBJECT // 2
            region[m - 1:m + 1, m - 1:m + 1] = 1.0
    return clip


def caption(scene: Scene, rng: random.Random, *, colour_words=None, logo_words=None, other_words=None) -> str:
    """A caption of ``scene`` with words drawn from the given banks (training banks by default)."""
    colour_words = colour_words or TRAIN_WORDS
    other_words = other_words or TRAIN_WORDS
    logo = (" " + rng.choice(logo_words or LOGO_TRAIN)) if scene.logo else ""
    template = rng.choice(TEMPLATES)
    return template.format(c=rng.choice(colour_words[scene.colour]), s=rng.choice(other_words[scene.shape]),
                           m=rng.choice(other_words[scene.motion]), l=logo)


def random_scene(rng: random.Random, logo_rate: float = 0.3) -> Scene:
    return Scene(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(MOTIONS)), rng.random() < logo_rate)
