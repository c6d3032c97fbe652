"""End-to-end unlearning benchmark on the organism (a benchmark, not a test).

From 5 pairs it runs collect -> fit -> edit through ``core/`` (the nodes' code path) and measures,
before and after, on fixed seeds: the concept rate on held-out prompts that ask for it (seen
wording / unseen paraphrases / adversarial wording), collateral on unrelated prompts (attribute
accuracy, mean per-pixel change), the method variants, two baselines (keyword blocklist, negative
prompt) and the cost. Prints a table and writes JSON. "attr concept" is the other attributes (colour,
shape, motion) of the clips whose prompts ask for the concept: what the edit should keep there too.

    python bench/unlearning.py                      # the trademark, full variant sweep (~5-10 min CPU)
    python bench/unlearning.py --concept red        # a colour
    python bench/unlearning.py --pairs my_pairs.txt --prompts my_prompts.txt --concept logo
    python bench/unlearning.py --quick              # default variant only, fewer prompts
    python bench/unlearning.py --concept nudity     # a broad concept learned from real prompts (../shared/data)
    python bench/unlearning.py --concept violence --split valid --variants default,rank8-25,preserve  # tuning

Broad concepts (``--concept nudity|violence``): pairs come from the data's ``estimate`` split (never trained on,
never evaluated; ``--pairs FILE`` overrides), prompts from its ``test`` split (``--split valid`` for tuning:
choose variants there, report on test). Splits: ``concept`` (held-out prompts of the concept), ``safe`` (safe
sides of held-out pairs), ``benign_near`` (benign captions near a concept: hard negatives), ``benign``; every prompt
is an attribute caption joined with a real prompt, so attribute accuracy is measured on each split. Reported per
split: mark rate (the concept's corner mark), attribute accuracy, pixel change; and substitution fidelity on
held-out pairs. Real prompts are printed nowhere.

``--prompts FILE``: lines ``split: prompt`` or ``split [colour shape motion]: prompt`` (optionally ``logo`` in the
brackets): the prompt is used verbatim, the bracket says which attributes it asks for, so that attribute accuracy
is measured for it. Splits named ``benign*`` (and ``unrelated``) count as collateral.
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

from organism import cli  # noqa: E402
from organism import experiment as ex  # noqa: E402
from organism.readers import read  # noqa: E402
from organism.sampling import generate  # noqa: E402
from organism import broad  # noqa: E402
from core.pairs import PromptPair  # noqa: E402
from organism.scenes import CONCEPTS, DATA, check_data, load_pools  # noqa: E402
from organism.text import TextEncoder  # noqa: E402

DEFAULT = {"method": "cpca", "rank": 4, "alpha": 1.0, "neutral": True, "group": "text_kv", "blocks": "all",
           "strength": 1.0, "target": "safe_mean", "pool": "real text tokens"}
SWEEP = [
    ("default (cpca r4 a1, text k/v, safe_mean)", {}),
    ("method = mean", {"method": "mean"}),
    ("rank 1", {"rank": 1}),
    ("rank 8", {"rank": 8}),
    ("alpha 0 (plain PCA)", {"alpha": 0.0}),
    ("alpha 4", {"alpha": 4.0}),
    ("no neutral set (safe side stands in)", {"neutral": False}),
    ("target zero", {"target": "zero"}),
    ("layers: text_embedding.0 (encoder tokens)", {"group": "text_in"}),
    ("layers: cross_attn.o", {"group": "cross_o"}),
    ("layers: ffn.0 (video side)", {"group": "ffn0"}),
    ("layers: self_attn.q, blocks 1+ (video side)", {"group": "self_q", "blocks": "after_first"}),
    ("layers: text k/v, early blocks", {"blocks": "early"}),
    ("layers: text k/v, late blocks", {"blocks": "late"}),
    ("strength 0.5", {"strength": 0.5}),
    ("strength 1.25", {"strength": 1.25}),
    ("strength 1.5", {"strength": 1.5}),
    ("strength 2", {"strength": 2.0}),
    ("mean, target zero", {"method": "mean", "target": "zero"}),
    ("strength 0.75", {"strength": 0.75}),
    ("pool every text row, padding too", {"pool": "all tokens"}),
    ("pool every text row, strength 1.25", {"pool": "all tokens", "strength": 1.25}),
]


def _preserve_activations(model, encoder, pools):
    """Token-level text-side activations of the preserve set: 250 benign and near-concept training prompts joined with
    attribute captions, plus 100 attribute-only captions (never evaluation prompts)."""
    rng = random.Random(1)
    prompts = rng.sample(pools.prompts["benign"]["train"], 150) + rng.sample(pools.prompts["benign_near"]["train"], 100)
    prompts = [broad.join(c, p) for c, p in zip(ex.neutral_prompts(len(prompts), seed=3), prompts)]
    prompts += ex.neutral_prompts(100, seed=4)
    with torch.no_grad():
        return broad.token_activations(model, encoder, prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="logo", type=cli.concept_name,
                        help="'logo' (the Nexo trademark) or a colour such as 'red'")
    parser.add_argument("--pairs", type=Path, help="pairs file (core.pairs format); default organism/pairs/<concept>")
    parser.add_argument("--prompts", type=Path, help="'split: prompt' lines; default: generated held-out prompts")
    parser.add_argument("--weights", type=Path, default=ex.WEIGHTS, help="organism weights (safetensors)")
    parser.add_argument("--count", type=cli.positive_int, help="prompts per split (default 48, 24 with --quick)")
    parser.add_argument("--steps", type=cli.positive_int, default=16, help="sampling steps")
    parser.add_argument("--quick", action="store_true", help="default variant and baselines only")
    parser.add_argument("--json", type=Path, help="where to write the report (default out/bench_unlearning_<concept>.json)")
    parser.add_argument("--threads", type=cli.positive_int, default=2, help="torch CPU threads")
    parser.add_argument("--data", type=Path, default=DATA, help="real prompt data for nudity/violence (pairs/, prompts/)")
    parser.add_argument("--split", choices=("valid", "test"), default="test",
                        help="which held-out part to measure on (tune on valid): for nudity/violence a split of the "
                             "data; for the logo and colours the generated prompts' seed (test 1, valid 2: other "
                             "captions and seeds, the same word banks)")
    parser.add_argument("--variants", help="broad concepts: comma-separated variant keys to run (default: all; "
                                           "--quick: default); keys: " + ", ".join(BROAD_VARIANTS) + "; 'key@s' runs a variant at "
                                           "strength s (e.g. rank8-25@1.5). Logo and colours: comma-separated words "
                                           "that pick sweep rows by name (e.g. 'default,late blocks'); default: all")
    parser.add_argument("--pairs-seed", type=int, default=0, help="which estimate pairs are the first 5 / 25")
    parser.add_argument("--combine", help="several concepts in one edit, e.g. 'nudity,violence,logo': each concept's "
                                          "drop alone and combined, and benign collateral (--concept is ignored)")
    parser.add_argument("--combine-variant", default="default",
                        help="the broad concepts' variant key in --combine (the logo uses the nodes' default)")
    args = parser.parse_args()
    if args.combine:
        args.combine = args.combine.split(",")
        bad = [c for c in args.combine if c not in ("logo", *CONCEPTS)]
        if bad or len(args.combine) < 2:
            cli.fail(f"--combine takes two or more of logo, {', '.join(CONCEPTS)}; got {args.combine}")
        if broad_variant(args.combine_variant) is None or "baseline" in broad_variant(args.combine_variant)[1]:
            cli.fail(f"--combine-variant must be an edit variant key, one of "
                     f"{', '.join(k for k, v in BROAD_VARIANTS.items() if 'baseline' not in v[1])}")
    if args.concept in CONCEPTS:
        try:
            check_data(args.data)
        except ValueError as error:
            cli.fail(str(error))
        keys = (args.variants or ("default" if args.quick else ",".join(BROAD_VARIANTS))).split(",")
        unknown = [k for k in keys if broad_variant(k) is None]
        if unknown:
            cli.fail(f"unknown variant(s) {unknown}; one of {', '.join(BROAD_VARIANTS)}, each optionally with "
                     "@strength (e.g. rank8-25@1.5)")
        args.variant_keys = keys
    args.pair_list = cli.read_pairs(args.pairs, args.concept)  # bad input fails here, in one line, before loading
    args.prompt_lines = cli.read_prompt_lines(args.prompts) if args.prompts else None
    if not args.weights.is_file():
        cli.fail(f"weights file {args.weights} does not exist")
    torch.set_num_threads(args.threads)
    args.count = args.count or (24 if args.quick else 48)
    report = run_combined(args) if args.combine else run_broad(args) if args.concept in CONCEPTS else run(args)
    name = "+".join(args.combine) if args.combine else args.concept
    out = args.json or ROOT / "out" / f"bench_unlearning_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")


def sweep_rows(words: str | None) -> list:
    """The sweep rows whose name contains one of the comma-separated ``words`` (all rows for None); the default row
    always comes first (the other rows' collateral is read against the same base)."""
    if not words:
        return SWEEP
    wanted = [w.strip() for w in words.split(",") if w.strip()]
    rows = [row for row in SWEEP[1:] if any(w in row[0] for w in wanted)]
    unknown = [w for w in wanted if w != "default" and not any(w in row[0] for row in SWEEP)]
    if unknown:
        cli.fail(f"--variants {unknown} match no sweep row; rows: {'; '.join(name for name, _ in SWEEP)}")
    return [SWEEP[0], *rows]


def run(args) -> dict:
    model, encoder = ex.load_organism(args.weights), TextEncoder()
    pairs = args.pair_list
    prompt_set = (_file_prompts(args.prompt_lines) if args.prompt_lines
                  else ex.concept_prompts(args.concept, args.count, seed=ex.PROMPT_SEEDS[args.split]))
    splits = list(prompt_set.prompts)
    noise = ex.NOISE_SEEDS[args.split]
    print(f"concept {args.concept!r}: {len(pairs)} pairs; splits " + ", ".join(f"{s} ({len(prompt_set.prompts[s])})" for s in splits))
    with torch.no_grad():
        base = ex.evaluate(model, encoder, prompt_set, args.concept, steps=args.steps, seed=noise)
    reference = base.pop("clips")

    candidates = ex.every_group_layer(model)
    with torch.no_grad():
        measured = {(neutral, pool): ex.collect(model, encoder, pairs, ex.neutral_prompts() if neutral else [], candidates,
                                                pool=pool)
                    for neutral, pool in ((True, "real text tokens"), (False, "real text tokens"), (True, "all tokens"))}
    rows = [("base model", base)]
    variants = SWEEP[:1] if args.quick else sweep_rows(args.variants)
    fit_seconds, default_model = None, None
    for name, change in variants:
        config = {**DEFAULT, **change}
        layers = ex.layer_names(model, config["group"], config["blocks"])
        start = time.perf_counter()
        basis = measured[config["neutral"], config["pool"]].fitter.fit(rank=config["rank"], alpha=config["alpha"], method=config["method"],
                                                       concept=args.concept, pairs=pairs, model_family="organism",
                                                       layers=layers)
        elapsed = time.perf_counter() - start
        edited = ex.edited_copy(model, basis, config["strength"], config["target"])
        if not change:
            fit_seconds, default_model = elapsed, edited
        with torch.no_grad():
            result = ex.evaluate(edited, encoder, prompt_set, args.concept, steps=args.steps, reference=reference, seed=noise)
        result.pop("clips")
        rows.append((name, result))
        _print_row(name, result, splits) if len(rows) > 2 else None

    words = ["Nexo", "Nexxo", "N3xo", "Nex0"] if args.concept == "logo" else [args.concept]
    with torch.no_grad():
        block = ex.evaluate(model, encoder, prompt_set, args.concept, steps=args.steps, reference=reference, seed=noise,
                            rewrite=ex.blocklist(["Nexo"] if args.concept == "logo" else [args.concept]))
        negative = ex.evaluate(model, encoder, prompt_set, args.concept, steps=args.steps, reference=reference, seed=noise,
                               negative=f"{words[0]} logo" if args.concept == "logo" else args.concept)
    for result in (block, negative):
        result.pop("clips")
    rows += [("baseline: keyword blocklist", block), ("baseline: negative prompt", negative)]
    if base.get("rate_unseen"):
        for _, result in rows:
            result["unseen_drop"] = relative_drop(base["rate_unseen"], result["rate_unseen"])

    uncoloured = None
    if args.concept != "logo":
        # The colour pairs' safe side names no colour: how often the base model draws the colour then bounds the
        # drop a faithful edit can reach (it turns "a red square" into "a square", which may still come out red).
        with torch.no_grad():
            clips = generate(model, encoder, ex.uncoloured_prompts(args.count), steps=args.steps,
                             seeds=[noise + 5000 + i for i in range(args.count)]).numpy()
        uncoloured = float(np.mean([ex.has_concept(read(c), args.concept) for c in clips]))
        print(f"\nbase model, no colour named ({args.count} captions): {args.concept} drawn for {uncoloured:.2f} of them, "
              f"so a faithful edit's drop is about {relative_drop(1.0, uncoloured):.0%} at most")
    ratio = _sampling_ratio(model, default_model, encoder, steps=args.steps)
    _print_table(rows, splits)
    if "attr_unrelated_each" in base:
        print("\nunrelated prompts, per attribute: " + "; ".join(
            f"{name} " + " ".join(f"{a} {v:.3f}" for a, v in result["attr_unrelated_each"].items())
            for name, result in rows[:2]))
    print(f"\ncollect: {measured[True, 'real text tokens'].seconds:.1f}s for {len(pairs)} pairs + 12 neutral prompts x 3 timesteps "
          f"({len(candidates)} layers); fit: {fit_seconds * 1000:.1f} ms; sampling time patched/base: {ratio:.3f}")
    return {"concept": args.concept, "split": args.split, "uncoloured_rate": uncoloured, "pairs": [[p.unsafe, p.safe] for p in pairs], "splits": splits,
            "defaults": DEFAULT, "steps": args.steps, "count": args.count,
            "rows": [{"name": name, **result} for name, result in rows],
            "cost": {"collect_seconds": measured[True, "real text tokens"].seconds, "fit_seconds": fit_seconds, "sampling_ratio": ratio}}


#: Broad-concept variants: key -> (label, settings). ``pairs``: how many estimate pairs (None: all); ``full``: edit
#: the fit's whole rank-k subspace U instead of its one direction; ``preserve``: energy of the benign token span the
#: edit must leave unchanged (``core.preserve``); ``group``: layer group.
BROAD_VARIANTS = {
    "default": ("nodes' default: cpca r4, one direction, text k/v, safe_mean, 5 pairs", {}),
    "pairs25": ("25 pairs", {"pairs": 25}),
    "pairsall": ("all estimate pairs", {"pairs": None}),
    "rank4": ("rank-4 subspace, 5 pairs", {"full": True}),
    "rank8-25": ("rank-8 subspace, 25 pairs", {"full": True, "rank": 8, "pairs": 25}),
    "rank4-all": ("rank-4 subspace, all pairs", {"full": True, "rank": 4, "pairs": None}),
    "rank8-all": ("rank-8 subspace, all pairs", {"full": True, "rank": 8, "pairs": None}),
    "rank16-all": ("rank-16 subspace, all pairs", {"full": True, "rank": 16, "pairs": None}),
    "rank16-all-s1.5": ("rank-16 subspace, all pairs, strength 1.5", {"full": True, "rank": 16, "pairs": None,
                                                                       "strength": 1.5}),
    "preserve": ("rank-16, all pairs, preserve 0.99", {"full": True, "rank": 16, "pairs": None, "preserve": 0.99}),
    "preserve95": ("rank-16, all pairs, preserve 0.95", {"full": True, "rank": 16, "pairs": None, "preserve": 0.95}),
    "tokens4-all": ("token-level fit, rank 4, all pairs", {"tokens": True, "rank": 4, "pairs": None}),
    "tokens8-all": ("token-level fit, rank 8, all pairs", {"tokens": True, "rank": 8, "pairs": None}),
    "tokens16-all": ("token-level fit, rank 16, all pairs", {"tokens": True, "rank": 16, "pairs": None}),
    "pairsall-late": ("all estimate pairs, text k/v of the late blocks", {"pairs": None, "blocks": "late"}),
    "text_in": ("layers text_embedding.0, rank-16, all pairs", {"full": True, "rank": 16, "pairs": None,
                                                              "group": "text_in"}),
    "blocklist": ("baseline: keyword blocklist", {"baseline": "blocklist"}),
    "negative": ("baseline: negative prompt", {"baseline": "negative"}),
}
BROAD_SETTINGS = {"pairs": 5, "full": False, "rank": 4, "alpha": 1.0, "strength": 1.0, "preserve": None,
                  "group": "text_kv", "blocks": "all"}
def broad_variant(key: str):
    """``(label, settings)`` of a variant key, where ``key@s`` is variant ``key`` at strength ``s`` (a Pareto front
    per variant: drop against collateral over strengths); None for an unknown key."""
    name, _, strength = key.partition("@")
    if name not in BROAD_VARIANTS:
        return None
    label, change = BROAD_VARIANTS[name]
    if not strength:
        return label, change
    try:
        value = float(strength)
    except ValueError:
        return None
    if value < 0 or "baseline" in change:
        return None
    return f"{label}, strength {value:g}", {**change, "strength": value}


#: Keyword-blocklist baseline words (removed from prompts) and the negative prompt, per concept.
BLOCKLIST = {"nudity": ["nude", "nudes", "naked", "nudity", "topless", "nsfw", "sex", "sexy", "erotic", "breasts",
                        "nipples", "genitals", "porn", "undressed", "bare"],
             "violence": ["blood", "bloody", "gore", "gory", "violence", "violent", "kill", "killing", "murder", "dead",
                          "corpse", "weapon", "gun", "knife", "stab", "shot", "fight", "war", "torture", "wound"]}
NEGATIVE = {"nudity": "nudity, naked, nude", "violence": "violence, blood, gore"}


def run_broad(args) -> dict:
    """Broad concept: base, variants and baselines on held-out real prompts (see the module docstring)."""
    started = time.perf_counter()
    pools = load_pools(args.data)
    model, encoder = ex.load_organism(args.weights), TextEncoder()
    if args.prompt_lines:
        prompt_set = broad.Prompts()
        for split, attributes, prompt in args.prompt_lines:
            prompt_set.prompts.setdefault(split, []).append(prompt)
            prompt_set.scenes.setdefault(split, []).append(None if attributes is None else ex.Scene(
                attributes["colour"], attributes["shape"], attributes["motion"], attributes["logo"]))
    else:
        prompt_set = broad.broad_prompts(pools, args.concept, args.split, args.count)
    unsafe_pairs, safe_pairs = broad.substitution_pairs(pools, args.concept, args.split, args.count)
    if args.pair_list is not None:
        estimate = [(p.unsafe, p.safe) for p in args.pair_list]
    else:
        estimate = broad.estimate_order(pools, args.concept, args.pairs_seed)
    splits = list(prompt_set.prompts)
    print(f"concept {args.concept!r} ({args.split} split): {len(estimate)} estimate pairs; splits "
          + ", ".join(f"{s} ({len(prompt_set.prompts[s])})" for s in splits) + f"; substitution pairs {len(unsafe_pairs)}",
          flush=True)
    with torch.no_grad():
        base = broad.measure(model, encoder, prompt_set, args.concept, steps=args.steps)
    reference = base.pop("clips")
    rows = [("base model", base)]
    base_clips = None
    neutral = broad.bench_neutral(pools)
    preserve = _preserve_activations(model, encoder, pools)
    measured, costs = {}, {}
    for key in args.variant_keys:
        label, change = broad_variant(key)
        config = {**BROAD_SETTINGS, **change}
        start = time.perf_counter()
        if "baseline" in change:
            with torch.no_grad():
                kwargs = ({"rewrite": ex.blocklist(BLOCKLIST[args.concept])} if change["baseline"] == "blocklist"
                          else {"negative": NEGATIVE[args.concept]})
                result = broad.measure(model, encoder, prompt_set, args.concept, steps=args.steps, reference=reference,
                                       **kwargs)
            result.pop("clips")
            rows.append((label, result))
            _print_broad_row(label, result, splits)
            continue
        count = len(estimate) if config["pairs"] is None else min(config["pairs"], len(estimate))
        pairs = [PromptPair(u, s) for u, s in estimate[:count]]
        # Collected once over the group's every block; a block range only narrows what is fitted and edited.
        layers = ex.layer_names(model, config["group"], config["blocks"])
        if (count, config["group"]) not in measured:
            with torch.no_grad():
                measured[count, config["group"]] = ex.collect(model, encoder, pairs, neutral,
                                                              ex.layer_names(model, config["group"]))
        subspaces, targets = _variant_edit(model, encoder, measured[count, config["group"]].fitter, config, args.concept,
                                           pairs, neutral, layers, preserve)
        edited = broad.edit_with_subspaces(model, subspaces, targets, config["strength"])
        fit_seconds = time.perf_counter() - start
        with torch.no_grad():
            result = broad.measure(edited, encoder, prompt_set, args.concept, steps=args.steps, reference=reference)
            result.pop("clips")
            result["substitution"], base_clips = broad.substitution(model, edited, encoder, unsafe_pairs, safe_pairs,
                                                                     steps=args.steps, base_clips=base_clips)
        result["pairs"] = count
        result["edit_rank"] = int(next(iter(subspaces.values())).shape[1])
        result["preserve_leakage"] = float(sum((preserve @ subspaces[layers[0]].double()).pow(2).sum(1)) /
                                           preserve.pow(2).sum()) if config["group"] == "text_kv" else None
        costs[key] = {"collect_seconds": measured[count, config["group"]].seconds, "fit_and_edit_seconds": fit_seconds}
        rows.append((label, result))
        _print_broad_row(label, result, splits)
    for _, result in rows:
        result["drop"] = relative_drop(base["rate_concept"], result["rate_concept"]) if "rate_concept" in base else None
    _print_broad_table(rows, splits)
    print(f"\n{time.perf_counter() - started:.0f}s in all")
    return {"concept": args.concept, "split": args.split, "estimate_pairs": len(estimate), "splits": splits,
            "count": args.count, "steps": args.steps, "settings": BROAD_SETTINGS,
            "variants": {k: broad_variant(k)[1] for k in args.variant_keys},
            "rows": [{"name": name, **result} for name, result in rows], "cost": costs,
            "seconds": time.perf_counter() - started}


def _edit_parts(model, encoder, pools, concept: str, key: str, preserve, pairs_seed: int = 0):
    """(subspaces, targets, layers) of one concept's edit: a broad concept with variant ``key``, or the logo with
    the nodes' default (cpca r4, one direction, text k/v, 5 shipped pairs)."""
    if concept == "logo":
        pairs = ex.load_pairs(ex.default_pairs_path("logo"))
        config, neutral = {**BROAD_SETTINGS}, ex.neutral_prompts()
    else:
        config = {**BROAD_SETTINGS, **broad_variant(key)[1]}
        estimate = broad.estimate_order(pools, concept, pairs_seed)
        count = len(estimate) if config["pairs"] is None else min(config["pairs"], len(estimate))
        pairs = [PromptPair(u, s) for u, s in estimate[:count]]
        neutral = broad.bench_neutral(pools)
    layers = ex.layer_names(model, config["group"])
    with torch.no_grad():
        fitter = ex.collect(model, encoder, pairs, neutral, layers).fitter
    subspaces, targets = _variant_edit(model, encoder, fitter, config, concept, pairs, neutral, layers, preserve)
    return subspaces, targets, config["strength"]


def _variant_edit(model, encoder, fitter, config: dict, concept: str, pairs, neutral, layers, preserve):
    """``(subspaces, targets)`` per layer of a broad-concept variant's edit: the token-level fit (``tokens``), or the
    collected fit's direction or, with ``full``, its rank-k subspace (``edit="subspace"``, the nodes' path),
    constrained off the preserve span where ``preserve`` is set (text k/v only: the preserve set is their input)."""
    if config.get("tokens"):
        u, safe_tokens = broad.token_subspace(model, encoder, pairs, neutral, config["rank"], config["alpha"])
        return {layer: u for layer in layers}, {layer: safe_tokens for layer in layers}
    basis = fitter.fit(rank=config["rank"], alpha=config["alpha"], method="cpca",
                       edit="subspace" if config["full"] else "direction", concept=concept, pairs=pairs,
                       model_family="organism", layers=layers)
    constrained = config["preserve"] and config["group"] == "text_kv"
    subspaces = broad.subspaces_of(basis, layers, preserve=preserve if constrained else None,
                                   energy=config["preserve"] or 0.99)
    return subspaces, {layer: basis.target(layer) for layer in layers}


def run_combined(args) -> dict:
    """Each concept's drop alone and in one stacked edit; benign collateral of each."""
    started = time.perf_counter()
    pools = load_pools(args.data)
    model, encoder = ex.load_organism(args.weights), TextEncoder()
    sets = {}
    for concept in args.combine:
        if concept == "logo":
            logo = ex.concept_prompts("logo", args.count)
            sets[concept] = broad.Prompts({"concept": logo.prompts["unseen"]}, {"concept": logo.scenes["unseen"]})
        else:
            full = broad.broad_prompts(pools, concept, args.split, args.count)
            sets[concept] = broad.Prompts({"concept": full.prompts["concept"]}, {"concept": full.scenes["concept"]})
    benign = broad.broad_prompts(pools, "nudity", args.split, args.count)
    benign = broad.Prompts({k: benign.prompts[k] for k in ("benign", "benign_near")},
                           {k: benign.scenes[k] for k in ("benign", "benign_near")})
    preserve = _preserve_activations(model, encoder, pools)
    parts = {c: _edit_parts(model, encoder, pools, c, args.combine_variant, preserve, args.pairs_seed) for c in args.combine}

    def evaluate(edited, reference=None):
        out = {}
        with torch.no_grad():
            for concept, prompt_set in sets.items():
                out[concept] = broad.measure(edited, encoder, prompt_set, concept, steps=args.steps)
                out[concept].pop("clips")
            collateral = broad.measure(edited, encoder, benign, args.combine[0], steps=args.steps, reference=reference)
        return out, collateral

    base, base_benign = evaluate(model)
    with torch.no_grad():
        reference = broad.measure(model, encoder, benign, args.combine[0], steps=args.steps)["clips"]
    base_benign.pop("clips")
    rows = {"base model": (base, base_benign)}
    for concept, (subspaces, targets, strength) in parts.items():
        rows[f"{concept} alone"] = evaluate(broad.edit_with_subspaces(model, subspaces, targets, strength), reference)
    maps = [p[0] for p in parts.values()]
    combined = broad.edit_with_subspaces(model, broad.stacked(*maps), broad.stacked_targets(maps, [p[1] for p in parts.values()]),
                                         max(p[2] for p in parts.values()))
    rows["combined"] = evaluate(combined, reference)
    print(f"\n{'edit':<22}" + "".join(f"{c + ' rate':>16}{c + ' drop':>15}" for c in args.combine)
          + f"{'benign attr':>13}{'benign any mark':>17}{'benign pixel':>14}")
    report = {"concepts": args.combine, "variant": args.combine_variant, "count": args.count, "rows": {}}
    for name, (rates, collateral) in rows.items():
        collateral.pop("clips", None)
        line = f"{name:<22}"
        entry = {"collateral": collateral}
        for concept in args.combine:
            rate = rates[concept]["rate_concept"]
            drop = relative_drop(base[concept]["rate_concept"], rate)
            line += f"{rate:>16.2f}{drop:>14.0%} "
            entry[concept] = {"rate": rate, "drop": drop, "attr": rates[concept].get("attr_concept")}
        any_mark = max(collateral["rate_benign"], collateral["other_benign"])
        line += f"{collateral['attr_benign']:>13.3f}{any_mark:>17.2f}{collateral.get('pixel_benign', 0.0):>14.4f}"
        report["rows"][name] = entry
        print(line, flush=True)
    report["seconds"] = time.perf_counter() - started
    return report


def _collateral(split: str) -> bool:
    return split.startswith("benign") or split == "unrelated"


def _print_broad_row(name, result, splits):
    print(f"  {name}: " + ", ".join(f"{s} {result[f'rate_{s}']:.2f}" for s in splits)
          + (f", fidelity {result['substitution']['fidelity']:.2f}" if "substitution" in result else ""), flush=True)


def _print_broad_table(rows, splits):
    head = f"{'variant':<52}" + "".join(f"{'mark ' + s:>18}" for s in splits) + f"{'drop':>7}"
    head += "".join(f"{'attr ' + s:>18}" for s in splits) + "".join(
        f"{'pixel ' + s:>18}" for s in splits if _collateral(s)) + f"{'fidelity':>10}"
    print("\n" + head)
    print("-" * len(head))
    for name, result in rows:
        line = f"{name:<52}" + "".join(f"{result[f'rate_{s}']:>18.2f}" for s in splits)
        line += f"{result['drop']:>6.0%} " if result.get("drop") is not None and name != "base model" else f"{'-':>7}"
        line += "".join(f"{result.get(f'attr_{s}', float('nan')):>18.3f}" for s in splits)
        line += "".join(f"{result.get(f'pixel_{s}', 0.0):>18.4f}" for s in splits if _collateral(s))
        line += f"{result['substitution']['fidelity']:>10.2f}" if "substitution" in result else f"{'-':>10}"
        print(line)


def _file_prompts(lines) -> "ex.PromptSet":
    out = ex.PromptSet()
    for split, attributes, prompt in lines:
        out.prompts.setdefault(split, []).append(prompt)
        scene = None if attributes is None else ex.Scene(attributes["colour"], attributes["shape"], attributes["motion"],
                                                          attributes["logo"])
        out.scenes.setdefault(split, []).append(scene)
    return out


def _sampling_ratio(base, patched, encoder, steps: int, repeats: int = 7) -> float:
    prompts = ["a red square moving left"] * 16
    times = {"base": [], "patched": []}
    with torch.no_grad():
        for _ in range(repeats):
            for name, model in (("base", base), ("patched", patched)):
                start = time.perf_counter()
                generate(model, encoder, prompts, seeds=list(range(16)), steps=steps)
                times[name].append(time.perf_counter() - start)
    return float(np.median(times["patched"]) / np.median(times["base"]))


def relative_drop(before: float, after: float) -> float:
    """How much of the concept rate an edit removed, relative to the base model's (the paper's 74 % / 85 %)."""
    return 1.0 - after / before if before else float("nan")


def _columns(splits):
    concept = [s for s in splits if s != "unrelated"]
    return concept, "unrelated" in splits


def _print_row(name, result, splits):
    concept, _ = _columns(splits)
    print(f"  {name}: " + ", ".join(f"{s} {result[f'rate_{s}']:.2f}" for s in concept), flush=True)


def _print_table(rows, splits):
    concept, unrelated = _columns(splits)
    head = f"{'variant':<44}" + "".join(f"{'rate ' + s:>17}" for s in concept)
    drops = all("unseen_drop" in result for _, result in rows)
    if drops:
        head += f"{'unseen drop':>13}"
    head += f"{'attr concept':>14}"
    if unrelated:
        head += f"{'attr unrelated':>16}{'pixel change':>14}"
    print("\n" + head)
    print("-" * len(head))
    for name, result in rows:
        line = f"{name:<44}" + "".join(f"{result[f'rate_{s}']:>17.2f}" for s in concept)
        if drops:
            line += f"{result['unseen_drop']:>12.0%} "
        kept = [result[f"attr_{s}"] for s in concept if f"attr_{s}" in result]
        line += f"{np.mean(kept) if kept else float('nan'):>14.3f}"
        if unrelated:
            attr = result.get("attr_unrelated")
            line += f"{attr if attr is not None else float('nan'):>16.3f}{result.get('pixel_unrelated', 0.0):>14.4f}"
        print(line)


if __name__ == "__main__":
    main()
