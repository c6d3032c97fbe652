"""Erasing one named concept: how much of its neighbours goes with it? (a benchmark, not a test)

Six-CD's celebrity, character, art-style and object pairs (10 targets per family, 10 pairs per target, e.g. "<name>
<doing something> | <doing something>") have never been rendered here: the organism draws none of them. What can be
measured is what Unlearning Check measures, on the organism's real text encoder (all-MiniLM-L6-v2) and trained text
layers: for an edit estimated from 5 pairs of one target, the share of a pair's unsafe-minus-safe difference that
the edit removes (``core.check``'s efficacy; in the denoiser's prediction and at the edited layers' outputs), on

- the target's 5 other pairs (held out): efficacy, which should be high;
- the same 5 unsafe sides against the same prompt naming a neighbour instead ("<name> <doing something> |
  <neighbour> <doing the same>"): how much of what tells the target from another member of its family goes
  (*identity*);
- 5 pairs of each of 5 other targets of the same family (the *neighbours*: "<neighbour> <doing something> | <doing
  something>"), which an edit of one celebrity should leave alone;
- 5 pairs of each other family (one pair of each of 5 targets), which are further away.

Three ways of estimating the edit are compared, with the same 5 unsafe sides:

- ``removal``: Six-CD's safe side, the prompt without the name ("<doing something>");
- ``substitution``: the safe side names another member of the family instead ("<other name> <doing the same>"),
  drawn from 4 other targets that are never among the neighbours measured (for target j the other nine in turn from
  j + 1: the first 4 substitute, the last 5 are measured);
- ``kept``: removal pairs, and the edit direction projected off the span of those 4 other targets' own removal
  pairs' differences (their 5 estimation pairs each; ``keep_constrained``): the null-space constraint of closed-form
  editing methods, asking the edit to leave named concepts alone.

The edit is the nodes' default (cpca, rank 4, alpha 1, text k/v of every block, target safe_mean, one direction);
neutral prompts are 12 COCO captions from the end of the file and the check's benign prompts the 12 before them
(none of them among the organism's training captions: ``organism.scenes.load_pools``). The check's efficacy proxy
ranks the organism's generated concept-rate drops at 0.83-0.95 (docs/benchmarks.md, "Does Unlearning Check predict
..."); these concepts were never learned, so the figures say how the method and the text encoder's geometry separate
names, not how a real video model renders them.
Real prompts are printed nowhere; the JSON holds figures only.

    python bench/neighbours.py [--family celebrity character artstyle object] [--json out/neighbours.json]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from check_validation import organism_forward  # noqa: E402
from core.check import DEFAULT_STRENGTHS, run_check  # noqa: E402
from core.pairs import PromptPair  # noqa: E402
from organism import experiment as ex  # noqa: E402
from organism.scenes import DATA  # noqa: E402
from organism.text import TextEncoder  # noqa: E402

FAMILIES = ("celebrity", "character", "artstyle", "object")
ESTIMATE = 5
SUBSTITUTES = 4
BASE = {"method": "cpca", "rank": 4, "alpha": 1.0}
WAYS = ("removal", "substitution", "kept")
GROUPS = ("target", "identity", "neighbours", "farther")
GRID = list(DEFAULT_STRENGTHS)
#: strengths reported beside the check's recommendation
SHOWN = (1.0, 2.0)


def load_family(data: Path, family: str) -> dict[str, list[tuple[str, str]]]:
    """``{target: [(unsafe, safe), ...]}`` in file order (10 targets of 10 pairs each in Six-CD)."""
    pairs: dict[str, list[tuple[str, str]]] = {}
    with open(data / "pairs" / f"sixcd_{family}.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            pairs.setdefault(row["target"], []).append((row["unsafe"], row["safe"]))
    return pairs


def named_span(prompt: str, name: str) -> str:
    """The part of ``prompt`` that writes ``name``: the name itself, or its longest prefix of >= 4 characters
    (Six-CD cut some prompts mid-name: "in the style of Pablo Picass")."""
    lowered = prompt.lower()
    for end in range(len(name), 3, -1):
        start = lowered.find(name[:end].lower())
        if start >= 0:
            return prompt[start:start + end]
    raise ValueError(f"no part of the target name {name!r} in a prompt of its pairs; the pair file is not Six-CD's")


def substituted(unsafe: str, name: str, other: str) -> str:
    return unsafe.replace(named_span(unsafe, name), other, 1)


def split_others(targets: list[str], index: int) -> tuple[list[str], list[str]]:
    """(substitutes, neighbours) for ``targets[index]``: the other targets in turn from the next one."""
    others = targets[index + 1:] + targets[:index]
    return others[:SUBSTITUTES], others[SUBSTITUTES:]


def estimation_pairs(pairs: list[tuple[str, str]], target: str, substitutes: list[str], way: str) -> list[PromptPair]:
    chosen = pairs[:ESTIMATE]
    if way in ("removal", "kept"):
        return [PromptPair(u, s) for u, s in chosen]
    return [PromptPair(u, substituted(u, target, substitutes[i % len(substitutes)])) for i, (u, _) in enumerate(chosen)]


def keep_constrained(basis, keep_fitter, energy: float = 0.99):
    """The basis with each input's direction projected off the span of the keep pairs' pooled differences there
    (the fewest principal directions holding ``energy`` of them; ``core.preserve``'s null-space constraint with
    differences, not activations): an edit along it leaves those differences unchanged at the edited layers."""
    from core.preserve import constrain, preserve_span

    records = {}
    for layer in basis.layers:
        record = basis[layer]
        if record.source not in records:
            unsafe, safe, _ = keep_fitter._stacked(record.source)
            differences = unsafe - safe
            span = preserve_span(differences, energy)
            direction = constrain(record.direction.double()[:, None], span)[:, 0].float()
            records[record.source] = dataclasses.replace(record, direction=direction, subspace=direction[:, None])
        records[layer] = records[record.source]
    return dataclasses.replace(basis, records={layer: records[layer] for layer in basis.layers})


def coco_captions(data: Path, count: int, skip: int) -> list[str]:
    with open(data / "prompts" / "benign" / "coco_30k.csv", newline="", encoding="utf-8") as handle:
        rows = [r["prompt"] for r in csv.DictReader(handle)]
    return rows[-(skip + count):len(rows) - skip]


def removed(model, forward, basis, pairs, benign, layers):
    """Unlearning Check of ``pairs`` on the nodes' default strength grid: ``(efficacy in the prediction, at the
    edited layers' outputs, the check's recommended strength)``, per grid strength."""
    check = run_check(model, forward, basis, pairs, benign, DEFAULT_STRENGTHS, layers=layers, target="safe_mean")
    return list(check.efficacy), list(check.efficacy_layers), check.recommended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "neighbours.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    model, encoder = ex.load_organism(), TextEncoder()
    layers = ex.layer_names(model, "text_kv", "all")
    forward = organism_forward(model, encoder, set(layers))
    neutral, benign = coco_captions(args.data, 12, 0), coco_captions(args.data, 12, 12)
    families = {f: load_family(args.data, f) for f in FAMILIES}
    start, rows = time.perf_counter(), []
    for family in args.family:
        targets = list(families[family])
        farther = [pairs[ESTIMATE + i] for other in FAMILIES if other != family
                   for i, pairs in enumerate(list(families[other].values())[:ESTIMATE])]
        for index, target in enumerate(targets):
            substitutes, neighbours = split_others(targets, index)
            held_out = families[family][target][ESTIMATE:]
            identity = [(u, substituted(u, target, neighbours[i % len(neighbours)]))
                        for i, (u, _) in enumerate(held_out)]
            near = [pair for n in neighbours for pair in families[family][n][ESTIMATE:]]
            fitted = {}  # the kept way constrains the removal way's fit: one collection and fit for both
            for way in WAYS:
                pairs = estimation_pairs(families[family][target], target, substitutes, way)
                with torch.no_grad():
                    key = tuple(pairs)
                    if key not in fitted:
                        measured = ex.collect(model, encoder, pairs, neutral, layers)
                        fitted[key] = measured.fitter.fit(**BASE, concept=target, pairs=pairs, layers=layers)
                    basis = fitted[key]
                    if way == "kept":
                        kept = [PromptPair(u, s) for name in substitutes for u, s in families[family][name][:ESTIMATE]]
                        basis = keep_constrained(basis, ex.collect(model, encoder, kept, neutral, layers).fitter)
                    figures = {name: removed(model, forward, basis, group, benign, layers)
                               for name, group in (("target", held_out), ("identity", identity), ("neighbours", near),
                                                   ("farther", farther))}
                # what a user following the check would apply: its recommendation on the target's held-out pairs
                recommended = figures["target"][2]
                at = {"recommended": GRID.index(recommended), **{f"{s:g}": GRID.index(s) for s in SHOWN}}
                row = {"family": family, "target_index": index, "way": way, "recommended": recommended}
                for name, (prediction, layers_, _) in figures.items():
                    for label, i in at.items():
                        row[f"{name}_prediction@{label}"] = prediction[i]
                        row[f"{name}_layers@{label}"] = layers_[i]
                rows.append(row)
                print(f"{family:<10} target {index} {way:<12} recommended {recommended:<4g} "
                      + "  ".join(f"{name} {row[f'{name}_prediction@recommended']:6.1%} / "
                                  f"{row[f'{name}_layers@recommended']:6.1%}" for name in GROUPS)
                      + "  (at the recommended strength; prediction / layers)", flush=True)
    summary = {}
    labels = ["recommended", *(f"{s:g}" for s in SHOWN)]
    for family in args.family:
        for way in WAYS:
            chosen = [r for r in rows if r["family"] == family and r["way"] == way]
            summary[f"{family}|{way}"] = {
                "recommended_median": statistics.median(r["recommended"] for r in chosen),
                **{f"{name}_{where}@{label}_median": statistics.median(r[f"{name}_{where}@{label}"] for r in chosen)
                   for name in GROUPS for where in ("prediction", "layers") for label in labels}}
    for label in labels:
        print(f"\nmedian over the 10 targets of a family, at strength {label}: removed share, prediction / layers")
        for key, figures in summary.items():
            print(f"{key:<24} " + (f"(median {figures['recommended_median']:g}) " if label == "recommended" else "")
                  + "  ".join(f"{name} {figures[f'{name}_prediction@{label}_median']:4.0%} / "
                              f"{figures[f'{name}_layers@{label}_median']:4.0%}" for name in GROUPS))
    report = {"seconds": time.perf_counter() - start, "estimate_pairs": ESTIMATE, "edit": {**BASE, "group": "text_kv",
              "blocks": "all", "target": "safe_mean"}, "rows": rows, "summary": summary}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"\n{report['seconds']:.0f} s; {args.json}")


if __name__ == "__main__":
    main()
