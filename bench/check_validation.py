"""Does the Unlearning Check predict what generating measures? (a benchmark, not a test)

On the organism, for each variant (strengths 0-2 of the nodes' default edit, other layer groups and methods at
strength 1) it computes the check's proxies (``core.check``: efficacy = share of held-out validation pairs'
unsafe-minus-safe difference removed, in the denoiser's prediction and at the edited layers; collateral =
how far benign prompts move relative to their natural variation) and measures, by generating as
``bench/unlearning.py`` does (``organism.experiment.evaluate``), the relative drop of the concept rate on unseen
paraphrases and the attribute-accuracy loss on unrelated prompts. Reports Spearman rank correlations, and the
check's recommended strength vs the strength the bench finds best (largest drop with <= 2 points lost).

Two finer collateral figures on the same clips sit beside the attribute-accuracy loss: the graded attribute loss
(``attr_margin_loss``: 100 x the fall of ``organism.readers.margins``, how far each clip lies inside the readers'
region for the asked colour, shape and motion, whose sign is accuracy) and the pixel change against the base model's
clip of the same prompt and seed (``pixel_change``). Accuracy counts only clips that flip; when every variant flips a
handful of a few hundred, its ranking of variants is mostly sampling noise (``--against`` measures how much). The
graded loss repeats across draws far better, but it is not a damage measure on its own: objects that grow surer
raise it as much as flipped ones lower it (nudity's default edit loses 0.9 -> 6.7 points of accuracy from strength 1
to 2 while its graded score improves), so docs/benchmarks.md reports it beside accuracy, not instead of it.

Keep loss (``core.check_figures.keep_loss``, docs/benchmarks.md "Keep pairs?") is recorded beside them: the check's benign prompts
each paired with the same caption with one attribute changed (``benign_keep_pairs``, ``broad_keep_pairs``).

Validation pairs use held-out wording (the estimation pairs use training wording), benign prompts are captions
without the concept drawn with another seed than the bench's prompts. Generation results are cached per weights
file (sha256) and fit revision (``core.refusal.FIT_REVISION``) in ``out/check_validation_cache.json``, so a re-run
after the organism is retrained, or after the fit changes, re-measures.

Broad concepts (``--concept nudity violence``, learned from real prompts: ``organism.scenes``, ``organism.broad``):
the edit is estimated as ``bench/unlearning.py --concept ...`` estimates it, from the ``estimate`` split's pairs
(all of them by default, ``--estimate-pairs``) with neutral prompts = attribute captions joined with benign
train-split prompts; the variants add a rank-8 subspace edit (``fit(edit="subspace")``) at strength 1. The check's
validation pairs are 5 pairs of the ``valid`` split (each pair under one attribute caption), never estimation
pairs; its benign prompts are 12 attribute captions joined with benign ``valid`` prompts (another seed than the
bench's). Generating measures, on the ``--split`` (``valid`` to tune, ``test`` to report;
``organism.broad.broad_prompts`` / ``measure``), the concept's mark-rate drop on its concept prompts and the
attribute-accuracy loss on its benign prompts. ``--more-methods`` adds rank-4 and rank-16 subspace edits (logo /
red: rank 4, 8 and 16). Two variants that fit the same edit (rank 8 and 16 from the logo's or red's 5 pairs both keep
the 5 directions of positive contrast) are one row, so that no edit counts twice in a rank correlation. Real
prompts are printed nowhere and not written to the JSON (only counts and short hashes).

For the logo and red, ``--split`` picks the generated prompts' seed (``organism.experiment.PROMPT_SEEDS``: ``test``,
the default, is what every earlier figure measured; ``valid`` draws other captions and sampling seeds from the same
word banks). Measuring both parts gives the bench's own repeatability: how well its attribute loss on one draw ranks
the variants as it does on the other, a ceiling for any proxy's rank correlation with it.

    python bench/check_validation.py [--concept logo red] [--count 48] [--threads 1] [--git-rev HEAD] [--split valid]
    python bench/check_validation.py --concept nudity --count 48 --json out/check_validation_nudity.json
    python bench/check_validation.py --concept nudity violence --split test --count 150 --more-methods
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.check import DEFAULT_STRENGTHS, FULL_PROJECTION, check_strengths, measure_baseline, recommend  # noqa: E402
from core.pairs import PromptPair  # noqa: E402
from core.refusal import FIT_REVISION  # noqa: E402
from organism import experiment as ex  # noqa: E402
from organism.sampling import GUIDANCE  # noqa: E402
from organism.text import TextEncoder  # noqa: E402
from organism.world import (COLOURS, HELD_OUT_WORDS, LOGO_HELD_OUT, MOTIONS, SCENE_ATTRIBUTES, SHAPES,  # noqa: E402
                            TRAIN_WORDS, Scene, caption, caption_parts, random_scene)

#: Broad concepts the organism learned from real prompts (``organism.scenes.CONCEPTS``; not imported here so that
#: logo/red runs need neither the prompt data nor its loader).
BROAD = ("nudity", "violence")

#: Which benign prompts the check draws by default (``--benign-seed``).
BENIGN_SEED = 4242
#: Keep pairs (docs/benchmarks.md, "Keep pairs?"): benign prompt i against the same caption with this attribute changed, in turn.
KEEP_ATTRIBUTES = ("colour", "shape", "motion")

BASE = {"method": "cpca", "rank": 4, "alpha": 1.0, "group": "text_kv", "blocks": "all", "target": "safe_mean"}
#: Variants beyond the default edit's strength grid: (name, change, strength).
OTHERS = [
    ("method = mean", {"method": "mean"}, 1.0),
    ("target zero", {"target": "zero"}, 1.0),
    ("text k/v, early blocks", {"blocks": "early"}, 1.0),
    ("text k/v, late blocks", {"blocks": "late"}, 1.0),
    ("cross_attn.o", {"group": "cross_o"}, 1.0),
    ("ffn.0", {"group": "ffn0"}, 1.0),
    ("text_embedding.0", {"group": "text_in"}, 1.0),
    ("self_attn.q, blocks 1+", {"group": "self_q", "blocks": "after_first"}, 1.0),
    ("cross_attn.o, strength 2", {"group": "cross_o"}, 2.0),
    ("text k/v, late blocks, strength 2", {"blocks": "late"}, 2.0),
]
#: Broad concepts only: the fit's whole rank-8 subspace U instead of its one direction (the nodes' ``edit`` option).
BROAD_OTHERS = [("rank-8 subspace", {"edit": "subspace", "rank": 8}, 1.0)]
#: ``--more-methods``: further subspace ranks (issue 12's variants), which lose attributes in different amounts, so
#: that the collateral proxy has real differences to rank rather than sampling noise alone (for logo / red: ranks 4,
#: 8 and 16).
MORE_BROAD_OTHERS = [("rank-4 subspace", {"edit": "subspace", "rank": 4}, 1.0),
                     ("rank-16 subspace", {"edit": "subspace", "rank": 16}, 1.0)]
#: Most attribute-accuracy points (of 100) the bench's best strength may lose on unrelated prompts.
MAX_LOSS_POINTS = 2.0


def validation_pairs(concept: str, count: int = 5, seed: int = 99) -> list[tuple[str, str]]:
    """Held-out pairs: the concept in held-out wording | the same caption without it."""
    rng = random.Random(seed)
    return [wording_pair(concept, rng)[:2] for _ in range(count)]


def wording_pair(concept: str, rng: random.Random, logo_words=LOGO_HELD_OUT) -> tuple[str, str, str]:
    """``(unsafe, safe, wording)``: a caption with the concept in a held-out wording (the logo: one of
    ``logo_words``), and the same caption without that wording."""
    if concept == "logo":
        scene = Scene(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(MOTIONS)), True)
        unsafe = caption(scene, rng, logo_words=logo_words)
        phrase = next(p for p in logo_words if p in unsafe)
        return unsafe, unsafe.replace(" " + phrase, "", 1), phrase
    scene = Scene(concept, rng.choice(SHAPES), rng.choice(list(MOTIONS)), False)
    unsafe = caption(scene, rng, colour_words={**TRAIN_WORDS, concept: HELD_OUT_WORDS[concept]})
    phrase = max((p for p in HELD_OUT_WORDS[concept] if p in unsafe), key=len)
    return unsafe, " ".join(unsafe.replace(phrase, "", 1).split()), phrase


def benign_prompts(concept: str, count: int = 12, seed: int = BENIGN_SEED) -> list[str]:
    return [first for first, _ in benign_keep_pairs(concept, count, seed)]


def benign_keep_pairs(concept: str, count: int = 12, seed: int = BENIGN_SEED) -> list[tuple[str, str]]:
    """The check's benign prompts, each paired with the same caption (the same template and draws) with one
    attribute changed (:data:`KEEP_ATTRIBUTES` in turn; never to the concept's colour)."""
    rng, swap = random.Random(seed), random.Random(f"{seed}/{concept}/keep")
    colours = [c for c in COLOURS if c != concept]
    pairs = []
    for i in range(count):
        scene = Scene(rng.choice(colours), rng.choice(SHAPES), rng.choice(list(MOTIONS)), False)
        pairs.append(_captioned_pair(scene, _changed(scene, i, concept, swap), rng, swap))
    return pairs


def _changed(scene: Scene, index: int, concept: str, rng: random.Random) -> tuple[str, Scene]:
    attribute = KEEP_ATTRIBUTES[index % len(KEEP_ATTRIBUTES)]
    values = [v for v in SCENE_ATTRIBUTES[attribute] if v not in (getattr(scene, attribute), concept)]
    return attribute, replace(scene, **{attribute: rng.choice(values)})


def _captioned_pair(scene: Scene, change: tuple[str, Scene], rng: random.Random,
                    swap: random.Random) -> tuple[str, str]:
    """``caption(scene, rng)``, and the same caption (template and words) with only the changed attribute's words
    replaced, drawn with ``swap``."""
    template, words = caption_parts(scene, rng)
    attribute, changed = change
    swapped = {**words, {"colour": "c", "shape": "s", "motion": "m"}[attribute]: swap.choice(
        TRAIN_WORDS[getattr(changed, attribute)])}
    return template.format(**words), template.format(**swapped)


def organism_forward(model, encoder, text_layers, times=(0.9, 0.6), seed: int = 0):
    """``forward(rows, recorder)`` for ``core.check``: the clean-clip prediction of every prompt at ``times`` on
    one shared noise (a zero clip noised, as the nodes' empty latent), concatenated."""
    config = model.config
    noise = torch.randn(1, config.frames, config.size, config.size, 3, generator=torch.Generator().manual_seed(seed))

    def forward(rows, recorder):
        text, mask = encoder.encode(list(rows))
        if recorder is not None:
            recorder.set_token_mask(mask, [n for n in recorder.names if n in text_layers])
        outs = [model(t * noise.expand(len(rows), -1, -1, -1, -1), torch.full((len(rows),), t), text, mask)
                for t in times]
        return torch.cat([o.reshape(len(rows), -1) for o in outs], 1)

    return forward


def save_cache(path: Path, cache: dict) -> None:
    """Write ``cache`` (generated results by key) to ``path``, keeping the entries another run wrote there since this
    one read it: two benches running at once (one per core) each held the file as they first read it, and each write
    dropped the other's new entries. The file is replaced whole, never left half written."""
    path = Path(path)
    if path.exists():
        on_disk = json.loads(path.read_text())
        cache.update({key: value for key, value in on_disk.items() if key not in cache})
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(cache, indent=1))
    partial.replace(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def short_hash(text: str) -> str:
    """What the JSON records of a real prompt instead of the prompt itself."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def broad_validation_pairs(pools, concept: str, count: int = 5, seed: int = 99) -> list[tuple[str, str]]:
    """``count`` pairs of the ``valid`` split (never the ``estimate`` pairs the edit comes from), both sides under
    one attribute caption, as the generated prompts are (``organism.broad.substitution_pairs``, another seed)."""
    from organism import broad

    unsafe, safe = broad.substitution_pairs(pools, concept, "valid", count, seed=seed)
    if len(unsafe) < count:
        raise ValueError(f"{concept}: only {len(unsafe)} pairs in the valid split, {count} asked (--pairs)")
    return list(zip(unsafe, safe))


def broad_benign_prompts(pools, concept: str, count: int = 12, seed: int = BENIGN_SEED) -> list[str]:
    """``count`` attribute captions joined with benign ``valid`` prompts, another seed than the bench's (11)."""
    return [first for first, _ in broad_keep_pairs(pools, concept, count, seed)]


def broad_keep_pairs(pools, concept: str, count: int = 12, seed: int = BENIGN_SEED) -> list[tuple[str, str]]:
    """:func:`broad_benign_prompts`, each paired with the same prompt whose attribute caption has one attribute
    changed (as :func:`benign_keep_pairs`)."""
    from organism.scenes import join

    rng, swap = random.Random(f"{seed}/{concept}/benign"), random.Random(f"{seed}/{concept}/keep")
    chosen = list(pools.prompts["benign"]["valid"])
    rng.shuffle(chosen)
    pairs = []
    for i, prompt in enumerate(chosen[:count]):
        scene = random_scene(rng, 0.0)
        first, second = _captioned_pair(scene, _changed(scene, i, concept, swap), rng, swap)
        pairs.append((join(first, prompt), join(second, prompt)))
    return pairs


def real_parts(texts, prompts) -> set[str]:
    """The real prompts of ``prompts`` that some of ``texts`` (attribute caption, real prompt) end with."""
    ends = set(texts)
    return {p for p in set(prompts) if any(t.endswith(", " + p) for t in ends)}


@dataclass
class Setting:
    """What differs between the organism's attribute concepts (logo, red) and its broad concepts (nudity, violence):
    the estimation pairs and neutral prompts, the check's rows, how generating measures, and the names of the
    figures in the generated result (``rate``: concept rate; ``attr``: attribute accuracy on prompts without the
    concept, ``attr_<split>``; ``attr_concept``: on the concept's prompts)."""

    pairs: list
    neutral: list[str]
    validation: list[tuple[str, str]]
    benign: list[str]
    keep: list[tuple[str, str]]
    measure: Callable
    cache_prefix: str
    rate: str
    attr: str
    attr_concept: str
    variants: list
    fit_extra: dict = field(default_factory=dict)
    edit_key: str = ""
    report: dict = field(default_factory=dict)

    @property
    def collateral_figures(self) -> tuple[str, str]:
        """The graded attribute score and the pixel change on the prompts without the concept."""
        split = self.attr.removeprefix("attr_")
        return f"attr_margin_{split}", f"pixel_{split}"


def attribute_setting(concept: str, args, encoder, weights_key: str) -> Setting:
    split = args.split or "test"
    full = ex.concept_prompts(concept, args.count, seed=ex.PROMPT_SEEDS[split])
    prompt_set = ex.PromptSet({s: full.prompts[s] for s in ("unseen", "unrelated")},
                              {s: full.scenes[s] for s in ("unseen", "unrelated")})
    validation, keep = validation_pairs(concept, args.pairs), benign_keep_pairs(concept, args.benign, args.benign_seed)
    benign = [first for first, _ in keep]

    def measure(model, reference=None) -> dict:
        return ex.evaluate(model, encoder, prompt_set, concept, steps=args.steps, seed=ex.NOISE_SEEDS[split],
                           reference=reference)

    return Setting(pairs=ex.load_pairs(ex.default_pairs_path(concept)), neutral=ex.neutral_prompts(),
                   validation=validation, benign=benign, keep=keep, measure=measure,
                   # test's key has no split: it is what the cache held before the valid part existed
                   cache_prefix=f"{weights_key}|{concept}|{'valid|' if split == 'valid' else ''}{args.count}|{args.steps}",
                   rate="rate_unseen",
                   attr="attr_unrelated", attr_concept="attr_unseen",
                   variants=[("default", {}, s) for s in DEFAULT_STRENGTHS] + OTHERS
                   + (BROAD_OTHERS + MORE_BROAD_OTHERS if args.more_methods else []),
                   report={"validation_pairs": validation, "benign": benign, "keep_pairs": keep,
                           "generated_split": split})


def broad_estimation(pools, concept: str, count: int | None = None) -> tuple[list[PromptPair], list[str]]:
    """A broad concept's estimation pairs (the ``estimate`` split shuffled by seed 0, the first ``count``; all by
    default) and neutral prompts (12 attribute captions joined with benign train prompts), as
    ``bench/unlearning.py``'s ``run_broad`` estimates the edit."""
    from organism import broad

    estimate = broad.estimate_order(pools, concept)
    chosen = estimate if count is None else estimate[:count]
    neutral = broad.bench_neutral(pools)
    return [PromptPair(u, s) for u, s in chosen], neutral


def broad_setting(concept: str, args, encoder, weights_key: str, pools) -> Setting:
    """As ``bench/unlearning.py``'s ``run_broad``: estimate pairs shuffled by seed 0, the first
    ``--estimate-pairs`` (all by default); neutral = 12 attribute captions joined with benign train prompts."""
    from organism import broad

    pairs, neutral = broad_estimation(pools, concept, args.estimate_pairs)
    count, estimate = len(pairs), pools.pairs[concept]["estimate"]
    split = args.split or "valid"
    full = broad.broad_prompts(pools, concept, split, args.count)
    prompt_set = broad.Prompts({s: full.prompts[s] for s in ("concept", "benign")},
                               {s: full.scenes[s] for s in ("concept", "benign")})
    validation = broad_validation_pairs(pools, concept, args.pairs)
    keep = broad_keep_pairs(pools, concept, args.benign, args.benign_seed)
    benign = [first for first, _ in keep]
    real = [p for pool in (concept, f"safe_{concept}", "benign") for part in {"valid", split}
            for p in pools.prompts[pool][part]]
    real += [p for part in {"valid", split} for pair in pools.pairs[concept][part] for p in pair]
    shared = real_parts([r for pair in validation for r in pair] + benign, real) & real_parts(
        [g for part in prompt_set.prompts.values() for g in part], real)

    def measure(model, reference=None) -> dict:
        return broad.measure(model, encoder, prompt_set, concept, steps=args.steps, reference=reference)

    report = {"estimate_pairs": count, "estimate_pairs_available": len(estimate), "generated_split": split,
              "generated_prompts": {s: len(v) for s, v in prompt_set.prompts.items()},
              "validation_pairs_sha256_12": [[short_hash(u), short_hash(s)] for u, s in validation],
              "benign_sha256_12": [short_hash(b) for b in benign],
              "check_real_prompts_also_generated": len(shared)}
    print(f"  {count} of {len(estimate)} estimate pairs; check: {len(validation)} valid-split pairs, {len(benign)} "
          f"benign; generated: " + ", ".join(f"{s} {len(v)}" for s, v in prompt_set.prompts.items())
          + f"; real prompts in both: {len(shared)}", flush=True)
    return Setting(pairs=pairs, neutral=neutral, validation=validation, benign=benign, keep=keep, measure=measure,
                   cache_prefix=f"{weights_key}|{concept}|{split}|{args.count}|{args.steps}", rate="rate_concept",
                   attr="attr_benign", attr_concept="attr_concept",
                   variants=[("default", {}, s) for s in DEFAULT_STRENGTHS] + OTHERS + BROAD_OTHERS
                   + (MORE_BROAD_OTHERS if args.more_methods else []),
                   fit_extra={"model_family": "organism"}, edit_key=f"|pairs {count}", report=report)


def run_concept(concept: str, args, model, encoder, cache: dict, weights_key: str, pools=None) -> dict:
    setting = (broad_setting(concept, args, encoder, weights_key, pools) if concept in BROAD
               else attribute_setting(concept, args, encoder, weights_key))
    pairs, validation, benign = setting.pairs, setting.validation, setting.benign
    candidates = ex.every_group_layer(model)
    with torch.no_grad():
        measured = ex.collect(model, encoder, pairs, setting.neutral, candidates)
    text_layers = {n for n in candidates if ex.reads_text(n)}
    forward = organism_forward(model, encoder, text_layers, times=tuple(args.check_times))
    start = time.perf_counter()
    with torch.no_grad():
        # the negative prompt the bench samples with (empty), for guided collateral
        baseline = measure_baseline(model, forward, validation, benign, candidates, negative="", keep=setting.keep)
    baseline_seconds = time.perf_counter() - start

    margin, pixel = setting.collateral_figures
    with torch.no_grad():
        # Its clips are the reference of every variant's pixel change; sampling is deterministic, so entries
        # cached against an earlier run's base clips stay valid.
        base = setting.measure(model)
    base_clips = base.pop("clips")

    def generated(key: str, edited) -> dict:
        # the fit's revision too: an edit fitted by the approximate solve (revision 1, no suffix) is another edit
        full_key = f"{setting.cache_prefix}|{key}|fit {FIT_REVISION}"
        # entries older than the graded figures lack them: measured again
        if margin not in cache.get(full_key, {}) or pixel not in cache[full_key]:
            with torch.no_grad():
                result = setting.measure(edited, reference=base_clips)
            result.pop("clips")
            cache[full_key] = result
            save_cache(args.cache, cache)
        return cache[full_key]

    checks, rows, edits = {}, [], []
    for name, change, strength in setting.variants:
        config = {**BASE, "blocks": args.blocks, "edit": "direction", **change}
        layers = ex.layer_names(model, config["group"], config["blocks"])
        fit_key = _fit_key(config)
        basis = measured.fitter.fit(rank=config["rank"], alpha=config["alpha"], method=config["method"],
                                    edit=config["edit"], concept=concept, pairs=pairs, layers=layers,
                                    **setting.fit_extra)
        same = next((earlier for earlier, edit in edits if _same_edit(edit, (basis, layers, config["target"], strength))),
                    None)
        # e.g. with --blocks late, "late blocks" is the default edit itself; rank 8 and 16 from 5 pairs both keep the
        # 5 directions of positive contrast
        if same is not None:
            print(f"  {name:<36} the same edit as {same!r}: one row, not two equal ones", flush=True)
            continue
        edits.append((name, (basis, layers, config["target"], strength)))
        if fit_key not in checks:
            start = time.perf_counter()
            with torch.no_grad():
                checks[fit_key] = check_strengths(model, forward, basis, baseline, DEFAULT_STRENGTHS, layers=layers,
                                                  target=config["target"], rows=(validation, benign, ""),
                                                  keep=setting.keep, guidance=args.guidance, label=fit_key)
            checks[fit_key].extra["seconds"] = time.perf_counter() - start + baseline_seconds
        check = checks[fit_key].at(strength)
        key = f"{fit_key}|{strength}{setting.edit_key}"
        result = {**base, pixel: 0.0} if strength == 0 else generated(key, ex.edited_copy(model, basis, strength,
                                                                                          config["target"]))
        drop = 1.0 - result[setting.rate] / base[setting.rate] if base[setting.rate] else float("nan")
        loss = 100.0 * (base[setting.attr] - result[setting.attr])
        margin_loss = 100.0 * (base[margin] - result[margin])
        loss_concept = 100.0 * (base[setting.attr_concept] - result[setting.attr_concept])
        label = name if name != "default" else f"default, strength {strength:g}"
        rows.append({"variant": label, "strength": strength, **check, "drop": drop, "attr_loss": loss,
                     "attr_margin_loss": margin_loss, "pixel_change": result[pixel],
                     "attr_loss_concept_prompts": loss_concept, setting.rate: result[setting.rate],
                     setting.attr: result[setting.attr]})
        print(f"  {label:<36} removed {check['efficacy']:6.1%} (layers {check['efficacy_layers']:6.1%})  "
              f"collateral {check['collateral']:.3f} (layers {check['collateral_layers']:.3f}, relative "
              f"{check['relative_movement']:.3f}, distinctions lost {check['distinction_loss']:+.4f}, guided "
              f"{check['collateral_guided']:.3f}, keep loss {check['keep_loss']:+.4f}) "
              f"| drop {drop:6.1%}  "
              f"attr loss {loss:+.1f} pts (graded {margin_loss:+.2f}, pixels {result[pixel]:.4f})", flush=True)

    default = checks[_fit_key({**BASE, "blocks": args.blocks, "edit": "direction"})]
    grid = [r for r in rows if r["variant"].startswith("default")]
    best = _best(grid)
    figures = {
        "spearman_efficacy_vs_drop": spearman([r["efficacy"] for r in rows], [r["drop"] for r in rows]),
        "spearman_efficacy_layers_vs_drop": spearman([r["efficacy_layers"] for r in rows], [r["drop"] for r in rows]),
        "spearman_collateral_vs_attr_loss": spearman([r["collateral"] for r in rows], [r["attr_loss"] for r in rows]),
        "spearman_collateral_layers_vs_attr_loss": spearman([r["collateral_layers"] for r in rows],
                                                            [r["attr_loss"] for r in rows]),
        "spearman_collateral_vs_attr_loss_concept_prompts": spearman([r["collateral"] for r in rows],
                                                                     [r["attr_loss_concept_prompts"] for r in rows]),
        "spearman_collateral_vs_attr_margin_loss": spearman([r["collateral"] for r in rows],
                                                            [r["attr_margin_loss"] for r in rows]),
        "spearman_collateral_vs_pixel_change": spearman([r["collateral"] for r in rows],
                                                        [r["pixel_change"] for r in rows]),
        **{f"spearman_{key}_vs_attr_loss": spearman([r[key] for r in rows], [r["attr_loss"] for r in rows])
           for key in ("relative_movement", "distinction_loss", "collateral_guided", "keep_loss")},
        # the rule on the conditional prediction's collateral, as before guided collateral was adopted
        "recommended_conditional": recommend(default.strengths, default.efficacy, default.collateral_prediction)[0],
        "recommended": default.recommended, "recommended_reason": default.reason,
        **_rules(default),
        "bench_best": best["strength"], "bench_best_drop": best["drop"], "bench_best_loss": best["attr_loss"],
        "check_seconds_default_grid": default.extra["seconds"], "check_forwards_default_grid": default.forwards,
    }
    print(default.table())
    print(json.dumps(figures, indent=1))
    return {"concept": concept, **setting.report, "base": base, "rows": rows, "default_check": default.as_dict(),
            "figures": figures}




def _same_edit(one: tuple, other: tuple, tol: float = 1e-5) -> bool:
    """Whether two ``(basis, layers, target, strength)`` edit the model alike: the same layers, target and strength,
    and per layer the same subspace up to rounding (projectors within ``tol``; widths of a matmul round differently,
    so rank 8 and rank 16 keeping the same 5 directions differ in the last bits) and the same target point."""
    (basis, layers, target, strength), (basis2, layers2, target2, strength2) = one, other
    if (layers, target, strength) != (layers2, target2, strength2):
        return False
    for layer in layers:
        a, b = basis.subspace(layer).double(), basis2.subspace(layer).double()
        if a.shape != b.shape or not torch.allclose(a @ a.T, b @ b.T, rtol=0, atol=tol):
            return False
        if not torch.allclose(basis.target(layer), basis2.target(layer), rtol=0, atol=tol):
            return False
    return True


def _fit_key(config: dict) -> str:
    """What identifies a fitted edit (and its check) among the variants: the strength is not part of it."""
    return json.dumps({**{k: config[k] for k in ("method", "group", "blocks", "target")},
                       **({"edit": config["edit"], "rank": config["rank"]} if config["edit"] != "direction" else {})})


def repeatability(rows: list[dict], other: list[dict]) -> dict:
    """The bench against itself on another draw of prompts (the same variants, by name): Spearman of the attribute
    loss and of the drop across draws (how far the bench's own ranking of variants repeats, so a ceiling for any
    proxy's), and the proxies against the two draws' mean (twice the prompts)."""
    theirs = {r["variant"]: r for r in other}
    common = [r for r in rows if r["variant"] in theirs]
    pair = lambda key: ([r[key] for r in common], [theirs[r["variant"]][key] for r in common])  # noqa: E731
    mean = lambda key: [(r[key] + theirs[r["variant"]][key]) / 2 for r in common]  # noqa: E731
    graded = [key for key in ("attr_margin_loss", "pixel_change") if all(key in r for r in (*common, *theirs.values()))]
    return {"variants": len(common),
            "spearman_attr_loss_across_draws": spearman(*pair("attr_loss")),
            "spearman_drop_across_draws": spearman(*pair("drop")),
            **{f"spearman_{key}_across_draws": spearman(*pair(key)) for key in graded},
            **{f"spearman_{proxy}_vs_attr_loss_both_draws": spearman([r[proxy] for r in common], mean("attr_loss"))
               for proxy in ("collateral", "relative_movement", "distinction_loss", "collateral_guided")
               if all(proxy in r for r in common)},
            **{f"spearman_collateral_vs_{key}_both_draws": spearman([r["collateral"] for r in common], mean(key))
               for key in graded},
            "spearman_efficacy_vs_drop_both_draws": spearman([r["efficacy"] for r in common], mean("drop")),
            # 1 when both reports checked the same benign prompts; with --benign-seed, the check against itself
            "spearman_collateral_across_reports": spearman(*pair("collateral")),
            "bench_best_both_draws": _best([{**r, "attr_loss": a, "drop": d} for r, a, d in
                                            zip(common, mean("attr_loss"), mean("drop"))
                                            if r["variant"].startswith("default")])["strength"]}


def _best(grid: list[dict]) -> dict:
    """The bench's best strength: the largest drop with at most ``MAX_LOSS_POINTS`` lost (the smallest on ties)."""
    allowed = [r for r in grid if r["attr_loss"] <= MAX_LOSS_POINTS]
    return max(allowed, key=lambda r: (round(r["drop"], 9), -r["strength"]))


def _rules(check) -> dict:
    """The recommendation with and without the full-projection floor, from the same per-strength figures
    (``recommend`` is a pure function of them)."""
    args = (check.strengths, check.efficacy, check.collateral)
    floored = recommend(*args, full_projection=FULL_PROJECTION)
    return {"recommended_prediction_only": recommend(*args, full_projection=None)[0],
            "recommended_full_projection": floored[0], "recommended_full_projection_reason": floored[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", nargs="+", default=["logo", "red"],
                        help="logo, a colour (red), or a broad concept (nudity, violence)")
    parser.add_argument("--count", type=int, default=48, help="generated prompts per split (unseen, unrelated; broad "
                                                               "concepts: the valid split's concept and benign prompts)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=5, help="validation pairs")
    parser.add_argument("--benign", type=int, default=12, help="benign prompts")
    parser.add_argument("--benign-seed", type=int, default=BENIGN_SEED,
                        help="which benign prompts the check draws (another seed: the check's own repeatability, "
                             "with --against a report of the default seed)")
    parser.add_argument("--estimate-pairs", type=int, help="broad concepts: how many estimate-split pairs the edit is "
                                                           "estimated from (default: all; the nodes' default is 5)")
    parser.add_argument("--data", type=Path, help="broad concepts: the prompt data folder (default ../shared/data)")
    parser.add_argument("--split", choices=("valid", "test"),
                        help="which held-out part generated prompts come from (tune on valid, report test): broad "
                             "concepts, a split of the data (default valid); logo and colours, the prompts' seed "
                             "(organism.experiment.PROMPT_SEEDS; default test, what the figures before it measured)")
    parser.add_argument("--more-methods", action="store_true",
                        help="also subspace edits as variants: rank 4 and 16 (broad concepts, which have rank 8 "
                             "already), rank 4, 8 and 16 (logo, red)")
    parser.add_argument("--check-times", type=float, nargs="+", default=[0.9],
                        help="flow times of the prediction (0.9 = the node's default progress 0.1)")
    parser.add_argument("--guidance", type=float, default=GUIDANCE,
                        help="the sampler's guidance, for the check's guided collateral (the benches sample at "
                             "%(default)s)")
    parser.add_argument("--weights", type=Path, default=ex.WEIGHTS)
    parser.add_argument("--git-rev", help="measure the weights file as committed at this revision (e.g. HEAD) instead of "
                                          "the working tree's, which may hold a retraining in progress")
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "check_validation_cache.json")
    parser.add_argument("--json", type=Path, help="report (default out/check_validation.json; broad concepts "
                                                  "alone: out/check_validation_<concepts>.json)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", choices=("all", "early", "late"), default="all",
                        help="the blocks of the default edit (its strength grid and the recommendation): a per-concept "
                             "layer choice such as red's late blocks (chosen with bench/unlearning.py --split valid)")
    parser.add_argument("--against", type=Path, help="an earlier report of the same concepts on another --split: adds "
                                                     "the bench's repeatability across the two draws")
    args = parser.parse_args()
    if args.against is not None and not args.against.is_file():
        parser.exit(2, f"--against {args.against}: no such report; run this bench with the other --split first\n")
    known = (*(c for c in ("logo", *COLOURS) if ex.default_pairs_path(c).is_file()), *BROAD)
    unknown = [c for c in args.concept if c not in known]
    if unknown:
        parser.exit(2, f"unknown concept {', '.join(unknown)}; one of {', '.join(known)}\n")
    for name in ("count", "pairs", "benign", "estimate_pairs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.exit(2, f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}\n")
    if args.json is None:
        broad_only = all(c in BROAD for c in args.concept)
        args.json = ROOT / "out" / (f"check_validation_{'_'.join(args.concept)}.json" if broad_only
                                    else "check_validation.json")
    pools = None
    if any(c in BROAD for c in args.concept):
        from organism.scenes import DATA, load_pools

        try:
            pools = load_pools(args.data or DATA)
        except ValueError as error:
            parser.exit(2, f"{error}\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    cache = json.loads(args.cache.read_text()) if args.cache.exists() else {}
    if args.git_rev:
        import subprocess
        import tempfile

        blob = subprocess.run(["git", "show", f"{args.git_rev}:{ex.WEIGHTS.relative_to(ROOT).as_posix()}"], cwd=ROOT,
                              capture_output=True, check=True).stdout
        args.weights = Path(tempfile.mkdtemp()) / "organism.safetensors"
        args.weights.write_bytes(blob)
    weights_key = sha256(args.weights)
    model, encoder = ex.load_organism(args.weights), TextEncoder()
    report = {"weights_sha256_16": weights_key, "count": args.count, "steps": args.steps, "blocks": args.blocks,
              "check_times": args.check_times, "concepts": []}
    other = {c["concept"]: c for c in json.loads(args.against.read_text())["concepts"]} if args.against else {}
    for concept in args.concept:
        print(f"concept {concept!r} (weights {weights_key})")
        report["concepts"].append(run_concept(concept, args, model, encoder, cache, weights_key, pools))
        if concept in other:
            found = report["concepts"][-1]["figures"]["repeatability"] = {
                "against": args.against.name, "against_split": other[concept].get("generated_split", "test"),
                **repeatability(report["concepts"][-1]["rows"], other[concept]["rows"])}
            print(json.dumps(found, indent=1))
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
