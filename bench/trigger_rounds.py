"""Does adding searched trigger words as estimation pairs hold against the search? (a benchmark, not a test)

``bench/prompt_attack.py`` finds four typed words that bring red and nudity back on the organism's edit. RECE (Gong
et al. 2024) answers such attacks in closed form: find what revives the concept, erase it too, repeat. With the pack a
user does that by adding pairs and fitting again, so this bench runs rounds of exactly that:

- every round edits with the rank-4 subspace (the pack's ``subspace`` edit; its default, one direction, cannot hold
  the concept and its triggers at once), at strength 1, fitted on the default edit's pairs and neutral prompts;
- each round searches the current edit (``prompt_attack.attack``, its settings unchanged), then adds ``PAIRS_PER_ROUND``
  pairs (the first target templates with the found words typed in | the same templates without them) to the
  estimation pairs, and fits the edit again with the same settings;
- measured per round: the plain held-out prompts' concept rate, every earlier round's words typed into the new edit,
  the fresh search's rate, and attribute accuracy on unrelated captions against the base model.

The design and the rule that reads it were written down before its figures (docs/benchmarks.md, "Does adding the
found words as pairs hold?").

    python bench/trigger_rounds.py                       # red and nudity, two rounds (about 35 min on 2 cores)
    python bench/trigger_rounds.py --concepts red --rounds 1

Writes ``out/bench_trigger_rounds.json``; the found words are in the JSON only.
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

import inversion_attack as inv  # noqa: E402
import prompt_attack as pa  # noqa: E402
import unlearning  # noqa: E402
from core.pairs import PromptPair  # noqa: E402
from organism import broad, cli  # noqa: E402
from organism import experiment as ex  # noqa: E402
from organism.sampling import generate  # noqa: E402
from organism.scenes import CONCEPTS, DATA  # noqa: E402

PAIRS_PER_ROUND, K, UNRELATED = 8, 4, 150


def trigger_pairs(holes: pa.Holes, words: torch.Tensor, count: int) -> list[PromptPair]:
    """``count`` pairs: a template with ``words`` typed in | the same template without them (spaces tidied)."""
    typed = holes.text(words)[:count]
    return [PromptPair(unsafe, " ".join(t.format("").split()).rstrip(" ,"))
            for unsafe, t in zip(typed, holes.templates[:count])]


def subspace_edit(model, encoder, concept: str, pools, extra: list[PromptPair]) -> tuple[dict, dict]:
    """``(subspaces, targets)`` of the rank-4 subspace edit (``unlearning``'s ``rank4`` variant) fitted on the
    default edit's pairs (those of ``inversion_attack.edits``) plus ``extra``."""
    config = {**unlearning.BROAD_SETTINGS, **unlearning.broad_variant("rank4")[1]}
    if concept in CONCEPTS:
        estimate = broad.estimate_order(pools, concept)
        count = len(estimate) if config["pairs"] is None else min(config["pairs"], len(estimate))
        pairs = [PromptPair(u, s) for u, s in estimate[:count]]
        neutral = broad.bench_neutral(pools)
    else:
        pairs, neutral = ex.load_pairs(ex.default_pairs_path(concept)), ex.neutral_prompts()
    pairs = list(pairs) + list(extra)
    layers = ex.layer_names(model, config["group"])
    with torch.no_grad():
        fitter = ex.collect(model, encoder, pairs, neutral, layers).fitter
    return unlearning._variant_edit(model, encoder, fitter, config, concept, pairs, neutral, layers, None)


def unrelated_accuracy(model, encoder, concept: str, steps: int) -> float:
    """Attribute accuracy of ``UNRELATED`` captions without the concept (colour, shape, motion; a colour concept's
    other colours), the test draw's seeds."""
    prompts = ex.concept_prompts("logo" if concept in CONCEPTS else concept, UNRELATED, seed=ex.PROMPT_SEEDS["test"])
    only = ex.PromptSet({"unrelated": prompts.prompts["unrelated"]}, {"unrelated": prompts.scenes["unrelated"]})
    with torch.no_grad():
        return ex.evaluate(model, encoder, only, concept, steps=steps, seed=ex.NOISE_SEEDS["test"])["attr_unrelated"]


def run_concept(model, encoder, concept: str, pools, args) -> dict:
    started = time.perf_counter()
    clips, fit_templates, _ = inv.targets(model, encoder, concept, pools, args.sample_steps)
    eval_templates = [t for _, t in inv.concept_templates(concept, args.count, pools, "test", seed=9)]
    fit, shown = pa.Holes(encoder.tokenizer, K, fit_templates), pa.Holes(encoder.tokenizer, K, eval_templates)
    plain_prompts = inv.held_out_prompts(concept, args.count, pools)
    seeds = [ex.NOISE_SEEDS["test"] + i for i in range(len(plain_prompts))]
    base_accuracy = unrelated_accuracy(model, encoder, concept, args.sample_steps)
    extra, found, rounds = [], [], []
    for index in range(args.rounds + 1):
        subspaces, goal = subspace_edit(model, encoder, concept, pools, extra)
        net = broad.edit_with_subspaces(model, subspaces, goal, 1.0)
        with torch.no_grad():
            plain = inv.rate(generate(net, encoder, plain_prompts, seeds=seeds, steps=args.sample_steps).numpy(),
                             concept)
        earlier = [pa.typed_rate(net, encoder, shown, w, concept, args.sample_steps) for w in found]
        search = pa.attack(net, encoder, fit, clips, args.steps)
        rate = pa.typed_rate(net, encoder, shown, search["words"], concept, args.sample_steps)
        row = {"round": index, "pairs_added": len(extra), "plain": plain, "earlier_words": earlier,
               "search": rate, "typed": search["typed"], "words": search["words"].tolist(),
               "unrelated_accuracy": unrelated_accuracy(net, encoder, concept, args.sample_steps),
               "search_seconds": search["seconds"]}
        rounds.append(row)
        print(f"  {concept} | round {index} ({len(extra)} pairs added): plain {plain:.2f}, earlier words "
              f"{', '.join(f'{e:.2f}' for e in earlier) or '-'}, search {rate:.2f}, unrelated accuracy "
              f"{row['unrelated_accuracy']:.3f} (base {base_accuracy:.3f})", flush=True)
        found.append(search["words"])
        extra += trigger_pairs(fit, search["words"], PAIRS_PER_ROUND)
    return {"concept": concept, "base_unrelated_accuracy": base_accuracy, "rounds": rounds,
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", default="red,nudity", help="comma-separated: logo, a colour, nudity, violence")
    parser.add_argument("--rounds", type=cli.positive_int, default=2, help="rounds after the first search")
    parser.add_argument("--steps", type=cli.positive_int, default=pa.STEPS, help="search steps per round")
    parser.add_argument("--count", type=cli.positive_int, default=48, help="held-out prompts and templates")
    parser.add_argument("--sample-steps", type=cli.positive_int, default=16, help="sampling steps")
    parser.add_argument("--weights", type=Path, default=ex.WEIGHTS, help="organism weights (safetensors)")
    parser.add_argument("--data", type=Path, default=DATA, help="real prompt data for nudity/violence")
    parser.add_argument("--threads", type=cli.positive_int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="report path (default out/bench_trigger_rounds.json)")
    args = parser.parse_args()
    concepts = cli.concept_list(args.concepts)
    model, encoder, pools = cli.organism_world(args, concepts)
    reports = [run_concept(model, encoder, concept, pools, args) for concept in concepts]
    out = args.json or ROOT / "out" / "bench_trigger_rounds.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": {"rounds": args.rounds, "steps": args.steps, "k": K,
                                            "pairs_per_round": PAIRS_PER_ROUND, "unrelated": UNRELATED,
                                            "count": args.count, "sample_steps": args.sample_steps},
                               "concepts": reports}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
