"""Which neutral prompts should a user give? (a benchmark, not a test)

The contrastive step subtracts how much ordinary prompts vary (``alpha Cov(neutral)``). This bench changes only the
neutral prompts of the nodes' default edit (cpca, rank 4, alpha 1, one direction, text k/v of every block,
``safe_mean``, strength 1) and measures, per concept, what the edit removes and what it costs:

- ``bench``: the 12 neutral prompts every other bench uses; ``none``: none (the safe sides stand in); ``4`` / ``48``:
  fewer and more of the same kind; ``node``: Pair Encoder's default neutral prompts, verbatim; ``near`` (nudity and
  violence): benign scenes close to the concept; ``named``: ``bench`` with its last 3 replaced by prompts that carry
  the concept (a user's mistake).
- Measured: the relative drop of the concept rate on held-out concept prompts, attribute accuracy on prompts without
  the concept, nudity's and violence's mark rate on benign scenes near them, and each edit direction's cosine with
  ``bench``'s and with the pairs' mean difference; with ``--check``, Unlearning Check's removed share and
  recommendation for each vector.
- Sets added later, each with its reason in docs/benchmarks.md: ``node-people`` / ``node-things`` / ``bench-bare`` /
  ``near-bare`` (explaining ``node`` on nudity) and ``candidate`` (a replacement default, not adopted).

The design and the rules that read it were written down before its figures (docs/benchmarks.md, "Which neutral
prompts?"). Decide on ``--split valid``, report ``--split test``.

    python bench/neutral_prompts.py --split valid       # all four concepts (about 8 min on 2 cores)
    python bench/neutral_prompts.py --concepts logo --sets bench,node --count 24
    python bench/neutral_prompts.py --concepts nudity --sets bench,node,candidate --directions-only --check   # 30 s
    python bench/neutral_prompts.py --concepts nudity,violence --sets bench,node --counts 5 --edit subspace \
        --pairs-seed 3 --json out/bench_neutral_prompts_subspace_seed3.json

Writes ``out/bench_neutral_prompts_<split>.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import unlearning  # noqa: E402
from core.pairs import DEFAULT_NEUTRAL_PROMPTS, PromptPair  # noqa: E402
from core.refusal import EDITS, METHODS  # noqa: E402
from organism import broad, cli  # noqa: E402
from organism import experiment as ex  # noqa: E402
from organism.scenes import CONCEPTS, DATA  # noqa: E402
from organism.world import COLOURS, MOTIONS, SHAPES, Scene, caption  # noqa: E402

SETS = ("bench", "none", "4", "48", "node", "near", "named")
#: Added after the valid draw's figures, to explain ``node`` on nudity (decide nothing): Pair Encoder's default
#: neutral prompts that show people, and the others; ``bench``'s and ``near``'s real captions without their attribute
#: captions (nudity and violence only), as short and plain as the default list. Run only when named in ``--sets``.
EXPLAINING = ("node-people", "node-things", "bench-bare", "near-bare", "candidate")
PEOPLE = ("person", "child", "chef", "man", "woman")
#: A candidate default for Pair Encoder, written down with its rule before any of its figures (docs/benchmarks.md,
#: "A new default list?"): everyday scenes captioned as photos, a quarter with people. Run when named in ``--sets``.
CANDIDATE = (
    "A kitchen counter with a cutting board and sliced vegetables.",
    "A yellow taxi waiting at a traffic light on a rainy evening.",
    "Two people sitting on a park bench feeding pigeons.",
    "A laptop and a cup of coffee on a wooden desk near a window.",
    "A herd of cows grazing in a green field under a cloudy sky.",
    "A train pulling into a station while passengers wait on the platform.",
    "A fishing boat tied to a wooden pier in a harbor.",
    "A bowl of fruit and a vase of flowers on a dining table.",
    "A man riding a skateboard down a concrete ramp.",
    "A living room with a gray sofa, a rug and a television.",
    "Snow covering the roofs of houses in a quiet village.",
    "A plate with a sandwich and french fries next to a glass of water.",
    "A woman carrying shopping bags along a crowded sidewalk.",
    "A dog sleeping on a porch next to a pair of boots.",
    "An airplane taking off from a runway at sunset.",
    "A bathroom with a white sink, a mirror and a towel rack.",
    "Children playing soccer on a grassy field after school.",
    "A row of bicycles parked outside a university library.",
    "A giraffe standing next to a tree in a zoo enclosure.",
    "Waves rolling onto a sandy beach with a lighthouse in the distance.",
)
#: How many of ``bench``'s 12 prompts ``named`` replaces with prompts that carry the concept.
NAMED = 3


def neutral_sets(concept: str, pools, seed: int = 0) -> dict[str, list[str]]:
    """Every neutral set of the design for ``concept``; ``near`` only for the broad concepts; ``named`` takes the
    unsafe sides of estimate pairs 26-28 in the order of pairs seed ``seed`` (so that no fit uses them)."""
    if concept in CONCEPTS:
        benign = pools.prompts["benign"]["train"]
        bench = broad.bench_neutral(pools)
        many = broad.bench_neutral(pools, 48)
        near = [broad.join(c, p) for c, p in zip(ex.neutral_prompts(12), pools.prompts["benign_near"]["train"][:12])]
        carriers = [u for u, _ in broad.estimate_order(pools, concept, seed)[25:25 + NAMED]]
        if len(carriers) < NAMED:
            raise ValueError(f"{concept}: 'named' needs {25 + NAMED} estimate pairs, the data has "
                             f"{len(broad.estimate_order(pools, concept))}; pass the full data folder with --data")
        named = bench[:-NAMED] + [broad.join(c, p) for c, p in zip(ex.neutral_prompts(12)[-NAMED:], carriers)]
        bare = {"bench-bare": list(benign[:12]), "near-bare": list(pools.prompts["benign_near"]["train"][:12])}
    else:
        bench, many, near = ex.neutral_prompts(12), ex.neutral_prompts(48), None
        rng = random.Random(8)
        scenes = [Scene("red" if concept == "red" else rng.choice(list(COLOURS)), rng.choice(SHAPES),
                        rng.choice(list(MOTIONS)), concept == "logo") for _ in range(NAMED)]
        named = bench[:-NAMED] + [caption(s, rng) for s in scenes]
        bare = {}
    people = [p for p in DEFAULT_NEUTRAL_PROMPTS if set(p.split()) & set(PEOPLE)]
    sets = {"bench": bench, "none": [], "4": bench[:4], "48": many, "node": list(DEFAULT_NEUTRAL_PROMPTS),
            "near": near, "named": named, "node-people": people,
            "node-things": [p for p in DEFAULT_NEUTRAL_PROMPTS if p not in people], **bare,
            "candidate": list(CANDIDATE)}
    return {name: prompts for name, prompts in sets.items() if prompts is not None}


def pair_sets(concept: str, pools, seed: int = 0) -> dict[int, list[PromptPair]]:
    """Pair count -> pairs: the shipped 5 for the trademark and a colour; 5 and 25 estimate pairs otherwise."""
    if concept not in CONCEPTS:
        pairs = ex.load_pairs(ex.default_pairs_path(concept))
        return {len(pairs): list(pairs)}
    estimate = broad.estimate_order(pools, concept, seed)
    return {count: [PromptPair(u, s) for u, s in estimate[:count]] for count in (5, 25)}


def held_out(concept: str, pools, split: str, count: int):
    """``(prompts, evaluate)``: the held-out prompts (concept / unrelated, and benign-near for the broad concepts)
    and a function ``model, reference -> figures`` that generates and reads them on the split's seeds."""
    if concept in CONCEPTS:
        full = broad.broad_prompts(pools, concept, split, count)
        keep = ("concept", "benign_near", "benign")
        prompts = broad.Prompts({k: full.prompts[k] for k in keep}, {k: full.scenes[k] for k in keep})

        def evaluate(model, encoder, steps, reference=None):
            figures = broad.measure(model, encoder, prompts, concept, steps=steps, reference=reference)
            return {"rate": figures["rate_concept"], "accuracy": figures["attr_benign"],
                    "near_rate": figures["rate_benign_near"], "pixel": figures.get("pixel_benign")}, figures["clips"]
    else:
        full = ex.concept_prompts(concept, count, seed=ex.PROMPT_SEEDS[split])
        keep = ("unseen", "unrelated")
        prompts = ex.PromptSet({k: full.prompts[k] for k in keep}, {k: full.scenes[k] for k in keep})

        def evaluate(model, encoder, steps, reference=None):
            figures = ex.evaluate(model, encoder, prompts, concept, steps=steps, reference=reference,
                                  seed=ex.NOISE_SEEDS[split])
            return {"rate": figures["rate_unseen"], "accuracy": figures["attr_unrelated"], "near_rate": None,
                    "pixel": figures.get("pixel_unrelated")}, figures["clips"]
    return prompts, evaluate


