"""Real prompts as *scenes*: which broad concept a real prompt belongs to, and which split it is in.

The organism learns broad concepts (``CONCEPTS``: nudity, violence) from real wording: a training caption joins an
attribute caption with a real prompt from ``../shared/data`` (read in place, never copied into the repository:
the data's README and ``SOURCES.md`` hold the licences, and its prompts must not appear in docs or pictures), and
the clip carries the concept's corner mark when the prompt belongs to it.

Pools (``load_pools``), each a list of prompts:

- ``nudity`` / ``violence``: the concept's prompts: Six-CD's nudity / harm prompt sets, the unsafe sides of Six-CD
  dual-version and SteeringFields pairs, and I2P ``sexual`` rows with ``nudity_percentage >= 50`` / I2P
  ``violence`` rows with ``inappropriate_percentage >= 50`` (I2P's category is per prompt source, not per
  image; its low-scoring rows are ambiguous and left out entirely);
- ``safe_nudity`` / ``safe_violence``: the safe sides of those pairs (hard negatives: minimally edited);
- ``benign_near``: benign captions near a concept (COCO captions that mention swimwear, beds, showers, boxing,
  soldiers, knives, hospitals, war memorials ...: ``NEAR_WORDS``), hard negatives too;
- ``benign``: other COCO captions and Six-CD's benign prompts.

Splits are by prompt text, deterministic and salted (``split_of``): ``train`` (70 %) trains the DiT, ``valid``
(10 %) tunes edits, ``test`` (20 %) is what the bench reports. A pair takes the split of its unsafe side, and
pairs have a fourth part, ``estimate`` (20 % of pairs, taken from ``train``'s share), which estimates edits and is
never used to train the DiT: training, edit estimation and evaluation are disjoint by prompt.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

CONCEPTS = ("nudity", "violence")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROMPT_SPLITS = ("train", "valid", "test")
PAIR_SPLITS = ("train", "estimate", "valid", "test")
#: Words that put a benign caption near a concept (hard negatives): skin, water, beds; fights, weapons, injuries.
NEAR_WORDS = {
    "nudity": ["swimsuit", "swimsuits", "bikini", "bikinis", "shirtless", "bath", "bathtub", "shower", "beach", "bed",
               "bedroom", "underwear", "towel", "swimming", "swimmer", "surfer", "surfers", "sunbathing", "massage",
               "lingerie", "naked eye"],
    "violence": ["boxing", "boxer", "fight", "fighting", "wrestling", "soldier", "soldiers", "army", "military", "war",
                 "tank", "gun", "guns", "rifle", "knife", "knives", "sword", "police", "hospital", "doctor", "surgery",
                 "hunting", "hunter", "battle", "memorial", "cannon", "fire truck", "ambulance"],
}


def norm(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt).strip()


def bucket(prompt: str, salt: str = "organism") -> int:
    """0-99, from the salted sha256 of the normalised prompt (the data's own split uses the unsalted hash)."""
    return int(hashlib.sha256(f"{salt}/{norm(prompt)}".encode("utf-8")).hexdigest(), 16) % 100


def split_of(prompt: str, pair: bool = False) -> str:
    """``train`` / ``valid`` / ``test`` (and ``estimate`` for pairs) by ``bucket``."""
    b = bucket(prompt)
    if b >= 80:
        return "test"
    if b >= 70:
        return "valid"
    return "estimate" if pair and b >= 50 else "train"


@dataclass
class Pools:
    """``prompts[pool][split]`` (prompt lists) and ``pairs[concept][split]`` (``(unsafe, safe)`` lists)."""

    prompts: dict = field(default_factory=dict)
    pairs: dict = field(default_factory=dict)
    marks: dict = field(default_factory=dict)  # normalised prompt -> frozenset of its concepts

    def labels(self, prompt: str) -> frozenset:
        """The concepts a prompt belongs to (its marks), over every split."""
        return self.marks.get(norm(prompt), frozenset())


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def check_data(data: Path) -> Path:
    """``data`` itself, or a ValueError naming what is missing and the fix."""
    data = Path(data)
    needed = ["pairs/sixcd_nudity.csv", "pairs/sixcd_harm.csv", "prompts/sixcd/sixcd_nudity.csv",
              "prompts/benign/coco_30k.csv"]
    missing = [n for n in needed if not (data / n).is_file()]
    if missing:
        raise ValueError(f"{data} is not the prompt data folder (missing {', '.join(missing)}); pass --data with the "
                         "folder that holds pairs/ and prompts/ (by default ../shared/data next to the repository)")
    return data


def load_pools(data: Path = DATA, coco: int = 12000) -> Pools:
    """Every pool by split; ``coco`` caps how many COCO captions far from the concepts are read (file order;
    every near-concept caption is kept)."""
    data = check_data(data)
    concept_prompts = {c: [] for c in CONCEPTS}
    pairs = {c: [] for c in CONCEPTS}
    for row in _rows(data / "prompts/sixcd/sixcd_nudity.csv"):
        concept_prompts["nudity"].append(row["prompt"])
    for row in _rows(data / "prompts/sixcd/sixcd_harm.csv"):
        concept_prompts["violence"].append(row["prompt"])
    i2p = data / "prompts/i2p"
    if (i2p / "i2p_sexual.csv").is_file():
        concept_prompts["nudity"] += [r["prompt"] for r in _rows(i2p / "i2p_sexual.csv")
                                      if _number(r.get("nudity_percentage", "")) >= 50]
    if (i2p / "i2p_violence.csv").is_file():
        concept_prompts["violence"] += [r["prompt"] for r in _rows(i2p / "i2p_violence.csv")
                                        if _number(r.get("inappropriate_percentage", "")) >= 50]
    for concept, files in (("nudity", ["sixcd_nudity.csv", "steeringfields_naked.csv"]),
                           ("violence", ["sixcd_harm.csv", "steeringfields_violence.csv", "steeringfields_violence_2.csv"])):
        for name in files:
            if not (data / "pairs" / name).is_file():
                continue
            for row in _rows(data / "pairs" / name):
                unsafe, safe = (row["unsafe"], row["safe"]) if "unsafe" in row else (row["positive_prompts"],
                                                                                    row["negative_prompts"])
                if norm(unsafe) and norm(safe) and norm(unsafe) != norm(safe):
                    pairs[concept].append((norm(unsafe), norm(safe)))
    labels: dict[str, set] = {}
    for concept in CONCEPTS:
        for prompt in concept_prompts[concept] + [u for u, _ in pairs[concept]]:
            if norm(prompt):
                labels.setdefault(norm(prompt), set()).add(concept)
    safe_sides = {c: {s for _, s in pairs[c]} - set(labels) for c in CONCEPTS}
    near_pattern = re.compile(r"\b(" + "|".join(re.escape(w) for ws in NEAR_WORDS.values() for w in ws) + r")\b", re.I)
    coco_rows = [r["prompt"] for r in _rows(data / "prompts/benign/coco_30k.csv")]
    benign = [p for p in coco_rows if near_pattern.search(p)] + [p for p in coco_rows if not near_pattern.search(p)][:coco]
    benign += [r["prompt"] for r in _rows(data / "prompts/benign/sixcd_benign.csv")] if (
        data / "prompts/benign/sixcd_benign.csv").is_file() else []

    pools = Pools()
    pools.marks = {p: frozenset(c) for p, c in labels.items()}
    empty = lambda splits: {s: [] for s in splits}  # noqa: E731
    for name in (*CONCEPTS, *(f"safe_{c}" for c in CONCEPTS), "benign_near", "benign"):
        pools.prompts[name] = empty(PROMPT_SPLITS)
    pair_prompt_split = {}
    for concept in CONCEPTS:
        pools.pairs[concept] = empty(PAIR_SPLITS)
        for unsafe, safe in dict.fromkeys(pairs[concept]):
            split = split_of(unsafe, pair=True)
            pools.pairs[concept][split].append((unsafe, safe))
            pair_prompt_split[unsafe] = pair_prompt_split[safe] = split
    for concept in CONCEPTS:
        for prompt in dict.fromkeys(norm(p) for p in concept_prompts[concept] + [u for u, _ in pairs[concept]]):
            if not prompt:
                continue
            split = pair_prompt_split.get(prompt, split_of(prompt))
            if split == "estimate":
                continue  # estimation pairs never train the DiT nor count as evaluation prompts
            pools.prompts[concept][split].append(prompt)
        for _, safe in dict.fromkeys(pairs[concept]):
            split = pair_prompt_split[safe]
            if safe in safe_sides[concept] and split != "estimate":
                pools.prompts[f"safe_{concept}"][split].append(safe)
    for prompt in dict.fromkeys(norm(p) for p in benign):
        if not prompt or prompt in labels:
            continue
        pools.prompts["benign_near" if near_pattern.search(prompt) else "benign"][split_of(prompt)].append(prompt)
    return pools


#: Share of training captions drawn from each pool (the rest, ``1 - sum``, are attribute captions alone, as before).
TRAINING_MIX = {"nudity": 0.16, "violence": 0.16, "safe_nudity": 0.05, "safe_violence": 0.05, "benign_near": 0.09,
                "benign": 0.14}
#: Of the captions with a scene, the share that is the real prompt alone (no attributes: any object is right).
SCENE_ONLY = 0.15


def join(attribute_caption: str, prompt: str) -> str:
    """The organism's caption for an attribute caption followed by a real prompt."""
    return f"{attribute_caption}, {prompt}"


def training_captions(pools: Pools, count: int, rng, caption, random_scene,
                      mix: dict[str, float] | None = None) -> tuple[list[str], list]:
    """``count`` (caption, Scene) for training: ``mix`` (default ``TRAINING_MIX``) of train-split scenes, marks from
    their labels."""
    from dataclasses import replace

    mix = TRAINING_MIX if mix is None else mix
    names, weights = list(mix), list(mix.values())
    captions, scenes = [], []
    for _ in range(count):
        scene = random_scene(rng)
        draw = rng.random()
        if draw >= sum(weights):
            captions.append(caption(scene, rng))
        else:
            pool = rng.choices(names, weights)[0]
            prompt = rng.choice(pools.prompts[pool]["train"])
            scene = replace(scene, marks=pools.labels(prompt))
            captions.append(prompt if rng.random() < SCENE_ONLY else join(caption(scene, rng), prompt))
        scenes.append(scene)
    return captions, scenes
