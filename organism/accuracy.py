"""How well the organism follows prompts: per-attribute accuracy on fresh captions, read by the exact readers.

    python -m organism.accuracy --count 48

Three caption sets on fixed seeds: training wording (new combinations and templates of the training
banks), held-out wording (paraphrases never seen in training that the frozen encoder understands: "lime",
"disk", "plummeting", "rust red", the "Nexo emblem"; see ``organism.paraphrases``) and, for the record, the
rejected paraphrases whose meaning the encoder's tokens do not carry ("crimson", "cube", "moving westward").
Prints one line per set and writes ``out/organism_accuracy.json``. ``--per-phrase`` adds each held-out phrase
alone, and the mean over phrases that are new words versus new compounds of training words. ``--broad`` adds the
broad concepts on held-out real prompts (``organism.scenes``, ``--split test`` by default): each concept's mark
rate on its own prompts and on the safe sides of its pairs, the false-mark rate (either mark) on benign and
near-concept benign captions, and attribute accuracy on all of them. ``--split train`` measures the same on the
prompts the DiT trained on: the gap to ``test`` tells a fit problem from a generalisation problem.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .experiment import WEIGHTS, load_organism
from .paraphrases import is_new_word
from .readers import read
from .sampling import generate
from .text import TextEncoder
from .world import (COLOURS, HELD_OUT_WORDS, LOGO_HELD_OUT, MOTIONS, REJECTED_PARAPHRASES, SHAPES, TRAIN_WORDS, Scene,
                    caption, random_scene)

ATTRIBUTES = ("colour", "shape", "motion", "logo")
WORDINGS = ("training", "held-out", "rejected")


@torch.no_grad()
def accuracy(model, encoder, count: int, *, wording: str = "held-out", steps: int = 16, guidance: float = 4.0,
             seed: int = 3) -> dict:
    """``{attribute: fraction correct}`` over ``count`` captions (30% carry the logo) in one of ``WORDINGS``."""
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {WORDINGS}, got {wording!r}")
    rng = random.Random(seed + WORDINGS.index(wording))
    scenes = [random_scene(rng, 0.3) for _ in range(count)]
    bank = {"training": None, "held-out": HELD_OUT_WORDS, "rejected": REJECTED_PARAPHRASES}[wording]
    words = dict(colour_words=bank, other_words=bank, logo_words=LOGO_HELD_OUT) if bank else {}
    prompts = [caption(s, rng, **words) for s in scenes]
    clips = generate(model, encoder, prompts, seeds=list(range(count)), steps=steps, guidance=guidance).numpy()
    readings = [read(c) for c in clips]
    report = {a: float(np.mean([r[a] == getattr(s, a) for r, s in zip(readings, scenes)])) for a in ATTRIBUTES}
    report["all"] = float(np.mean([report[a] for a in ATTRIBUTES]))
    return report


@torch.no_grad()
def per_phrase(model, encoder, count: int = 8, *, steps: int = 16, seed: int = 5) -> list[dict]:
    """Accuracy of each held-out colour/shape/motion phrase alone: ``count`` captions "a {colour} {shape} {motion}"
    in which only that phrase is held out (the rest uses each value's first training word)."""
    rng, rows = random.Random(seed), []
    for attribute, values in (("colour", tuple(COLOURS)), ("shape", SHAPES), ("motion", tuple(MOTIONS))):
        for value in values:
            for phrase in HELD_OUT_WORDS[value]:
                scenes = [replace(Scene(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(MOTIONS)), False),
                                  **{attribute: value}) for _ in range(count)]
                words = lambda s, a: phrase if a == attribute else TRAIN_WORDS[getattr(s, a)][0]  # noqa: E731
                prompts = [f"a {words(s, 'colour')} {words(s, 'shape')} {words(s, 'motion')}" for s in scenes]
                clips = generate(model, encoder, prompts, seeds=list(range(count)), steps=steps).numpy()
                seen = [read(c)[attribute] for c in clips]
                rows.append({"attribute": attribute, "value": value, "phrase": phrase, "new_word": is_new_word(value, phrase),
                             "accuracy": float(np.mean([v == value for v in seen])), "mostly": max(set(seen), key=seen.count)})
    return rows


