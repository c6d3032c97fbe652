"""Which validation pair keeps the concept? (a benchmark, not a test)

Unlearning Check reads removal pooled over its validation pairs, each pair weighed by its difference, so one wording
the edit misses can hide in that share. This bench asks whether the check's removal of one pair on its own
(``CheckResult.removed_by_pair``: ``core.check_figures.pairs_survival`` of that pair), read at one noise and flow time
0.9, tells which prompts still draw the concept after the edit. Design and adoption rule: docs/benchmarks.md, "Which
validation pair keeps the concept?", written down before any figure.

Per concept and draw: the nodes' default edit (estimated as ``bench/check_validation.py`` estimates it); the check
with every pair of the draw as a validation pair (its 12 benign prompts, the empty negative at the bench's guidance);
each pair's unsafe prompt generated with ``--seeds`` seeds before and after the edit at 0.5, 0.75, 1 and 1.25. A pair's
kept rate: of the seeds where the original draws the concept, the share that still draws it; a pair keeps the concept
when that is above 0. Figures: the AUC of the pair's unremoved share (1 - removed) for keeping the concept, and the
Spearman between the unremoved share and the kept rate, where at least 3 pairs keep it and 3 do not.

``--audit``: the same for Unlearning Audit (``core.audit.run_audit``: the edited model against the original, the same
rows, flow time 0.9), with four edits the pack did not make (``bench/foreign_edits.py``: UCE at erase scales 1 and
0.01, the k/v fine-tune for 100 steps, the fine-tune of every weight for 25) in place of the pack's strengths.

Pairs: the trademark in held-out wordings and misspellings, red in held-out wordings (50 per draw; draws ``valid`` and
``test`` differ by seed); nudity and violence: every pair of the data's ``valid`` / ``test`` split. Real prompts are
printed nowhere and not written to the JSON (counts only).

    python bench/pair_removal.py [--concept logo red nudity violence] [--split valid|test] [--seeds 8] [--audit]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from check_validation import (BASE, BENIGN_SEED, BROAD, benign_keep_pairs, broad_estimation,  # noqa: E402
                              broad_keep_pairs, organism_forward, spearman, wording_pair)
import foreign_edits as fe  # noqa: E402
from core.audit import run_audit  # noqa: E402
from core.check import DEFAULT_STRENGTHS, check_strengths, measure_baseline  # noqa: E402
from organism import experiment as ex  # noqa: E402
from organism.readers import read  # noqa: E402
from organism.sampling import GUIDANCE, generate  # noqa: E402
from organism.text import TextEncoder  # noqa: E402
from organism.world import LOGO_ADVERSARIAL, LOGO_HELD_OUT  # noqa: E402

#: Strengths whose generated clips are read (on the check's default grid).
STRENGTHS = (0.5, 0.75, 1.0, 1.25)
#: Seeds of the attribute concepts' pairs per draw (never the check bench's validation seed, 99).
PAIR_SEEDS = {"valid": 1001, "test": 2002}
#: Sampling seeds: pair i's seeds are SAMPLE_SEED + seeds * i + j.
SAMPLE_SEED = 500
#: ``--audit``: edits made elsewhere, ``(name, make(model, encoder, estimation pairs, neutral prompts))``.
FOREIGN_EDITS = [
    ("UCE, erase scale 1", lambda m, e, p, n: fe.uce_edit(m, e, p, n, erase_scale=1.0)),
    ("UCE, erase scale 0.01", lambda m, e, p, n: fe.uce_edit(m, e, p, n, erase_scale=0.01)),
    ("fine-tune k/v, 100 steps", lambda m, e, p, n: fe.ablation_finetune(m, e, p, n, steps=100)),
    ("fine-tune all, 25 steps", lambda m, e, p, n: fe.ablation_finetune(m, e, p, n, steps=25, train="all")),
]
#: Fewest pairs on each side (keeping the concept or not) for an AUC or Spearman.
MIN_SIDE = 3


def wording_pairs(concept: str, count: int, seed: int) -> list[tuple[str, str, str]]:
    """``(unsafe, safe, wording)``: a caption with the concept in a held-out wording (the trademark: also a
    misspelling), against the same caption without that wording (``bench/check_validation.py``'s pairs)."""
    rng = random.Random(seed)
    return [wording_pair(concept, rng, LOGO_HELD_OUT + LOGO_ADVERSARIAL) for _ in range(count)]


def auc(scores, positive) -> float:
    """P(a positive's score > a negative's), ties counted half (Mann-Whitney)."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return float(wins / (len(pos) * len(neg)))


def kept_rates(before: np.ndarray, after: np.ndarray) -> list[float]:
    """Per pair the original draws at all (``before`` and ``after``: ``[pairs, seeds]``), the share of the seeds
    where it draws the concept that still draw it after the edit."""
    return [float((after[i] & before[i]).sum() / before[i].sum()) for i in np.flatnonzero(before.any(1))]


def pair_figures(unremoved, kept, under: float = 0.1) -> dict:
    """What the check's per-pair figure says of the pairs that keep the concept: ``unremoved`` (1 - each pair's
    removed share) against ``kept`` (:func:`kept_rates`); AUC and Spearman only with :data:`MIN_SIDE` pairs on each
    side. ``under``: the unremoved share above which the warning names a pair (under 90 % removed)."""
    keeps = [k > 0 for k in kept]
    defined = min(sum(keeps), len(keeps) - sum(keeps)) >= MIN_SIDE
    return {"pairs": len(kept), "keep_concept": int(sum(keeps)),
            "pairs_under_90": int(sum(u > under for u in unremoved)),
            "flagged_keep": int(sum(u > under and k for u, k in zip(unremoved, keeps))),
            "auc": auc(unremoved, keeps) if defined else None,
            "spearman": spearman(unremoved, kept) if defined else None,
            "removed_median": float(1 - np.median(unremoved)), "removed_min": float(1 - max(unremoved))}


def drawn(model, encoder, prompts: list[str], concept: str, seeds: int, negative: str = "") -> np.ndarray:
    """``[prompts, seeds]``: whether each seed's clip of each prompt shows the concept."""
    shown = [p for p in prompts for _ in range(seeds)]
    noise = [SAMPLE_SEED + seeds * i + j for i in range(len(prompts)) for j in range(seeds)]
    out = []
    for start in range(0, len(shown), 64):
        clips = generate(model, encoder, shown[start:start + 64], seeds=noise[start:start + 64], negative=negative)
        for clip in clips.numpy():
            reading = read(clip)
            out.append(bool(reading[concept]) if concept in BROAD else ex.has_concept(reading, concept))
    return np.array(out).reshape(len(prompts), seeds)


