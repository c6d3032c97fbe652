"""Input checks for the organism's scripts (``bench/demo.py``, ``bench/unlearning.py``).

Bad input fails in one plain line (``<script>: error: <what> ...``) with exit status 2, before the encoder or the
model loads: a missing or malformed pairs / prompts file (named as ``file:line``), an unknown concept (the valid
ones are listed), a count below one.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from core.pairs import PairsError, PromptPair, parse_pairs

from .scenes import CONCEPTS, Pools, check_data, load_pools
from .world import COLOURS, SCENE_ATTRIBUTES

PAIRS_DIR = Path(__file__).resolve().parent / "pairs"
#: Every concept the scripts measure: the trademark, a colour, or a broad concept learned from real prompts.
ALL_CONCEPTS = ("logo", *COLOURS, *CONCEPTS)


def fail(message: str) -> None:
    """Print ``<script>: error: message`` and exit with status 2 (argparse's usage-error status)."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def concept_name(text: str) -> str:
    """An argparse type: one of ``ALL_CONCEPTS``."""
    if text not in ALL_CONCEPTS:
        raise argparse.ArgumentTypeError(f"unknown concept {text!r}; one of {', '.join(ALL_CONCEPTS)}")
    return text


def concept_list(text: str) -> list[str]:
    """Comma-separated ``--concepts``, each one of ``ALL_CONCEPTS`` (else ``fail`` names it)."""
    concepts = text.split(",")
    for concept in concepts:
        try:
            concept_name(concept)
        except argparse.ArgumentTypeError as error:
            fail(f"--concepts: {error}")
    return concepts


def counts_in(text: str, option: str, high: int, what: str) -> list[int]:
    """Comma-separated integers in ``1..high`` for ``option`` (``what`` says what they count), else ``fail``."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        fail(f"{option} takes comma-separated positive integers such as 1,4; got {text!r}")
    if any(v < 1 or v > high for v in values):
        fail(f"{option} values must lie in 1..{high} ({what}); got {values}")
    return values


def default_pairs_file(concept: str) -> Path | None:
    """The shipped pairs file of a trademark/colour concept, or None for broad concepts (their pairs come from the
    data's ``estimate`` split, ``organism.scenes``)."""
    if concept in CONCEPTS:
        return None
    return PAIRS_DIR / ("logo.txt" if concept == "logo" else f"colour_{concept}.txt")


def read_pairs(path: Path | None, concept: str) -> list[PromptPair] | None:
    """The pairs of ``path`` (or of the concept's shipped file); None for a broad concept without ``path``.
    Exits (``fail``) on a missing file or a malformed line."""
    if path is None:
        path = default_pairs_file(concept)
        if path is None:
            return None
        if not path.is_file():
            shipped = sorted(p.stem.removeprefix("colour_") for p in PAIRS_DIR.glob("*.txt"))
            fail(f"no shipped pairs for concept {concept!r}; concepts with shipped pairs: {', '.join(shipped)}; "
                 "or pass --pairs FILE")
    path = Path(path)
    if not path.is_file():
        fail(f"pairs file {path} does not exist")
    try:
        return parse_pairs(path.read_text(encoding="utf-8"))
    except PairsError as error:
        fail(f"{path}:{error.line}: {error.reason}" if error.line else f"{path}: {error.reason}")
    except UnicodeDecodeError as error:
        fail(f"{path}: not UTF-8 text ({error.reason})")


#: ``split: prompt`` or ``split [colour shape motion(, logo)]: prompt`` (attributes the prompt asks for).
PROMPT_LINE = re.compile(r"^([\w-]+)\s*(?:\[([^\]]*)\])?\s*:\s*(.+)$")


def read_prompt_lines(path: Path) -> list[tuple[str, dict | None, str]]:
    """``(split, attributes or None, prompt)`` per content line of a prompts file; exits (``fail``) naming
    ``file:line`` on a malformed line. Attributes: a colour, a shape and a motion of the organism's world, and
    optionally ``logo`` (e.g. ``benign [red circle left]: a red ball moving left, a man riding a horse``); the
    prompt itself is used verbatim, the attributes say what the readers should find."""
    path = Path(path)
    if not path.is_file():
        fail(f"prompts file {path} does not exist")
    rows = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = PROMPT_LINE.match(line)
        if not match:
            fail(f"{path}:{number}: expected 'split: prompt' or 'split [colour shape motion]: prompt', got {line[:60]!r}")
        split, attributes, prompt = match.groups()
        parsed = None
        if attributes is not None:
            parsed = _attributes(attributes)
            if isinstance(parsed, str):
                fail(f"{path}:{number}: {parsed}")
        rows.append((split, parsed, prompt.strip()))
    if not rows:
        fail(f"{path}: no prompts (lines 'split: prompt')")
    return rows


def _attributes(text: str) -> dict | str:
    """``{"colour", "shape", "motion", "logo"}`` from ``red circle left [logo]``, or the problem as a string."""
    words = text.replace(",", " ").split()
    logo = "logo" in words
    words = [w for w in words if w != "logo"]
    if len(words) != 3:
        return f"attributes must be 'colour shape motion' (and optionally 'logo'), got [{text}]"
    found = {}
    for name, word in zip(SCENE_ATTRIBUTES, words):
        if word not in SCENE_ATTRIBUTES[name]:
            return f"unknown {name} {word!r}; one of {', '.join(SCENE_ATTRIBUTES[name])}"
        found[name] = word
    return {**found, "logo": logo}


def pools_for(concepts: list[str], data: Path) -> Pools | None:
    """The real-prompt pools when a broad concept is among ``concepts`` (else None); a bad ``--data`` folder fails."""
    if not any(c in CONCEPTS for c in concepts):
        return None
    try:
        return load_pools(check_data(data))
    except ValueError as error:
        fail(str(error))


def organism_world(args, concepts: list[str]) -> tuple:
    """``(model, encoder, pools)`` for a script with ``--weights``, ``--data`` and ``--threads``: its inputs checked
    first (a bad one fails before anything loads), then torch and ``random`` seeded with 0, then the organism loaded."""
    if not args.weights.is_file():
        fail(f"weights file {args.weights} does not exist")
    pools = pools_for(concepts, args.data)
    import random

    import torch

    from .experiment import load_organism
    from .text import TextEncoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    return load_organism(args.weights), TextEncoder(), pools