@torch.no_grad()
def broad_accuracy(model, encoder, pools, split: str = "test", count: int = 64, steps: int = 16,
                   noise_seeds: int = 1) -> dict:
    """Base-model targets for the broad concepts on ``split``'s prompts (each joined with an attribute caption).

    With ``noise_seeds`` > 1 every prompt is also sampled from that many noises (seeds ``1000 k + i``; k = 0 is
    the one-noise figure): ``mark_over_noises`` is then the mark rate over all of them and ``marked_on_every_noise``
    the share of prompts marked on each, which says whether a false mark belongs to the prompt or to the noise."""
    from .broad import KEPT, broad_prompts
    from .scenes import CONCEPTS

    report, done = {}, {}
    for concept in CONCEPTS:
        prompts = broad_prompts(pools, concept, split, count)
        for name, texts in prompts.prompts.items():
            key = name if name.startswith("benign") else f"{concept} {name}"
            if key in done:
                continue
            clips = generate(model, encoder, texts, seeds=list(range(len(texts))), steps=steps).numpy()
            readings = [read(c) for c in clips]
            scenes = prompts.scenes[name]
            done[key] = {
                "prompts": len(texts),
                "mark": float(np.mean([r[concept] for r in readings])) if not name.startswith("benign") else None,
                "any_mark": float(np.mean([any(r[c] for c in CONCEPTS) for r in readings])),
                "attributes": float(np.mean([[r[a] == getattr(s, a) for a in KEPT] for r, s in zip(readings, scenes)])),
            }
            if noise_seeds > 1 and not name.startswith("benign"):
                marked = [[r[concept] for r in readings]]
                for k in range(1, noise_seeds):
                    more = generate(model, encoder, texts, seeds=[1000 * k + i for i in range(len(texts))], steps=steps)
                    marked.append([read(c)[concept] for c in more.numpy()])
                marked = np.array(marked, bool)
                done[key].update(noise_seeds=noise_seeds, mark_over_noises=float(marked.mean()),
                                 marked_on_every_noise=float(marked.all(0).mean()))
            report[key] = done[key]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="organism weights (safetensors)")
    parser.add_argument("--count", type=int, default=48, help="captions per wording")
    parser.add_argument("--steps", type=int, default=16, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--per-phrase", action="store_true", help="also each held-out phrase on its own (8 captions each)")
    parser.add_argument("--broad", action="store_true", help="also the broad concepts on held-out real prompts")
    parser.add_argument("--broad-only", action="store_true", help="only the broad concepts")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test",
                        help="data split for --broad (train: how well the DiT fits the prompts it trained on, each "
                             "under a fresh attribute caption)")
    parser.add_argument("--broad-count", type=int, default=64, help="prompts per set for --broad")
    parser.add_argument("--noise-seeds", type=int, default=1, help="--broad: also sample each concept / safe-side "
                                                                  "prompt from this many noises")
    parser.add_argument("--data", type=Path, help="real prompt data (default ../shared/data)")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parents[1] / "out" / "organism_accuracy.json",
                        help="where to write the report")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, encoder = load_organism(args.weights), TextEncoder()
    report = {}
    if args.broad or args.broad_only:
        from .scenes import DATA, load_pools

        report["broad"] = broad_accuracy(model, encoder, load_pools(args.data or DATA), args.split, args.broad_count,
                                         args.steps, args.noise_seeds)
        for key, row in report["broad"].items():
            mark = "" if row["mark"] is None else f"mark {row['mark']:.3f}  "
            if "mark_over_noises" in row:
                mark += (f"(over {row['noise_seeds']} noises {row['mark_over_noises']:.3f}, on every noise "
                         f"{row['marked_on_every_noise']:.3f})  ")
            print(f"{key:<22}{mark}any mark {row['any_mark']:.3f}  attributes {row['attributes']:.3f}  ({row['prompts']})")
    if args.broad_only:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"split": args.split, **report}, indent=1))
        return
    for wording in WORDINGS:
        name = f"{wording} wording"
        report[name] = accuracy(model, encoder, args.count, wording=wording, steps=args.steps, guidance=args.guidance)
        print(f"{name:<18}" + "  ".join(f"{a} {v:.3f}" for a, v in report[name].items()))
    if args.per_phrase:
        report["per phrase"] = per_phrase(model, encoder, steps=args.steps)
        for row in report["per phrase"]:
            kind = "new word" if row["new_word"] else "compound"
            print(f"  {row['attribute']:<7}{row['value']:<9}{row['phrase']:<22}{kind:<9}{row['accuracy']:.2f}  (mostly {row['mostly']})")
        for kind, new in (("new words", True), ("new compounds", False)):
            scores = [r["accuracy"] for r in report["per phrase"] if r["new_word"] == new]
            report[f"per phrase, {kind}"] = {"phrases": len(scores), "mean": float(np.mean(scores)),
                                             "at least 0.75": sum(s >= 0.75 for s in scores)}
            print(f"per phrase, {kind}: {report[f'per phrase, {kind}']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"count": args.count, "steps": args.steps, "guidance": args.guidance, **report},
                                   indent=1))


if __name__ == "__main__":
    main()
