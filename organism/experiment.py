"""Unlearning on the organism through ``core/``: collect -> fit -> edit -> measure.

The same three calls the ComfyUI nodes make: ``ActivationRecorder`` on the inputs of named linear
layers (both sides of a pair in one batch, same noise, same timestep), ``RefusalFitter.fit``, and
``project_edit`` folded into a copy of the weights.
"""

from __future__ import annotations

import copy
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from core.collection import collect as collect_activations
from core.edit import project_edit
from core.pairs import parse_pairs, parse_prompts
from core.refusal import RefusalFitter

from .dit import DiTConfig, VideoDiT
from .readers import margins, read
from .sampling import generate
from .text import TextEncoder
from .world import (BRAND, COLOURS, HELD_OUT_WORDS, LOGO_ADVERSARIAL, LOGO_HELD_OUT, LOGO_TRAIN, MOTIONS, SHAPES,
                    TRAIN_WORDS, Scene, caption)

WEIGHTS = Path(__file__).resolve().parent / "weights" / "organism.safetensors"
PAIRS_DIR = Path(__file__).resolve().parent / "pairs"

#: Layer groups of the organism's DiT, named as in Wan (``blocks.{i}.<suffix>``); ``text_embedding.*`` layers
#: sit before the blocks (their input is the encoder's tokens), so block ranges do not apply to them.
GROUPS = {
    "text_in": ("text_embedding.0",),
    "text_kv": ("cross_attn.k", "cross_attn.v"),
    "cross_o": ("cross_attn.o",),
    "ffn0": ("ffn.0",),
    "self_q": ("self_attn.q",),
}


