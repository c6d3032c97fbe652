"""Can a figure computed without generating flag a failing draw of 5 pairs? (a benchmark, not a test)

An edit from 5 pairs of a broad concept can fail on the organism (docs/benchmarks.md, "Which neutral prompts?": 7
of 40 edits over ten draws of pairs fell under 90 %). This bench computes, for each edit of those draws (the nodes'
default edit; nudity and violence; neutral sets ``bench`` and ``node``; 5 and 25 pairs), four figures that need no
generation, at the edited text input:

- ``held_out_shift``: for each pair, the direction fitted without it; the pair's shift along that direction as a share
  of the other pairs' mean shift along it; the lowest over the pairs;
- ``leave_one_out_cosine``: the lowest ``|cos|`` between the direction and one fitted without a pair;
- ``lowest_pair_shift``: the lowest of ``RefusalFitter.pair_shifts`` (in sample);
- ``check_lowest_pair`` (``--check``): Unlearning Check's lowest per-pair removed share at strength 1.

Then ``--decide`` reads them against the drops that ``bench/neutral_prompts.py --pairs-seed N --json ...`` measured
by generating, under the rule written down before any of these figures (docs/benchmarks.md, "Can a figure flag a
failing draw of 5 pairs?"): calibration on draws 0-9 (AUROC, threshold), confirmation on draws 10-29.

    python bench/pair_stability.py --pairs-seeds 0-9 --check --json out/bench_pair_stability_0_9.json   # 18 min
    python bench/pair_stability.py --pairs-seeds 10-29 --check --json out/bench_pair_stability_10_29.json
    python bench/pair_stability.py --decide out/bench_pair_stability_0_9.json out/bench_pair_stability_10_29.json \
        --drops out/bench_neutral_prompts_valid.json out/bench_neutral_prompts_seed*.json

``--compare`` decides the second rule of that section ("Can the check compare two vectors of one concept?"): which
of two edits of one concept removed more, as the check's figures pick it (calibration draws 0-29, confirmation 30-49):

    python bench/pair_stability.py --pairs-seeds 30-49 --check --json out/bench_pair_stability_30_49.json
    python bench/pair_stability.py --compare --decide out/bench_pair_stability_0_9.json \
        out/bench_pair_stability_10_29_check.json out/bench_pair_stability_30_49.json \
        --drops out/bench_neutral_prompts_valid.json out/bench_neutral_prompts_seed*.json

(the drops: ``bench/neutral_prompts.py --concepts nudity,violence --sets bench,node --pairs-seed N --json
out/bench_neutral_prompts_seedN.json`` for N = 1..49; draw 0 is its default ``--split valid`` report.)

Writes ``out/bench_pair_stability.json`` (figures), ``out/bench_pair_stability_decision.json`` and
``out/bench_pair_stability_comparison.json`` (``--compare``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import neutral_prompts as np_bench  # noqa: E402
import unlearning  # noqa: E402
from core.refusal import _fit_input  # noqa: E402
from organism import cli  # noqa: E402
from organism import experiment as ex  # noqa: E402

FIGURES = ("held_out_shift", "leave_one_out_cosine", "lowest_pair_shift", "check_lowest_pair")
SETS = ("bench", "node")
CONCEPTS = ("nudity", "violence")
#: An edit fails when its valid-draw drop is under this.
FAILING = 0.9
CALIBRATION = range(0, 10)
CONFIRMATION = range(10, 30)
#: The rule's bounds (docs/benchmarks.md): AUROC to qualify; on the confirmation draws, the share of failing edits
#: flagged at least, of passing 5-pair and 25-pair edits at most, and the failing 5-pair edits needed to decide.
QUALIFYING_AUROC = 0.8
CAUGHT_AT_LEAST = 0.5
FALSE_ALARMS_5_AT_MOST = 0.2
FALSE_ALARMS_25_AT_MOST = 0.1
FAILING_NEEDED = 3
#: "Can the check compare two vectors of one concept?" (docs/benchmarks.md): two edits of one concept are compared
#: when their valid-draw drops differ by at least COMPARED_GAP; the figure taken on the calibration draws must pick
#: the one that removed more in at least RIGHT_AT_LEAST of each concept's comparisons on the confirmation draws, with
#: at least COMPARISONS_NEEDED of them.
COMPARE_FIGURES = ("check_removed", "check_lowest_pair")
COMPARE_CALIBRATION = range(0, 30)
COMPARE_CONFIRMATION = range(30, 50)
COMPARED_GAP = 0.10
RIGHT_AT_LEAST = 0.8
COMPARISONS_NEEDED = 20


def stability_figures(fitter, basis, source: str) -> dict[str, float]:
    """``held_out_shift``, ``leave_one_out_cosine`` and ``lowest_pair_shift`` of ``basis`` (fitted by ``fitter``
    with the nodes' default settings) at input ``source``; rows reach the fitter pair-major."""
    record = next(r for r in basis.records.values() if r.source == source)
    n = len(basis.pairs)
    unsafe, safe, neutral = fitter._stacked(source)
    if unsafe.shape[0] % n:
        raise ValueError(f"{source!r}: {unsafe.shape[0]} rows do not split into {n} pairs")
    own_neutral = source in fitter._neutral  # without neutral prompts the fitter lets the safe sides stand in
    per_pair = unsafe.shape[0] // n
    pair_of_row = torch.arange(unsafe.shape[0]) // per_pair
    direction = record.direction.double()
    shifts, cosines = [], []
    for left_out in range(n):
        keep = pair_of_row != left_out
        fitted = _fit_input(unsafe[keep], safe[keep], neutral if own_neutral else safe[keep], rank=basis.rank,
                            alpha=basis.alpha, method=basis.method, source=source, edit=basis.edit)
        without = fitted.direction.double()
        along = ((unsafe - safe) @ without).reshape(n, per_pair).mean(1)  # [n]
        others = along[torch.arange(n) != left_out].mean()
        shifts.append(float(along[left_out] / others))
        cosines.append(abs(float(without @ direction)))
    in_sample = fitter.pair_shifts(basis, [next(layer for layer in basis.layers if basis[layer].source == source)])
    return {"held_out_shift": min(shifts), "leave_one_out_cosine": min(cosines),
            "lowest_pair_shift": min(in_sample), "held_out_shifts": shifts, "leave_one_out_cosines": cosines}


def auroc(failing: list[float], passing: list[float]) -> float:
    """The chance that a failing edit's figure lies below a passing one's (ties count half): 1 = a perfect flag."""
    if not failing or not passing:
        raise ValueError(f"AUROC needs failing and passing edits, got {len(failing)} and {len(passing)}")
    below = sum((f < p) + 0.5 * (f == p) for f in failing for p in passing)
    return below / (len(failing) * len(passing))


def best_threshold(failing: list[float], passing: list[float]) -> float:
    """The threshold t (flag: figure < t) half-way between two neighbouring values that maximises the true-positive
    rate minus the false-positive rate; ties: the lower t."""
    values = sorted(set(failing + passing))
    candidates = [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1.0]
    scores = [(sum(f < t for f in failing) / len(failing) - sum(p < t for p in passing) / len(passing), -t)
              for t in candidates]
    return -max(scores)[1]


def joined(figures: list[dict], drops: dict[tuple, float]) -> list[dict]:
    """The rows of ``figures`` that have a drop, each with its ``drop``; an edit given twice is refused."""
    keys = [(row["concept"], row["pairs"], row["set"], row["seed"]) for row in figures]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"edits given twice (pass each draw's figures once): {twice[:4]}")
    return [dict(row, drop=drops[key]) for row, key in zip(figures, keys) if key in drops]