def setting(concept: str, split: str, count: int, pools):
    """``(estimation pairs, neutral prompts, fit options, validation triples, benign prompts)``, as
    ``bench/check_validation.py`` builds them for the check."""
    if concept in BROAD:
        from organism import broad

        pairs, neutral = broad_estimation(pools, concept)
        unsafe, safe = broad.substitution_pairs(pools, concept, split, len(pools.pairs[concept][split]))
        validation = [(u, s, "") for u, s in zip(unsafe, safe)]
        benign = [first for first, _ in broad_keep_pairs(pools, concept, 12, BENIGN_SEED)]
        return pairs, neutral, {"model_family": "organism"}, validation, benign
    validation = wording_pairs(concept, count, PAIR_SEEDS[split])
    benign = [first for first, _ in benign_keep_pairs(concept, 12, BENIGN_SEED)]
    return ex.load_pairs(ex.default_pairs_path(concept)), ex.neutral_prompts(), {}, validation, benign


def run_concept(concept: str, args, model, encoder, pools) -> dict:
    pairs, neutral, fit_extra, triples, benign = setting(concept, args.split, args.count, pools)
    validation = [(u, s) for u, s, _ in triples]
    layers = ex.layer_names(model, BASE["group"], BASE["blocks"])
    with torch.no_grad():
        measured = ex.collect(model, encoder, pairs, neutral, layers)
        basis = measured.fitter.fit(rank=BASE["rank"], alpha=BASE["alpha"], method=BASE["method"], edit="direction",
                                    concept=concept, pairs=pairs, layers=layers, **fit_extra)
        forward = organism_forward(model, encoder, set(layers), times=(0.9,))
        baseline = measure_baseline(model, forward, validation, benign, layers, negative="")
        check = check_strengths(model, forward, basis, baseline, DEFAULT_STRENGTHS, layers=layers,
                                target=BASE["target"], rows=(validation, benign, ""), guidance=args.guidance)
        before = drawn(model, encoder, [u for u, _ in validation], concept, args.seeds)
    shown = before.any(1)
    print(f"{concept} ({args.split}): {len(validation)} pairs, {int(shown.sum())} drawn by the original "
          f"(in {before.mean():.0%} of clips); check recommends {check.recommended:g}", flush=True)
    rows = []
    for edit, make in edits(args, model, encoder, basis, check, pairs, neutral, validation, benign):
        with torch.no_grad():
            edited, removed, pooled = make()
            after = drawn(edited, encoder, [u for u, _ in validation], concept, args.seeds)
        kept = kept_rates(before, after)
        unremoved = [1.0 - removed[i] for i in np.flatnonzero(shown)]
        row = {"edit": edit, "pooled_removed": pooled, "drop": 1.0 - float((after & before).sum() / before.sum()),
               **pair_figures(unremoved, kept)}
        defined = row["auc"] is not None
        if concept not in BROAD:
            wordings = sorted({triples[i][2] for i in np.flatnonzero(shown)})
            chosen = [triples[i][2] for i in np.flatnonzero(shown)]
            row["by_wording"] = {w: {"pairs": chosen.count(w),
                                     "removed": float(np.mean([1 - u for u, c in zip(unremoved, chosen) if c == w])),
                                     "kept": float(np.mean([k for k, c in zip(kept, chosen) if c == w]))}
                                 for w in wordings}
        rows.append(row)
        figures = ("auc {auc:.2f}, spearman {spearman:+.2f}".format(**row) if defined else
                   f"too few pairs on one side (need {MIN_SIDE})")
        print(f"  {edit}: pooled removed {row['pooled_removed']:.1%}, drop {row['drop']:.1%}; "
              f"{row['keep_concept']} of {row['pairs']} pairs keep the concept, {row['pairs_under_90']} under 90 % "
              f"removed ({row['flagged_keep']} of them keep it); {figures}", flush=True)
    aucs = [r["auc"] for r in rows if r["auc"] is not None]
    return {"concept": concept, "split": args.split, "pairs": len(validation), "drawn_by_original": int(shown.sum()),
            "recommended": check.recommended, "read_by": "audit" if args.audit else "check", "edits": rows,
            "mean_auc": float(np.mean(aucs)) if aucs else None, "auc_edits": len(aucs)}


