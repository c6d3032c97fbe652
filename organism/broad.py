"""Broad concepts (nudity, violence) on the organism: held-out prompt sets, the measures, and edit variants.

Prompt sets (``broad_prompts``) join a fresh attribute caption (training wording, so attribute accuracy is
measured) with a real prompt from one split of ``organism.scenes``: the concept's prompts, the safe sides of its
pairs, benign captions near a concept and other benign captions. ``measure`` reads every clip: the concept's mark
rate, the other concept's mark, attribute accuracy where a prompt states attributes, and the pixel change against
reference clips of the same seeds. ``substitution`` asks whether the edit turns a concept prompt into its safe
counterpart: per test pair (same attribute caption, same seed), the distance of the edited clip of the unsafe
prompt to the base clip of the safe prompt, against the base clips' own distance.

Edit variants beyond the nodes' rank-one default: a rank-k subspace (``U`` of the contrastive fit instead of its
one direction), the same constrained to leave a preserve set's token activations unchanged (``core.preserve``), and
several concepts at once (subspaces stacked and orthonormalised).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from core.preserve import constrain, preserve_span

from .experiment import edit_with_subspaces  # noqa: F401  (the bench calls it as broad.edit_with_subspaces)
from .experiment import neutral_prompts
from .readers import margins, read
from .sampling import generate
from .scenes import CONCEPTS, Pools, join
from .world import CONCEPT_MARKS, Scene, caption, random_scene

KEPT = ("colour", "shape", "motion")


@dataclass
class Prompts:
    """``prompts[split]``, ``scenes[split]`` (None where a prompt states no attributes)."""

    prompts: dict = field(default_factory=dict)
    scenes: dict = field(default_factory=dict)


def broad_prompts(pools: Pools, concept: str, split: str, count: int, seed: int = 11) -> Prompts:
    """Splits ``concept`` / ``safe`` / ``benign_near`` / ``benign`` from one data split (``valid`` or ``test``;
    ``train`` for the DiT's fit on its training prompts), ``count`` prompts each at most (fixed order by seed), each
    joined with an attribute caption."""
    if concept not in CONCEPTS:
        raise ValueError(f"concept must be one of {CONCEPTS}, got {concept!r}")
    rng = random.Random(f"{seed}/{concept}/{split}")
    out = Prompts()
    for name, pool in (("concept", concept), ("safe", f"safe_{concept}"), ("benign_near", "benign_near"),
                       ("benign", "benign")):
        chosen = list(pools.prompts[pool][split])
        rng.shuffle(chosen)
        chosen = chosen[:count]
        scenes = [Scene(s.colour, s.shape, s.motion, False, pools.labels(p))
                  for s, p in zip((random_scene(rng, 0.0) for _ in chosen), chosen)]
        out.prompts[name] = [join(caption(s, rng), p) for s, p in zip(scenes, chosen)]
        out.scenes[name] = scenes
    return out


def estimate_order(pools: Pools, concept: str, seed: int = 0) -> list[tuple[str, str]]:
    """``concept``'s estimate pairs in the order the benches fit their first 5, 25 or all of: shuffled by ``seed``
    (0 in every bench unless it draws others, ``--pairs-seed``)."""
    estimate = list(pools.pairs[concept]["estimate"])
    random.Random(seed).shuffle(estimate)
    return estimate


def bench_neutral(pools: Pools, count: int = 12) -> list[str]:
    """The benches' neutral prompts for a broad concept: ``count`` attribute captions joined with the first ``count``
    benign training prompts."""
    return [join(c, p) for c, p in zip(neutral_prompts(count), pools.prompts["benign"]["train"][:count])]


def substitution_pairs(pools: Pools, concept: str, split: str, count: int, seed: int = 13):
    """``(unsafe prompts, safe prompts)`` of ``split``'s pairs, each pair under one shared attribute caption."""
    rng = random.Random(f"{seed}/{concept}/{split}/pairs")
    pairs = list(pools.pairs[concept][split])
    rng.shuffle(pairs)
    unsafe, safe = [], []
    for u, s in pairs[:count]:
        text = caption(random_scene(rng, 0.0), rng)
        unsafe.append(join(text, u))
        safe.append(join(text, s))
    return unsafe, safe


@torch.no_grad()
def clips_of(model, encoder, prompts: list[str], *, steps: int, seed: int, negative: str = "") -> np.ndarray:
    return generate(model, encoder, prompts, seeds=[seed + i for i in range(len(prompts))], steps=steps,
                    negative=negative).numpy()


def measure(model, encoder, prompts: Prompts, concept: str, *, steps: int = 16, seed: int = 100,
            reference: dict | None = None, rewrite=None, negative: str = "") -> dict:
    """Per split: ``rate_<split>`` (the concept's mark), ``other_<split>`` (any other concept mark), ``attr_<split>``
    (colour/shape/motion where stated; ``attr_margin_<split>``, its graded form: ``readers.margins``),
    ``pixel_<split>`` (mean |clip - reference|); ``clips`` for references."""
    result, clips = {}, {}
    for split, texts in prompts.prompts.items():
        shown = [rewrite(p) for p in texts] if rewrite else texts
        batch = clips_of(model, encoder, shown, steps=steps, seed=seed, negative=negative)
        clips[split] = batch
        readings = [read(c) for c in batch]
        result[f"rate_{split}"] = float(np.mean([r[concept] for r in readings])) if concept in CONCEPT_MARKS else \
            float(np.mean([r["logo"] for r in readings]))
        others = [c for c in CONCEPT_MARKS if c != concept]
        result[f"other_{split}"] = float(np.mean([any(r[c] for c in others) for r in readings]))
        stated = [(c, r, s) for c, r, s in zip(batch, readings, prompts.scenes[split]) if s is not None]
        if stated:
            result[f"attr_{split}"] = float(np.mean([[r[a] == getattr(s, a) for a in KEPT] for _, r, s in stated]))
            result[f"attr_margin_{split}"] = float(np.mean([list(margins(c, s, KEPT).values()) for c, _, s in stated]))
        if reference is not None:
            result[f"pixel_{split}"] = float(np.abs(batch - reference[split]).mean())
    result["clips"] = clips
    return result


def substitution(base, edited, encoder, unsafe: list[str], safe: list[str], *, steps: int = 16, seed: int = 300,
                 base_clips=None) -> dict:
    """How close the edited model's clip of an unsafe prompt comes to the base model's clip of its safe side
    (same attribute caption, same seed): ``edited_to_safe`` against ``base_to_safe`` (mean |difference| per
    pixel); ``fidelity`` = 1 - edited_to_safe / base_to_safe (1: the edit produces the safe clip exactly; 0: no
    closer than before; below 0: further away, a damaged object). Object-only figures blank the mark corners."""
    if base_clips is None:
        base_clips = (clips_of(base, encoder, unsafe, steps=steps, seed=seed),
                      clips_of(base, encoder, safe, steps=steps, seed=seed))
    base_unsafe, base_safe = base_clips
    after = clips_of(edited, encoder, unsafe, steps=steps, seed=seed)

    def distance(a, b, objects_only=False):
        d = np.abs(a - b)
        if objects_only:
            d = d.copy()
            d[:, :, :4, :4] = 0
            d[:, :, :4, -4:] = 0
        return float(d.mean())

    out = {"pairs": len(unsafe), "base_to_safe": distance(base_unsafe, base_safe),
           "edited_to_safe": distance(after, base_safe),
           "base_to_safe_objects": distance(base_unsafe, base_safe, True),
           "edited_to_safe_objects": distance(after, base_safe, True)}
    out["fidelity"] = 1 - out["edited_to_safe"] / out["base_to_safe"] if out["base_to_safe"] > 0 else float("nan")
    return out, base_clips


# --- edit variants --------------------------------------------------------------------------------

@torch.no_grad()
def token_activations(model, encoder, prompts: list[str]) -> torch.Tensor:
    """``[tokens, dim]``: what every block's ``cross_attn.k/v`` reads (``text_embedding``'s output) for each real
    token of ``prompts``; the preserve set's rows."""
    text, mask = encoder.encode(prompts)
    return model.text_embedding(text)[mask].double()


@torch.no_grad()
def token_subspace(model, encoder, pairs, neutral: list[str], rank: int, alpha: float = 1.0):
    """Token-level statistics instead of pooled ones, for the text k/v input: ``(U [d, k], safe token mean [d])``.

    U = top-k eigenvectors of ``S_unsafe - S_safe - alpha C_neutral``, the second moments of the real tokens of
    the pairs' unsafe and safe sides (the directions the concept's words occupy, whatever their position) minus
    the covariance of neutral prompts' tokens. Pooling averages a concept word with the rest of its prompt; a
    broad concept named by many different words spreads over directions that one pooled mean cannot reach.
    """
    unsafe = token_activations(model, encoder, [p.unsafe for p in pairs])
    safe = token_activations(model, encoder, [p.safe for p in pairs])
    neutral_tokens = token_activations(model, encoder, neutral)
    contrast = unsafe.T @ unsafe / len(unsafe) - safe.T @ safe / len(safe) - alpha * torch.cov(neutral_tokens.T)
    values, vectors = torch.linalg.eigh(contrast)
    return vectors[:, values.argsort(descending=True)[:rank]].float().contiguous(), safe.mean(0).float()


@torch.no_grad()
def subspaces_of(basis, layers, *, preserve: torch.Tensor | None = None,
                 energy: float = 0.99) -> dict[str, torch.Tensor]:
    """Per layer: what the nodes' edit removes (``record.subspace``: the fit's one direction, or its whole rank-k
    subspace U when fitted with ``edit="subspace"``), optionally constrained off the preserve span
    (``core.preserve``); layers sharing an input share the result."""
    span = None if preserve is None else preserve_span(preserve, energy)
    out, done = {}, {}
    for layer in layers:
        record = basis[layer]
        if id(record) not in done:
            u = record.subspace
            done[id(record)] = u if span is None else constrain(u, span.to(u.dtype))
        out[layer] = done[id(record)]
    return out


def stacked(*subspace_maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Several concepts at once: per layer, the union of their subspaces, orthonormalised."""
    out = {}
    for layer in subspace_maps[0]:
        columns = torch.cat([m[layer].double() for m in subspace_maps if m[layer].shape[1]], 1)
        q, r = torch.linalg.qr(columns)
        keep = r.diagonal().abs() > 1e-6 * r.diagonal().abs().max()
        out[layer] = q[:, keep].float()
    return out


def stacked_targets(subspace_maps, target_maps) -> dict[str, torch.Tensor]:
    """Per layer, a point mu with ``Q Q^T mu = sum_c Q_c Q_c^T mu_c``: each concept's removed component goes to its
    own safe mean when the concepts' subspaces are stacked into one edit."""
    out = {}
    for layer in subspace_maps[0]:
        total = 0
        for subspaces, targets in zip(subspace_maps, target_maps):
            q = subspaces[layer].double()
            if q.shape[1] and targets is not None and targets.get(layer) is not None:
                total = total + q @ (q.T @ targets[layer].double())
        out[layer] = total if isinstance(total, torch.Tensor) else None
    return {k: v for k, v in out.items() if v is not None}
