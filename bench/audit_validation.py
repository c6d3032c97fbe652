"""Does Unlearning Audit read other methods' edits? (a benchmark, not a test)

Unlearning Audit (``core.audit.run_audit``, the node's function) compares an edited model with its original. Its
figures are Unlearning Check's proxies, validated against generating on the pack's own edit variants only
(``bench/check_validation.py``). This bench measures them on edits the pack did not make (``bench/foreign_edits.py``):

- **UCE**, the closed-form cross-attention editor, at a grid of erase scales (its published defaults otherwise);
- a **Concept-Ablation-style fine-tune** of the cross-attention ``k`` / ``v`` for a grid of Adam steps, and of every
  weight for one;
- **weight noise** on every attention and FFN weight: damage with no unlearning in it, at three scales;
- the pack's own default edit at four strengths, for reference.

All edits use the concept's estimation pairs (the pack's edit is fitted from them; UCE and the fine-tune take their
safe sides as anchors) and the same neutral prompts (UCE's and the fine-tune's preserved prompts). The audit runs as
the node does: 5 held-out validation pairs, 12 benign prompts, the bench's empty negative prompt with guidance 4
(guided collateral is its headline collateral), flow time 0.9. Generating measures what ``bench/check_validation.py``
measures: the concept-rate drop, and the attribute-accuracy loss and pixel change on prompts without the concept.

Targets, written down before any audit figure of these edits was seen (those of issue 13 for the check): Spearman
>= 0.8 between the audit's removal and the drop, and between its collateral and the attribute loss, across every
variant. The grids (erase scales, steps, noise scales) were chosen on the logo's valid draw, from the generated
figures alone, to span drops from 0 to 1 and losses from none to many points.

Generations are cached per weights file, concept, draw and variant in ``out/audit_validation_cache.json`` (bump
``EDITS_REVISION`` when an edit's code changes).

    python bench/audit_validation.py --concept logo red --split valid     # tune
    python bench/audit_validation.py --concept logo red nudity violence --split test --count 150   # report
    python bench/audit_validation.py --concept nudity violence --levels 0.9 0.6 0.3 0.1   # removal by flow time
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import check_validation as cv  # noqa: E402  (the check's bench: its settings, forward and rank correlation)
import foreign_edits as fe  # noqa: E402
from core.audit import run_audit  # noqa: E402
from core.refusal import FIT_REVISION  # noqa: E402
from organism import experiment as ex  # noqa: E402
from organism.sampling import GUIDANCE  # noqa: E402
from organism.text import TextEncoder  # noqa: E402

#: Bump when an edit of ``foreign_edits`` changes, so that cached generations of the old edit are measured again.
EDITS_REVISION = 1
PACK_STRENGTHS = (0.25, 0.5, 1.0, 1.5)
UCE_ERASE_SCALES = (0.0003, 0.001, 0.003, 0.01, 0.1, 1.0)
FINETUNE_STEPS = (2, 5, 10, 25, 100)
FINETUNE_ALL_STEPS = 25
NOISE_SCALES = (0.2, 0.35, 0.5)


def variants(model, encoder, setting, basis, target: str):
    """``(method, name, make)`` for every edit; ``make()`` returns the edited copy."""
    pairs, keep = setting.pairs, setting.neutral
    for strength in PACK_STRENGTHS:
        yield "pack", f"pack edit, strength {strength:g}", lambda s=strength: ex.edited_copy(model, basis, s, target)
    for scale in UCE_ERASE_SCALES:
        yield "uce", f"UCE, erase scale {scale:g}", lambda s=scale: fe.uce_edit(model, encoder, pairs, keep,
                                                                                 erase_scale=s)
    for steps in FINETUNE_STEPS:
        yield "finetune", f"fine-tune k/v, {steps} steps", lambda n=steps: fe.ablation_finetune(model, encoder, pairs,
                                                                                              keep, steps=n)
    yield "finetune", f"fine-tune all, {FINETUNE_ALL_STEPS} steps", lambda: fe.ablation_finetune(
        model, encoder, pairs, keep, steps=FINETUNE_ALL_STEPS, train="all")
    for scale in NOISE_SCALES:
        yield "noise", f"weight noise {scale:g}", lambda s=scale: fe.weight_noise(model, s)


def setting_and_edit(concept: str, args, model, encoder, weights_key: str, pools=None):
    """The concept's setting (``bench/check_validation.py``'s), the pack's default edit fitted from its estimation
    pairs, and that edit's target."""
    setting = (cv.broad_setting(concept, args, encoder, weights_key, pools) if concept in cv.BROAD
               else cv.attribute_setting(concept, args, encoder, weights_key))
    config = {**cv.BASE, "edit": "direction"}
    layers = ex.layer_names(model, config["group"], config["blocks"])
    with torch.no_grad():
        measured = ex.collect(model, encoder, setting.pairs, setting.neutral, layers)
        basis = measured.fitter.fit(rank=config["rank"], alpha=config["alpha"], method=config["method"],
                                    edit="direction", concept=concept, pairs=setting.pairs, layers=layers,
                                    **setting.fit_extra)
    return setting, basis, config["target"]