def edits(args, model, encoder, basis, check, pairs, neutral, validation, benign):
    """``(name, make)``: ``make()`` gives the edited model, each validation pair's removed share and the pooled one,
    as the check reads the pack's edit at :data:`STRENGTHS`, or with ``--audit`` as the audit reads
    :data:`FOREIGN_EDITS`."""
    if not args.audit:
        for strength in STRENGTHS:
            yield f"strength {strength:g}", lambda s=strength: (ex.edited_copy(model, basis, s, BASE["target"]),
                                                               check.removed_by_pair_at(s), check.at(s)["efficacy"])
        return
    forward = organism_forward(model, encoder, set(), times=(0.9,))
    for name, build in FOREIGN_EDITS:
        def make(build=build):
            edited = build(model, encoder, pairs, neutral)
            audit = run_audit(model, forward, organism_forward(edited, encoder, set(), times=(0.9,)), validation,
                              benign, negative="", guidance=args.guidance)
            return edited, audit.removed_by_pair, audit.removed
        yield name, make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", nargs="+", default=["logo", "red", "nudity", "violence"])
    parser.add_argument("--split", choices=("valid", "test"), default="valid",
                        help="the draw: valid to decide (the rule), test to report")
    parser.add_argument("--count", type=int, default=50, help="pairs per draw for the trademark and red")
    parser.add_argument("--seeds", type=int, default=8, help="sampling seeds per pair")
    parser.add_argument("--guidance", type=float, default=GUIDANCE)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--audit", action="store_true",
                        help="Unlearning Audit's per-pair removal of other methods' edits instead of the check's")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pools = None
    if any(c in BROAD for c in args.concept):
        from organism.scenes import DATA, load_pools

        pools = load_pools(DATA)
    model, encoder = ex.load_organism(), TextEncoder()
    start = time.perf_counter()
    report = {"split": args.split, "seeds": args.seeds, "concepts": []}
    for concept in args.concept:
        report["concepts"].append(run_concept(concept, args, model, encoder, pools))
    report["seconds"] = time.perf_counter() - start
    print("mean AUC over the edits where it is defined: " + ", ".join(
        f"{c['concept']} {c['mean_auc']:.2f} ({c['auc_edits']})" if c["mean_auc"] is not None
        else f"{c['concept']} undefined" for c in report["concepts"]))
    path = args.json or ROOT / "out" / f"pair_removal_{'audit_' if args.audit else ''}{args.split}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