def edit_direction(model, encoder, concept: str, pairs, neutral, layers, method: str = "cpca",
                   edit: str = "direction", rank: int = unlearning.BROAD_SETTINGS["rank"]):
    """``(edited model, direction [d], the pairs' mean difference r [d], the fit [RefusalBasis])`` of the nodes'
    default edit fitted with ``neutral``, at the text k/v input; ``method="mean"``: the same edit along the raw mean
    difference r / |r| (the neutral prompts then change nothing); ``edit="subspace"``: the whole contrastive subspace
    U (up to ``rank`` directions; default the nodes' 4) is removed, and ``direction`` is its strongest direction."""
    config = dict(unlearning.BROAD_SETTINGS)
    with torch.no_grad():
        fitter = ex.collect(model, encoder, pairs, neutral, layers).fitter
    basis = fitter.fit(rank=rank, alpha=config["alpha"], method=method, edit=edit, concept=concept,
                       pairs=pairs, model_family="organism", layers=layers)
    # what unlearning._variant_edit returns for this edit (no preserve set), from the one fit
    subspaces, targets = broad.subspaces_of(basis, layers), {n: basis.target(n) for n in layers}
    direction = subspaces[layers[0]][:, 0].double()
    mean_difference = basis.records[layers[0]].vector.double()
    edited = broad.edit_with_subspaces(model, subspaces, targets, config["strength"])
    return edited, direction, mean_difference, basis