def compared_pairs(rows: list[dict]) -> list[tuple[dict, dict]]:
    """(more, less): every two of ``rows`` (edits of one concept) whose drops differ by at least ``COMPARED_GAP``,
    the one that removed more first."""
    return [(a, b) if a["drop"] > b["drop"] else (b, a) for a, b in itertools.combinations(rows, 2)
            if abs(a["drop"] - b["drop"]) >= COMPARED_GAP - 1e-9]


def gaps(rows: list[dict], figure: str) -> list[float]:
    """Over ``compared_pairs(rows)``: the higher drop's ``figure`` minus the lower drop's (> 0: a right pick)."""
    return [more[figure] - less[figure] for more, less in compared_pairs(rows)]


def picks(rows: list[dict], figure: str) -> tuple[int, int]:
    """(right, compared) over ``compared_pairs(rows)``: right when the edit with the higher drop has the higher
    ``figure`` (equal figures: wrong)."""
    signed = gaps(rows, figure)
    return sum(gap > 0 for gap in signed), len(signed)


def picks_by_concept(rows: list[dict], figure: str) -> dict[str, dict]:
    """Per concept: right picks, comparisons, their share, and the median signed gap between the two edits'
    ``figure`` (how far apart a user must be able to read them; explaining only)."""
    out = {}
    for concept in CONCEPTS:
        signed = sorted(gaps([r for r in rows if r["concept"] == concept], figure))
        right = sum(gap > 0 for gap in signed)
        out[concept] = {"right": right, "compared": len(signed), "share": right / len(signed) if signed else None,
                        "median_gap": signed[len(signed) // 2] if signed else None}
    return out


def decide_comparison(figures: list[dict], drops: dict[tuple, float]) -> dict:
    """The rule of docs/benchmarks.md ("Can the check compare two vectors of one concept?") on ``figures`` and
    ``drops``: the figure taken on draws 0-29, confirmed per concept on draws 30-49."""
    rows = joined(figures, drops)
    lacking = sorted({r["seed"] for r in rows if not all(n in r for n in COMPARE_FIGURES)})
    if lacking:
        raise ValueError(f"the check's figures are missing for draws {lacking}: measure them again with --check")
    calibration = [r for r in rows if r["seed"] in COMPARE_CALIBRATION]
    confirmation = [r for r in rows if r["seed"] in COMPARE_CONFIRMATION]
    out = {"edits": len(rows), "calibration_edits": len(calibration), "confirmation_edits": len(confirmation),
           "candidates": {}}
    for name in COMPARE_FIGURES:
        by_concept = picks_by_concept(calibration, name)
        right, compared = (sum(c[k] for c in by_concept.values()) for k in ("right", "compared"))
        out["candidates"][name] = {"right": right, "compared": compared,
                                   "share": right / compared if compared else 0.0, "by_concept": by_concept,
                                   # read after the rule, deciding nothing
                                   "confirmation": picks_by_concept(confirmation, name)}
    taken = max(COMPARE_FIGURES, key=lambda n: (out["candidates"][n]["share"], -COMPARE_FIGURES.index(n)))
    out["taken"] = taken
    confirmed = out["candidates"][taken]["confirmation"]
    short = [c for c, v in confirmed.items() if v["compared"] < COMPARISONS_NEEDED]
    if short:
        out["adopted"] = False
        out["why"] = (f"fewer than {COMPARISONS_NEEDED} comparisons on draws 30-49 for {', '.join(short)}: "
                      "undecided")
        return out
    out["adopted"] = all(v["right"] >= RIGHT_AT_LEAST * v["compared"] for v in confirmed.values())
    out["why"] = "; ".join(f"{c}: {taken} picks right in {v['right']} of {v['compared']} ({v['share']:.0%})"
                           for c, v in confirmed.items())
    return out


def decide(figures: list[dict], drops: dict[tuple, float]) -> dict:
    """The rule of docs/benchmarks.md on ``figures`` (rows of the figures report) and ``drops`` ((concept, pairs,
    set, seed) -> valid-draw drop)."""
    rows = joined(figures, drops)
    five = [r for r in rows if r["pairs"] == 5]
    calibration = [r for r in five if r["seed"] in CALIBRATION]
    out = {"edits": len(rows), "calibration_edits": len(calibration),
           "calibration_failing": sum(r["drop"] < FAILING for r in calibration), "candidates": {}}
    for name in FIGURES:
        if not all(name in r for r in calibration):
            continue
        failing = [r[name] for r in calibration if r["drop"] < FAILING]
        passing = [r[name] for r in calibration if r["drop"] >= FAILING]
        out["candidates"][name] = {"auroc": auroc(failing, passing), "threshold": best_threshold(failing, passing),
                                   "failing": sorted(failing), "passing_lowest": sorted(passing)[:5]}
    qualified = [n for n in FIGURES if n in out["candidates"] and out["candidates"][n]["auroc"] >= QUALIFYING_AUROC]
    taken = max(qualified, key=lambda n: (out["candidates"][n]["auroc"], -FIGURES.index(n)), default=None)
    out["taken"] = taken
    if taken is None:
        out["adopted"], out["why"] = False, f"no candidate reached AUROC {QUALIFYING_AUROC} on draws 0-9"
        return out
    t = out["candidates"][taken]["threshold"]
    confirm = [r for r in five if r["seed"] in CONFIRMATION]
    failing = [r for r in confirm if r["drop"] < FAILING]
    passing = [r for r in confirm if r["drop"] >= FAILING]
    passing_25 = [r for r in rows if r["pairs"] == 25 and r["drop"] >= FAILING]
    lacking = sorted({r["seed"] for r in confirm + passing_25 if taken not in r})
    if lacking:
        raise ValueError(f"{taken} was taken but the figures of draws {lacking} lack it: measure them again with "
                         "--check (the check's figure is recorded only then)")
    caught = sum(r[taken] < t for r in failing)
    alarms = sum(r[taken] < t for r in passing)
    alarms_25 = sum(r[taken] < t for r in passing_25)
    out["confirmation"] = {"edits": len(confirm), "failing": len(failing), "caught": caught,
                           "passing": len(passing), "false_alarms": alarms, "passing_25": len(passing_25),
                           "false_alarms_25": alarms_25, "auroc": (auroc([r[taken] for r in failing],
                                                                        [r[taken] for r in passing])
                                                                  if failing and passing else None)}
    if len(failing) < FAILING_NEEDED:
        out["adopted"], out["why"] = False, f"only {len(failing)} failing edits from 5 pairs in draws 10-29: undecided"
        return out
    met = (caught >= CAUGHT_AT_LEAST * len(failing) and alarms <= FALSE_ALARMS_5_AT_MOST * len(passing)
           and alarms_25 <= FALSE_ALARMS_25_AT_MOST * len(passing_25))
    out["adopted"] = met
    out["why"] = (f"{taken} < {t:.4g} flags {caught} of {len(failing)} failing edits, {alarms} of {len(passing)} "
                  f"passing ones from 5 pairs and {alarms_25} of {len(passing_25)} from 25")
    return out


def report_drops(paths: list[Path]) -> dict[tuple, float]:
    """(concept, pairs, set, seed) -> valid-draw drop, from ``bench/neutral_prompts.py`` reports."""
    drops = {}
    for path in paths:
        report = json.loads(path.read_text())
        if report.get("split") != "valid" or np_bench.variant_tag(report):
            continue  # the rule reads the nodes' default edit (cpca, one direction, rank 4) on the valid draw
        seed = report.get("pairs_seed") or 0
        for concept in report["concepts"]:
            for row in concept["rows"]:
                if "drop" in row and row["set"] in SETS and concept["concept"] in CONCEPTS:
                    drops[(concept["concept"], row["pairs"], row["set"], seed)] = row["drop"]
    return drops


def measure(model, encoder, pools, args) -> list[dict]:
    """Every edit's figures: concept x pairs seed x pair count x neutral set."""
    config = unlearning.BROAD_SETTINGS
    layers = ex.layer_names(model, config["group"])
    rows = []
    for concept in args.concepts:
        check = np_bench.Check(model, encoder, concept, pools, layers) if args.check else None
        for seed in args.pairs_seeds:
            sets = {name: p for name, p in np_bench.neutral_sets(concept, pools, seed).items() if name in SETS}
            for count, pairs in np_bench.pair_sets(concept, pools, seed).items():
                for name, neutral in sets.items():
                    with torch.no_grad():
                        fitter = ex.collect(model, encoder, pairs, neutral, layers).fitter
                    basis = fitter.fit(rank=config["rank"], alpha=config["alpha"], method="cpca", edit="direction",
                                       concept=concept, pairs=pairs, model_family="organism", layers=layers)
                    sources = sorted({basis[layer].source for layer in layers})
                    if len(sources) != 1:
                        raise ValueError(f"expected the text k/v layers to share one input, got {sources}")
                    row = {"concept": concept, "seed": seed, "pairs": count, "set": name,
                           **stability_figures(fitter, basis, sources[0])}
                    if check is not None:
                        row.update(check(basis))
                        row["check_lowest_pair"] = min(row["check_removed_by_pair"])
                    rows.append(row)
                    print(f"{concept:<8} seed {seed:>2} | {count:>2} pairs | {name:<5}: held-out shift "
                          f"{row['held_out_shift']:+.3f}, leave-one-out cosine {row['leave_one_out_cosine']:.4f}, "
                          f"lowest pair shift {row['lowest_pair_shift']:+.3f}"
                          + (f", check's lowest pair {row['check_lowest_pair']:.1%}" if check else ""), flush=True)
    return rows


def seeds(text: str) -> list[int]:
    """``0-9`` or ``0,3,5``: pairs seeds."""
    out = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        try:
            out += list(range(int(first), int(last or first) + 1))
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"--pairs-seeds takes '0-9' or '0,3,5', got {text!r}") from error
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", default=",".join(CONCEPTS), type=cli.concept_list,
                        help="comma-separated, of nudity and violence")
    parser.add_argument("--pairs-seeds", type=seeds, default=list(CALIBRATION) + list(CONFIRMATION),
                        help="draws of pairs, '0-29' (default) or '0,3,5'")
    parser.add_argument("--check", action="store_true", help="also Unlearning Check's lowest per-pair share")
    parser.add_argument("--weights", type=Path, default=ex.WEIGHTS, help="organism weights (safetensors)")
    parser.add_argument("--data", type=Path, default=np_bench.DATA, help="real prompt data for nudity/violence")
    parser.add_argument("--threads", type=cli.positive_int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="report path (default out/bench_pair_stability.json, or "
                                                  "out/bench_pair_stability_decision.json with --decide)")
    parser.add_argument("--decide", type=Path, nargs="+", metavar="FIGURES",
                        help="figures reports of this script (their rows pooled) to decide the rule on")
    parser.add_argument("--compare", action="store_true",
                        help="with --decide: the rule of 'Can the check compare two vectors of one concept?' "
                             "(calibration draws 0-29, confirmation 30-49) instead of the flag's")
    parser.add_argument("--drops", type=Path, nargs="+", default=[], metavar="REPORT",
                        help="with --decide: bench/neutral_prompts.py reports (valid draw, one per --pairs-seed)")
    args = parser.parse_args()
    if args.compare and not args.decide:
        cli.fail("--compare decides a rule: give it --decide with the figures reports and --drops")
    if args.decide:
        missing = [str(p) for p in args.decide + args.drops if not p.is_file()]
        if missing or not args.drops:
            cli.fail(f"--decide needs figures reports and --drops with bench/neutral_prompts.py reports; "
                     f"missing: {', '.join(missing) or 'the --drops reports'}")
        rows = [row for path in args.decide for row in json.loads(path.read_text()).get("rows", [])]
        decision = (decide_comparison if args.compare else decide)(rows, report_drops(args.drops))
        path = args.json or ROOT / "out" / ("bench_pair_stability_comparison.json" if args.compare
                                            else "bench_pair_stability_decision.json")
        path.write_text(json.dumps(decision, indent=1))
        print(json.dumps(decision, indent=1))
        return
    unknown = [c for c in args.concepts if c not in CONCEPTS]
    if unknown:
        cli.fail(f"--concepts takes nudity and violence (the draws of pairs are theirs), got {unknown}")
    model, encoder, pools = cli.organism_world(args, args.concepts)
    started = time.perf_counter()
    report = {"pairs_seeds": args.pairs_seeds, "rows": measure(model, encoder, pools, args)}
    report["seconds"] = time.perf_counter() - started
    path = args.json or ROOT / "out" / "bench_pair_stability.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"\n{report['seconds']:.0f}s in all; wrote {path}")


if __name__ == "__main__":
    main()