def audit_edit(model, edited, encoder, setting, times: tuple, guidance: float):
    """Unlearning Audit's function, as the node runs it: the edited model against the original on the setting's
    validation pairs and benign prompts, with the bench's empty negative prompt, at flow ``times``."""
    return run_audit(model, cv.organism_forward(model, encoder, set(), times=times),
                     cv.organism_forward(edited, encoder, set(), times=times), setting.validation, setting.benign,
                     negative="", guidance=guidance)


def removal_levels(concept: str, args, model, encoder, weights_key: str, pools=None) -> dict:
    """``--levels``: the audit's removal of every edit read at each flow time of ``args.levels`` alone (no generating):
    how the level of an edit made elsewhere moves with where the predictions are compared."""
    setting, basis, target = setting_and_edit(concept, args, model, encoder, weights_key, pools)
    rows = []
    for method, name, make in variants(model, encoder, setting, basis, target):
        edited = make()
        removed = {}
        with torch.no_grad():
            for flow_time in args.levels:
                removed[f"{flow_time:g}"] = audit_edit(model, edited, encoder, setting, (flow_time,),
                                                       args.guidance).removed
        rows.append({"method": method, "variant": name, "removed_at_flow_time": removed})
        print(f"  {name:<30} removed " + "  ".join(f"t={t}: {r:6.1%}" for t, r in removed.items()), flush=True)
    return {"concept": concept, "flow_times": args.levels, "rows": rows}


def run_concept(concept: str, args, model, encoder, cache: dict, weights_key: str, pools=None) -> dict:
    setting, basis, target = setting_and_edit(concept, args, model, encoder, weights_key, pools)
    with torch.no_grad():
        base = setting.measure(model)
    base_clips = base.pop("clips")
    margin, pixel = setting.collateral_figures

    rows = []
    for method, name, make in variants(model, encoder, setting, basis, target):
        start = time.perf_counter()
        edited = make()
        made = time.perf_counter() - start
        with torch.no_grad():
            audit = audit_edit(model, edited, encoder, setting, tuple(args.check_times), args.guidance)
            key = (f"{setting.cache_prefix}|{name}|edits {EDITS_REVISION}|fit {FIT_REVISION}{setting.edit_key}")
            if key not in cache:
                result = setting.measure(edited, reference=base_clips)
                result.pop("clips")
                cache[key] = result
                cv.save_cache(args.cache, cache)
        result = cache[key]
        drop = 1.0 - result[setting.rate] / base[setting.rate] if base[setting.rate] else float("nan")
        row = {"method": method, "variant": name, "removed": audit.removed, "collateral": audit.headline_collateral,
               "collateral_conditional": audit.collateral, "toward_concept": audit.toward_concept,
               "difference_ratio": audit.difference_ratio, "warnings": audit.warnings(), "drop": drop,
               "attr_loss": 100.0 * (base[setting.attr] - result[setting.attr]),
               "attr_margin_loss": 100.0 * (base[margin] - result[margin]), "pixel_change": result[pixel],
               "attr_loss_concept_prompts": 100.0 * (base[setting.attr_concept] - result[setting.attr_concept]),
               "edit_seconds": made}
        rows.append(row)
        print(f"  {name:<30} audit: removed {audit.removed:7.1%} collateral {audit.headline_collateral:.3f} "
              f"toward {audit.toward_concept:+.3f}{' (warns)' if row['warnings'] else ''} | bench: drop {drop:6.1%} "
              f"attr loss {row['attr_loss']:+.1f} pts, pixels {row['pixel_change']:.4f}", flush=True)
    return {"concept": concept, **setting.report, "base": base, "rows": rows, "figures": figures(rows)}


def figures(rows: list[dict]) -> dict:
    """Rank correlations of the audit's figures with generating, across every variant and across the other
    methods' edits alone."""
    def ranks(selected):
        column = lambda key: [r[key] for r in selected]  # noqa: E731
        return {"variants": len(selected),
                "spearman_removed_vs_drop": cv.spearman(column("removed"), column("drop")),
                "spearman_collateral_vs_attr_loss": cv.spearman(column("collateral"), column("attr_loss")),
                "spearman_collateral_vs_pixel_change": cv.spearman(column("collateral"), column("pixel_change")),
                "spearman_collateral_conditional_vs_attr_loss": cv.spearman(column("collateral_conditional"),
                                                                            column("attr_loss"))}
    return {"all": ranks(rows), "other_methods": ranks([r for r in rows if r["method"] != "pack"])}