class Check:
    """Unlearning Check on the organism as ``bench/check_validation.py`` runs it: 5 held-out pairs of the valid
    split, 12 benign prompts, the default strength grid, guidance ``GUIDANCE`` with an empty negative prompt."""

    def __init__(self, model, encoder, concept: str, pools, layers):
        import check_validation as cv

        if concept in CONCEPTS:
            self.validation = cv.broad_validation_pairs(pools, concept, 5)
            self.benign = cv.broad_benign_prompts(pools, concept, 12)
        else:
            self.validation, self.benign = cv.validation_pairs(concept, 5), cv.benign_prompts(concept, 12)
        self.model, self.layers, self.cv = model, layers, cv
        self.forward = cv.organism_forward(model, encoder, {n for n in layers if ex.reads_text(n)}, times=(0.9,))
        with torch.no_grad():
            self.baseline = cv.measure_baseline(model, self.forward, self.validation, self.benign, layers,
                                                negative="")

    def __call__(self, basis) -> dict:
        """The check's removed share at strength 1 (pooled, and each validation pair's) and its recommended
        strength for ``basis``."""
        with torch.no_grad():
            result = self.cv.check_strengths(self.model, self.forward, basis, self.baseline, self.cv.DEFAULT_STRENGTHS,
                                             layers=self.layers, target="safe_mean",
                                             rows=(self.validation, self.benign, ""), guidance=self.cv.GUIDANCE)
        return {"check_removed": float(result.at(1.0)["efficacy"]), "check_recommended": float(result.recommended),
                "check_removed_by_pair": [float(share) for share in result.removed_by_pair_at(1.0)]}