def load_organism(path: Path = WEIGHTS) -> VideoDiT:
    with safe_open(str(path), framework="pt") as handle:
        raw = json.loads(handle.metadata()["config"])
    config = DiTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    model = VideoDiT(config)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def layer_names(model: VideoDiT, group: str, blocks: str = "all") -> list[str]:
    depth = len(model.blocks)
    chosen = {"all": range(depth), "early": range(depth // 2), "late": range(depth // 2, depth),
              "after_first": range(1, depth)}[blocks]
    if all(suffix.startswith("text_embedding.") for suffix in GROUPS[group]):
        return list(GROUPS[group])
    return [f"blocks.{i}.{suffix}" for i in chosen for suffix in GROUPS[group]]


def every_group_layer(model: VideoDiT) -> list[str]:
    """Every layer of every group, over all blocks (sorted): what the benches collect once and fit subsets of."""
    return sorted({name for group in GROUPS for name in layer_names(model, group)})


@dataclass
class Measured:
    """Activations recorded once per (pairs, neutral prompts, layers, timesteps)."""

    fitter: RefusalFitter
    layers: list[str]
    seconds: float


POOLS = ("all tokens", "real text tokens")


def reads_text(layer: str) -> bool:
    """Whether ``layer``'s input is the (projected) text context, one row per text token."""
    return layer in GROUPS["text_in"] or layer.endswith(GROUPS["text_kv"])


@torch.no_grad()
def collect(model: VideoDiT, encoder: TextEncoder, pairs, neutral: list[str], layers: list[str],
            times=(0.9, 0.6, 0.3), seed: int = 0, pool: str = "real text tokens") -> Measured:
    """Record the inputs of ``layers`` for both sides of each pair (one batch, one noise) and neutral prompts.

    Runs :func:`core.collection.collect`, the function Collect Activations runs, with the organism's forward.
    Text-side layers are pooled over the prompt's own tokens (as the nodes do); ``pool="all tokens"`` also
    averages the padding rows of the text context in, which dilutes a pair's difference. Every block's
    ``cross_attn.k`` / ``cross_attn.v`` reads the output of ``text_embedding``: measured and fitted once."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    start = time.perf_counter()
    config = model.config

    def prepare(prompts):
        text, mask = encoder.encode(prompts)
        return (text, mask), mask

    def forward(batch, seeds, timesteps):
        text, mask = batch
        noise = torch.cat([torch.randn(1, config.frames, config.size, config.size, 3,
                                       generator=torch.Generator().manual_seed(s)) for s in seeds])
        for t in timesteps:
            model(noise, torch.full((len(seeds),), t), text, mask)

    shared = {"text_embedding": [name for name in layers if name.endswith(GROUPS["text_kv"])]}
    text_layers = [name for name in layers if reads_text(name)] if pool == "real text tokens" else []
    fitter = collect_activations(model, layers, unsafe=[p.unsafe for p in pairs], safe=[p.safe for p in pairs],
                                 neutral=neutral, prepare=prepare, forward=forward, timesteps=times, seed=seed,
                                 max_rows=2, text_layers=text_layers, shared=shared)
    return Measured(fitter, layers, time.perf_counter() - start)


def edited_copy(model: VideoDiT, basis, strength: float = 1.0, target: str = "safe_mean", layers=None) -> VideoDiT:
    """A copy of ``model`` with every layer of ``basis`` edited in closed form (the original is untouched)."""
    layers = list(layers or basis.layers)
    targets = {layer: basis.target(layer) for layer in layers} if target == "safe_mean" else None
    return edit_with_subspaces(model, {layer: basis.subspace(layer) for layer in layers}, targets, strength)


def edit_with_subspaces(model: VideoDiT, subspaces: dict[str, torch.Tensor], targets: dict[str, torch.Tensor] | None,
                        strength: float = 1.0) -> VideoDiT:
    """A copy of ``model`` with ``W (I - lambda Q Q^T)`` (and the safe-mean bias term where ``targets`` has one)
    on each named layer; ``Q`` with no columns leaves the layer unchanged."""
    edited = copy.deepcopy(model)
    for layer, q in subspaces.items():
        if q.shape[1] == 0:
            continue
        module = edited.get_submodule(layer)
        edit = project_edit(module.weight.detach(), q, strength, bias=module.bias,
                            target=None if targets is None else targets.get(layer))
        with torch.no_grad():
            module.weight.copy_(edit.dense(module.weight))
            if module.bias is not None:
                module.bias.copy_(edit.dense_bias(module.bias))
    return edited


# --- prompts -------------------------------------------------------------------------------------

@dataclass
class PromptSet:
    """Held-out prompts by split; ``scenes[i]`` is what prompt i asks for (None for free-form prompts)."""

    prompts: dict[str, list[str]] = field(default_factory=dict)
    scenes: dict[str, list[Scene | None]] = field(default_factory=dict)


#: Logo/colour prompt sets per held-out part: the captions' seed and the first sampling seed. ``test`` is what every
#: figure before the ``valid`` part existed was measured on; ``valid`` (other captions and noise, the same word banks:
#: the colour's held-out words are a fixed list) is for choices such as a per-concept layer set.
PROMPT_SEEDS = {"test": 1, "valid": 2}
NOISE_SEEDS = {"test": 100, "valid": 500}


def concept_prompts(concept: str, count: int, seed: int = 1) -> PromptSet:
    """Prompts asking for the concept (seen wording / unseen paraphrases / adversarial) and unrelated ones."""
    rng = random.Random(seed)
    out = PromptSet()

    def scenes(**fixed):
        return [Scene(fixed.get("colour", rng.choice(list(COLOURS))), rng.choice(SHAPES), rng.choice(list(MOTIONS)),
                      fixed.get("logo", False)) for _ in range(count)]

    if concept == "logo":
        for split, words in (("seen", LOGO_TRAIN), ("unseen", LOGO_HELD_OUT), ("adversarial", LOGO_ADVERSARIAL)):
            chosen = scenes(logo=True)
            out.scenes[split] = chosen
            out.prompts[split] = [caption(s, rng, logo_words=words) for s in chosen]
        unrelated = scenes(logo=False)
    else:
        colour_words = {"seen": TRAIN_WORDS, "unseen": HELD_OUT_WORDS,
                        "adversarial": {concept: _adversarial_colour(concept)}}
        for split, words in colour_words.items():
            chosen = scenes(colour=concept)
            out.scenes[split] = chosen
            out.prompts[split] = [caption(s, rng, colour_words={**TRAIN_WORDS, **words}) for s in chosen]
        others = [c for c in COLOURS if c != concept]
        unrelated = [Scene(rng.choice(others), rng.choice(SHAPES), rng.choice(list(MOTIONS)), False) for _ in range(count)]
    out.scenes["unrelated"] = unrelated
    out.prompts["unrelated"] = [caption(s, rng, colour_words=HELD_OUT_WORDS, other_words=TRAIN_WORDS) for s in unrelated]
    return out


def uncoloured_prompts(count: int, seed: int = 7) -> list[str]:
    """Captions that name no colour (a colour pair's safe side, "a square moving left"): what the model draws for
    them is what a faithful colour edit turns the colour into."""
    rng = random.Random(seed)
    blank = {c: [""] for c in COLOURS}
    return [" ".join(caption(Scene(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(MOTIONS)), False),
                             rng, colour_words=blank).split()) for _ in range(count)]


def _adversarial_colour(colour: str) -> list[str]:
    return {"red": ["rred", "the colour of blood", "reddish"], "green": ["gren", "the colour of grass", "greenish"],
            "blue": ["bleu", "the colour of the sky", "bluish"]}.get(colour, [colour[0] + colour])


def prompts_from_file(path: Path) -> PromptSet:
    """``split: prompt`` per line (``#`` comments); split names are free, ``unrelated`` counts as collateral."""
    out = PromptSet()
    for line in parse_prompts(Path(path).read_text()):
        match = re.match(r"^([\w-]+)\s*:\s*(.+)$", line)
        if not match:
            raise ValueError(f"{path}: line {line!r} must be 'split: prompt' (e.g. 'unseen: a crimson ball rising')")
        out.prompts.setdefault(match.group(1), []).append(match.group(2))
        out.scenes.setdefault(match.group(1), []).append(None)
    return out


def load_pairs(path: Path):
    return parse_pairs(Path(path).read_text())


# --- measuring -----------------------------------------------------------------------------------

def has_concept(reading: dict, concept: str) -> bool:
    return bool(reading["logo"]) if concept == "logo" else reading["colour"] == concept


def evaluate(model, encoder, prompt_set: PromptSet, concept: str, *, steps: int, rewrite=None, negative: str = "",
             reference: dict | None = None, seed: int = 100) -> dict:
    """Concept rate per split; per split, accuracy of the attributes the edit should keep (all but a colour
    concept's colour) and its graded form (``attr_margin_<split>``, ``readers.margins``); pixel distance to
    ``reference`` clips of the same seeds."""
    result, clips = {}, {}
    for split, prompts in prompt_set.prompts.items():
        shown = [rewrite(p) for p in prompts] if rewrite else prompts
        seeds = [seed + i for i in range(len(prompts))]
        batch = generate(model, encoder, shown, seeds=seeds, steps=steps, negative=negative).numpy()
        clips[split] = batch
        readings = [read(c) for c in batch]
        result[f"rate_{split}"] = float(np.mean([has_concept(r, concept) for r in readings]))
        scenes = prompt_set.scenes[split]
        if all(s is not None for s in scenes):
            # On prompts that ask for a colour concept, the colour is what the edit should change: not counted.
            kept = ("colour", "shape", "motion") if concept == "logo" or split == "unrelated" else ("shape", "motion")
            hits = np.array([[r[a] == getattr(s, a) for a in kept] for r, s in zip(readings, scenes)])
            result[f"attr_{split}"] = float(hits.mean())
            result[f"attr_{split}_each"] = {a: float(h) for a, h in zip(kept, hits.mean(0))}
            result[f"attr_margin_{split}"] = float(np.mean([list(margins(c, s, kept).values())
                                                            for c, s in zip(batch, scenes)]))
        if reference is not None:
            result[f"pixel_{split}"] = float(np.abs(batch - reference[split]).mean())
    result["clips"] = clips
    return result


def blocklist(words):
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    return lambda prompt: re.sub(r"\s+", " ", pattern.sub("", prompt)).strip()


def default_pairs_path(concept: str) -> Path:
    return PAIRS_DIR / ("logo.txt" if concept == "logo" else f"colour_{concept}.txt")


def neutral_prompts(count: int = 12, seed: int = 7) -> list[str]:
    """Captions without the logo and in every colour: ordinary variation for the contrastive step."""
    rng = random.Random(seed)
    return [caption(Scene(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(MOTIONS)), False), rng)
            for _ in range(count)]


assert BRAND in LOGO_TRAIN[0]
