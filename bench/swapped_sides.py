"""Pairs written the wrong way round: what a vector from ``safe | unsafe`` pairs does, and whether the check sees it
(a benchmark, not a test).

Pair Encoder reads ``unsafe | safe``. With the pairs' sides swapped the fitted direction is the same line (the
projection does not care for its sign), but target ``safe_mean`` then moves every prompt's component along it to the
mean of what the pairs call safe: the *concept's* side. On the organism, for the trademark, red and the broad
concepts (estimated as ``bench/check_validation.py`` estimates them, nodes' default edit: cpca rank 4, text k/v of
every block), this measures by generating (``--split test``, ``--count`` prompts per split, 16 steps) the concept
rate before and after strength 1 with correct and swapped pairs, target ``safe_mean`` and ``zero``; and runs the
check (``core.check.run_check``: held-out validation pairs in the right order, the check's 12 benign prompts,
guidance 4 with the empty negative prompt) on both vectors: removal at strength 1, ``toward_concept`` (how far the
validation pairs' safe prompts move toward their unsafe ones) at 0.5 and 1, and the recommended strength.
Red's prompts include captions that name no colour (``nocolour``), where the model draws red at its own rate.

    python bench/swapped_sides.py [--concept logo red nudity violence] [--count 48] [--threads 1] [--check-only]
    python bench/swapped_sides.py --variants    # false alarms? the check on every variant of check_validation.py

``--variants`` fits each edit variant of ``bench/check_validation.py`` (layer groups, block halves, method mean,
target zero, rank-4/8/16 subspaces) from the *correct* pairs and runs the check on each: a correct vector should
never be flagged; reports the largest ``toward_concept`` per unit of strength up to 1 (what the check judges) and
beyond.

Writes ``out/swapped_sides.json``; prints no real prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import check_validation as cv  # noqa: E402
from core.check import DEFAULT_STRENGTHS, run_check  # noqa: E402
from core.pairs import PromptPair  # noqa: E402
from organism import broad  # noqa: E402
from organism import experiment as ex  # noqa: E402
from organism.sampling import GUIDANCE  # noqa: E402
from organism.scenes import load_pools  # noqa: E402
from organism.text import TextEncoder  # noqa: E402

BROAD = ("nudity", "violence")


def swapped(pairs):
    return [PromptPair(p.safe, p.unsafe, p.line) for p in pairs]


def setting(concept: str, count: int, pools):
    """(pairs, neutral prompts, validation pairs, benign prompts, measure(model, reference) -> rates)."""
    if concept in BROAD:
        pairs, neutral = cv.broad_estimation(pools, concept)
        prompts = broad.broad_prompts(pools, concept, "test", count)
        validation = cv.broad_validation_pairs(pools, concept)
        benign = cv.broad_benign_prompts(pools, concept)

        def measure(model, reference=None):
            return broad.measure(model, ENCODER, prompts, concept, reference=reference)
    else:
        pairs = ex.load_pairs(ex.default_pairs_path(concept))
        neutral = ex.neutral_prompts()
        prompts = ex.concept_prompts(concept, count)
        if concept == "red":
            prompts.prompts["nocolour"] = ex.uncoloured_prompts(count)
            prompts.scenes["nocolour"] = [None] * count
        validation = cv.validation_pairs(concept)
        benign = cv.benign_prompts(concept)

        def measure(model, reference=None):
            return ex.evaluate(model, ENCODER, prompts, concept, steps=16, seed=ex.NOISE_SEEDS["test"],
                               reference=reference)
    return pairs, neutral, validation, benign, measure


def rates(result: dict) -> dict:
    return {k: round(v, 4) for k, v in result.items()
            if k.startswith(("rate_", "attr_")) and "margin" not in k and isinstance(v, float)}


def main() -> None:
    global ENCODER
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", nargs="+", default=["logo", "red", "nudity", "violence"])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check-only", action="store_true", help="only the check's figures (no generating)")
    parser.add_argument("--variants", action="store_true", help="the check on every variant, correct pairs")
    parser.add_argument("--json", default=str(ROOT / "out" / "swapped_sides.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, ENCODER = ex.load_organism(), TextEncoder()
    layers = ex.layer_names(model, "text_kv")
    text_layers = {name for name in layers if ex.reads_text(name)}
    pools = load_pools() if set(args.concept) & set(BROAD) else None
    if args.variants:
        return variants(args, model, pools)
    report = {"count": args.count, "layers": "text k/v, every block", "concepts": {}}
    for concept in args.concept:
        start = time.perf_counter()
        pairs, neutral, validation, benign, measure = setting(concept, args.count, pools)
        with torch.no_grad():
            base = {"clips": None} if args.check_only else measure(model)
            reference = base.pop("clips")
        row = {"base": rates(base)}
        print(f"\n{concept}: {len(pairs)} pairs; base {rates(base)}", flush=True)
        for name, sides in (("correct", pairs), ("swapped", swapped(pairs))):
            with torch.no_grad():
                fitter = ex.collect(model, ENCODER, sides, neutral, layers).fitter
                basis = fitter.fit(rank=4, alpha=1.0, method="cpca", concept=concept, pairs=sides,
                                   model_family="organism", layers=layers)
                forward = cv.organism_forward(model, ENCODER, text_layers, times=(0.9,))
                check = run_check(model, forward, basis, validation, benign, DEFAULT_STRENGTHS, layers=layers,
                                  negative="", guidance=GUIDANCE, replay=["text_embedding"])
            row[name] = {"check": {"removed_at_1": round(check.at(1.0)["efficacy"], 4),
                                   "toward_concept_at_0.5": round(check.at(0.5)["toward_concept"], 4),
                                   "toward_concept_at_1": round(check.at(1.0)["toward_concept"], 4),
                                   "guided_collateral_at_1": round(check.at(1.0)["collateral_guided"], 4),
                                   "recommended": check.recommended, "warning": bool(check.toward_concept_warning())}}
            for target in () if args.check_only else ("safe_mean", "zero"):
                with torch.no_grad():
                    edited = measure(ex.edited_copy(model, basis, 1.0, target), reference)
                edited.pop("clips")
                row[name][target] = rates(edited)
            print(f"  {name}: check {row[name]['check']}\n    safe_mean {row[name].get('safe_mean')}\n"
                  f"    zero {row[name].get('zero')}", flush=True)
        row["seconds"] = round(time.perf_counter() - start, 1)
        report["concepts"][concept] = row
        Path(args.json).parent.mkdir(exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.json}")


def variants(args, model, pools) -> None:
    """The check on every variant of ``bench/check_validation.py`` fitted from the correct pairs."""
    configs = [("default", {})] + [(name, change) for name, change, strength in
                                   cv.OTHERS + cv.BROAD_OTHERS + cv.MORE_BROAD_OTHERS if strength == 1.0]
    candidates = ex.every_group_layer(model)
    forward = cv.organism_forward(model, ENCODER, {n for n in candidates if ex.reads_text(n)}, times=(0.9,))
    report = {}
    for concept in args.concept:
        pairs, neutral, validation, benign, _ = setting(concept, args.count, pools)
        with torch.no_grad():
            fitter = ex.collect(model, ENCODER, pairs, neutral, candidates).fitter
        rows = {}
        for name, change in configs:
            config = {**cv.BASE, "edit": "direction", **change}
            layers = ex.layer_names(model, config["group"], config["blocks"])
            with torch.no_grad():
                basis = fitter.fit(rank=config["rank"], alpha=config["alpha"], method=config["method"],
                                   edit=config["edit"], concept=concept, pairs=pairs, layers=layers)
                check = run_check(model, forward, basis, validation, benign, DEFAULT_STRENGTHS, layers=layers,
                                  target=config["target"], negative="", guidance=GUIDANCE,
                                  replay=[] if config["group"] == "text_in" else ["text_embedding"])
            per_unit = max(t / s for s, t in zip(check.strengths, check.toward_concept) if 0 < s <= 1.0)
            beyond = max(t / s for s, t in zip(check.strengths, check.toward_concept) if s > 1.0)
            rows[name] = {"largest_toward_per_strength_up_to_1": round(per_unit, 4),
                          "largest_toward_per_strength_beyond_1": round(beyond, 4),
                          "toward_at_1": round(check.at(1.0)["toward_concept"], 4),
                          "warning": bool(check.toward_concept_warning()), "recommended": check.recommended}
            print(f"  {concept} {name:<36} {rows[name]}", flush=True)
        report[concept] = rows
    Path(args.json).parent.mkdir(exist_ok=True)
    Path(args.json).write_text(json.dumps({"variants": report}, indent=1))
    print(f"\nwrote {args.json}")


ENCODER = None

if __name__ == "__main__":
    main()