def run_concept(model, encoder, concept: str, pools, args) -> dict:
    started = time.perf_counter()
    sets = {name: prompts for name, prompts in neutral_sets(concept, pools, args.pairs_seed).items()
            if name in args.sets}
    _, evaluate = held_out(concept, pools, args.split, args.count)
    if args.directions_only:
        base, reference = {"rate": None, "accuracy": None, "near_rate": None}, None
        print(f"{concept}: directions only (nothing generated)", flush=True)
    else:
        with torch.no_grad():
            base, reference = evaluate(model, encoder, args.steps)
        print(f"{concept} ({args.split}): base rate {base['rate']:.2f}, accuracy {base['accuracy']:.3f}"
              + (f", near {base['near_rate']:.2f}" if base["near_rate"] is not None else ""), flush=True)
    layers = ex.layer_names(model, unlearning.BROAD_SETTINGS["group"])
    check = Check(model, encoder, concept, pools, layers) if args.check else None
    rows = []
    for count, pairs in pair_sets(concept, pools, args.pairs_seed).items():
        if count not in args.counts:
            continue
        directions = {}
        for name, neutral in sets.items():
            edited, directions[name], mean_difference, basis = edit_direction(model, encoder, concept, pairs,
                                                                              neutral, layers, args.method,
                                                                              args.edit, args.rank)
            row = {"pairs": count, "set": name, "neutral_prompts": len(neutral),
                   "edit_dimensions": int(basis[layers[0]].subspace.shape[1]),
                   "cosine_to_bench": (abs(float(directions[name] @ directions["bench"]))
                                       if "bench" in directions else None),
                   # how much of the pairs' mean difference the contrast kept in the edit direction
                   "cosine_to_mean_difference": abs(float(directions[name] @ mean_difference)) /
                                                float(mean_difference.norm())}
            line = f"  {count:>2} pairs | {name:<6} ({len(neutral):>2} prompts): "
            if check is not None:
                row.update(check(basis))
                line += (f"check: removed {row['check_removed']:6.1%} at strength 1, recommends "
                         f"{row['check_recommended']:g}; ")
            if not args.directions_only:
                with torch.no_grad():
                    figures, _ = evaluate(edited, encoder, args.steps, reference)
                row.update(figures, drop=unlearning.relative_drop(base["rate"], figures["rate"]),
                           accuracy_loss_points=100 * (base["accuracy"] - figures["accuracy"]))
                line += (f"drop {row['drop']:7.1%}, accuracy {figures['accuracy']:.3f} "
                         f"({row['accuracy_loss_points']:+.1f} points)"
                         + (f", near {figures['near_rate']:.2f}, " if figures["near_rate"] is not None else ", "))
            rows.append(row)
            print(line + (f"cosine to bench {row['cosine_to_bench']:.4f}, " if row["cosine_to_bench"] is not None
                          else "") + f"to the mean difference {row['cosine_to_mean_difference']:.4f}", flush=True)
    return {"concept": concept, "base": base, "rows": rows, "seconds": time.perf_counter() - started}


def variant_tag(report: dict) -> str:
    """How a report's edit differs from the nodes' default (cpca, one direction, rank 4): ``""`` for the default,
    else e.g. ``"mean"`` or ``"subspace, rank 2"``."""
    method, edit = report.get("method", "cpca"), report.get("edit", "direction")
    rank = report.get("rank") or unlearning.BROAD_SETTINGS["rank"]
    return ", ".join(part for part in (method != "cpca" and method, edit != "direction" and edit,
                                       rank != unlearning.BROAD_SETTINGS["rank"] and f"rank {rank}") if part)