def repeatability(rows: list[dict], other: list[dict]) -> dict:
    """The bench against itself on another draw (the same variants, by name): how far its ranking of the variants
    repeats, a ceiling for the audit's, and the audit's figures against the two draws' mean."""
    theirs = {r["variant"]: r for r in other}
    common = [r for r in rows if r["variant"] in theirs]
    across = lambda key: cv.spearman([r[key] for r in common],  # noqa: E731
                                     [theirs[r["variant"]][key] for r in common])
    mean = lambda key: [(r[key] + theirs[r["variant"]][key]) / 2 for r in common]  # noqa: E731
    return {"variants": len(common), "spearman_drop_across_draws": across("drop"),
            "spearman_attr_loss_across_draws": across("attr_loss"),
            "spearman_pixel_change_across_draws": across("pixel_change"),
            "spearman_removed_vs_drop_both_draws": cv.spearman([r["removed"] for r in common], mean("drop")),
            "spearman_collateral_vs_attr_loss_both_draws": cv.spearman([r["collateral"] for r in common],
                                                                       mean("attr_loss"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", nargs="+", default=["logo", "red"])
    parser.add_argument("--split", choices=("valid", "test"), default="valid",
                        help="the generated prompts' draw: valid to tune, test to report")
    parser.add_argument("--count", type=int, default=48, help="generated prompts per split")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=5, help="the audit's validation pairs")
    parser.add_argument("--benign", type=int, default=12, help="the audit's benign prompts")
    parser.add_argument("--check-times", type=float, nargs="+", default=[0.9])
    parser.add_argument("--guidance", type=float, default=GUIDANCE)
    parser.add_argument("--data", type=Path, help="broad concepts: the prompt data folder (default ../shared/data)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "audit_validation_cache.json")
    parser.add_argument("--json", type=Path, help="report (default out/audit_validation_<split>.json)")
    parser.add_argument("--levels", type=float, nargs="+", metavar="FLOW_TIME",
                        help="no generating: the audit's removal of every edit read at each of these flow times "
                             "(0.9 = the node's default progress 0.1; 0.1 = progress 0.9); report "
                             "out/audit_validation_levels.json")
    parser.add_argument("--against", type=Path, help="a report of the same concepts on the other --split: adds the "
                                                     "bench's repeatability across the two draws")
    args = parser.parse_args()
    # what check_validation's settings read: its defaults
    args.benign_seed, args.estimate_pairs, args.more_methods = cv.BENIGN_SEED, None, False
    known = (*(c for c in ("logo", *cv.COLOURS) if ex.default_pairs_path(c).is_file()), *cv.BROAD)
    unknown = [c for c in args.concept if c not in known]
    if unknown:
        parser.exit(2, f"unknown concept {', '.join(unknown)}; one of {', '.join(known)}\n")
    pools = None
    if any(c in cv.BROAD for c in args.concept):
        from organism.scenes import DATA, load_pools

        pools = load_pools(args.data or DATA)
    torch.set_num_threads(args.threads)
    args.json = args.json or ROOT / "out" / (f"audit_validation_{args.split}.json" if args.levels is None
                                             else "audit_validation_levels.json")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    cache = json.loads(args.cache.read_text()) if args.cache.exists() else {}
    weights_key = cv.sha256(ex.WEIGHTS)
    model, encoder = ex.load_organism(), TextEncoder()
    other = {c["concept"]: c for c in json.loads(args.against.read_text())["concepts"]} if args.against else {}
    report = {"weights_sha256_16": weights_key, "split": args.split, "count": args.count, "steps": args.steps,
              "edits_revision": EDITS_REVISION, "concepts": []}
    for concept in args.concept:
        if args.levels is not None:
            print(f"concept {concept!r} (weights {weights_key}): removal by flow time")
            report["concepts"].append(removal_levels(concept, args, model, encoder, weights_key, pools))
            continue
        print(f"concept {concept!r} (weights {weights_key}, {args.split} draw, {args.count} prompts per split)")
        report["concepts"].append(run_concept(concept, args, model, encoder, cache, weights_key, pools))
        found = report["concepts"][-1]
        if concept in other:
            found["figures"]["repeatability"] = {"against": args.against.name,
                                                 **repeatability(found["rows"], other[concept]["rows"])}
        print(json.dumps(found["figures"], indent=1), flush=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