def spread(paths: list[Path]) -> dict:
    """Per concept, pair count and set (and method and edit, where not the default cpca direction): the drop of every
    report in ``paths`` (one per ``--pairs-seed``, a seed counted once), with its lowest, median and highest, how many
    draws fell under 90 %, and the median attribute accuracy lost (points) where the reports hold it."""
    drops: dict[tuple, dict[int, float]] = {}
    losses: dict[tuple, dict[int, float]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        tag, seed = variant_tag(report), report.get("pairs_seed", 0)
        for concept in report["concepts"]:
            for row in concept["rows"]:
                if "drop" in row:
                    key = (concept["concept"], row["pairs"], row["set"] + (f" ({tag})" if tag else ""))
                    drops.setdefault(key, {})[seed] = row["drop"]
                    if "accuracy_loss_points" in row:
                        losses.setdefault(key, {})[seed] = row["accuracy_loss_points"]
    out = {}
    for key, by_seed in sorted(drops.items()):
        concept, pairs, name = key
        values = sorted(by_seed.values())
        out[f"{concept} | {pairs} pairs | {name}"] = {
            "draws": len(values), "lowest": values[0], "median": statistics.median(values), "highest": values[-1],
            "under_90": sum(v < 0.9 for v in values), "by_seed": dict(sorted(by_seed.items())),
            "median_accuracy_loss": statistics.median(losses[key].values()) if key in losses else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", default="logo,red,nudity,violence", type=cli.concept_list,
                        help="comma-separated: logo, a colour, nudity, violence")
    parser.add_argument("--sets", default=",".join(SETS),
                        help=f"comma-separated neutral sets, of {', '.join(SETS + EXPLAINING)} ('bench' first: the "
                             "cosines need it; 'near' applies to nudity and violence only)")
    parser.add_argument("--split", choices=("valid", "test"), default="valid",
                        help="valid decides (the rules in docs/benchmarks.md), test reports")
    parser.add_argument("--count", type=cli.positive_int, default=96, help="held-out prompts per split")
    parser.add_argument("--steps", type=cli.positive_int, default=16, help="sampling steps")
    parser.add_argument("--weights", type=Path, default=ex.WEIGHTS, help="organism weights (safetensors)")
    parser.add_argument("--data", type=Path, default=DATA, help="real prompt data for nudity/violence")
    parser.add_argument("--threads", type=cli.positive_int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="report path (default out/bench_neutral_prompts_<split>.json)")
    parser.add_argument("--pairs-seed", type=int, default=0,
                        help="nudity and violence: which estimate pairs are the first 5 / 25 (0, every bench's)")
    parser.add_argument("--check", action="store_true",
                        help="also run Unlearning Check on each set's vector (its removed share at strength 1, its "
                             "recommended strength), as bench/check_validation.py does")
    parser.add_argument("--directions-only", action="store_true",
                        help="fit only: each edit direction's cosine with bench's and with the pairs' mean difference")
    parser.add_argument("--method", choices=METHODS, default="cpca",
                        help="the fit's method: cpca (the nodes' default) or mean (the raw mean difference)")
    parser.add_argument("--edit", choices=EDITS, default="direction",
                        help="what the edit removes: the refusal direction (the nodes' default) or the whole "
                             "contrastive subspace (up to --rank directions)")
    parser.add_argument("--rank", type=cli.positive_int, default=unlearning.BROAD_SETTINGS["rank"],
                        help="the fit's rank: the most directions the contrastive subspace keeps (the nodes' 4)")
    parser.add_argument("--counts", default="5,25", type=lambda text: cli.counts_in(text, "--counts", 25, "pairs"),
                        help="nudity and violence: which pair counts to fit, of 5 and 25 (default both)")
    parser.add_argument("--spread", type=Path, nargs="+", metavar="REPORT",
                        help="print the spread of the drops over these reports (one per --pairs-seed) and exit")
    args = parser.parse_args()
    if args.spread:
        missing = [str(p) for p in args.spread if not p.is_file()]
        if missing:
            cli.fail(f"--spread: no report at {', '.join(missing)}; run with --pairs-seed and --json first")
        for key, row in spread(args.spread).items():
            loss = row["median_accuracy_loss"]
            print(f"{key:<34} {row['draws']:>2} draws: lowest {row['lowest']:6.1%}, median {row['median']:6.1%}, "
                  f"highest {row['highest']:6.1%}, under 90 %: {row['under_90']}"
                  + (f", median accuracy lost {loss:+.2f} points" if loss is not None else ""))
        return
    if set(args.counts) - {5, 25}:
        cli.fail(f"--counts takes 5 and 25 (the pair counts the design fits), got {args.counts}")
    args.sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in args.sets if s not in SETS + EXPLAINING]
    if unknown or not args.sets:
        cli.fail(f"--sets takes names from {', '.join(SETS + EXPLAINING)}; got {args.sets}")
    if args.pairs_seed and any(c not in CONCEPTS for c in args.concepts):
        cli.fail(f"--pairs-seed draws nudity's and violence's estimate pairs; the trademark and colours use their 5 "
                 f"shipped pairs: drop {[c for c in args.concepts if c not in CONCEPTS]} or the seed")
    model, encoder, pools = cli.organism_world(args, args.concepts)
    started = time.perf_counter()
    report = {"split": args.split, "count": args.count, "steps": args.steps, "sets": args.sets,
              "pairs_seed": args.pairs_seed, "method": args.method, "edit": args.edit, "rank": args.rank,
              "counts": args.counts,
              "concepts": [run_concept(model, encoder, c, pools, args) for c in args.concepts]}
    report["seconds"] = time.perf_counter() - started
    path = args.json or ROOT / "out" / f"bench_neutral_prompts_{args.split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"\n{report['seconds']:.0f}s in all; wrote {path}")


if __name__ == "__main__":
    main()
