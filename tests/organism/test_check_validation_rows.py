"""bench/check_validation.py on broad concepts: the check's rows come from the ``valid`` split, never from the pairs
the edit is estimated from (read in place from ../shared/data; skipped without it; no prompt is printed: the
assertions compare counts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from organism.scenes import CONCEPTS, DATA, join, load_pools
from script_module import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "check_validation.py"


@pytest.fixture(scope="module")
def bench_and_pools():
    if not DATA.is_dir():
        pytest.skip(f"no prompt data at {DATA}")
    return load_script(BENCH, "check_validation"), load_pools(DATA, coco=2000)


@pytest.mark.parametrize("concept", CONCEPTS)
def test_broad_check_rows_are_valid_split_and_not_estimation_pairs(bench_and_pools, concept):
    bench, pools = bench_and_pools
    assert tuple(bench.BROAD) == tuple(CONCEPTS)
    valid = pools.pairs[concept]["valid"]
    estimate = {p for pair in pools.pairs[concept]["estimate"] for p in pair}
    pairs = bench.broad_validation_pairs(pools, concept, 5)
    assert len(pairs) == 5 and len(set(pairs)) == 5
    matched = 0
    for unsafe, safe in pairs:
        found = [(u, s) for u, s in valid if unsafe.endswith(", " + u) and safe.endswith(", " + s)
                 and unsafe[: -len(u)] == safe[: -len(s)]]  # one attribute caption shared by both sides
        matched += bool(found)
        assert not any(unsafe.endswith(", " + p) or safe.endswith(", " + p) for p in estimate)
    assert matched == 5
    benign = bench.broad_benign_prompts(pools, concept, 12)
    assert len(benign) == 12
    assert sum(any(b.endswith(", " + p) for p in pools.prompts["benign"]["valid"]) for b in benign) == 12
    assert join("a red ball", "x").endswith(", x")  # the joining the checks above rely on
    # the same call gives the same rows (fixed seeds)
    assert bench.broad_benign_prompts(pools, concept, 12) == benign
    # --benign-seed draws other benign prompts (the check's own repeatability)
    assert len(set(bench.broad_benign_prompts(pools, concept, 12, seed=1)) & set(benign)) <= 1
    assert bench.broad_validation_pairs(pools, concept, 5) == pairs


def test_logo_and_colour_prompt_parts_differ_and_repeat():
    """The valid part of the generated logo/colour prompts is another draw than test, and each is fixed."""
    from organism import experiment as ex

    for concept in ("logo", "red"):
        test = ex.concept_prompts(concept, 48, seed=ex.PROMPT_SEEDS["test"])
        valid = ex.concept_prompts(concept, 48, seed=ex.PROMPT_SEEDS["valid"])
        assert ex.concept_prompts(concept, 48, seed=ex.PROMPT_SEEDS["valid"]).prompts == valid.prompts
        for split in ("unseen", "unrelated"):
            shared = set(test.prompts[split]) & set(valid.prompts[split])
            assert len(shared) <= 2, (concept, split, len(shared))  # short captions may coincide by chance
    assert ex.NOISE_SEEDS["test"] != ex.NOISE_SEEDS["valid"]
    assert abs(ex.NOISE_SEEDS["test"] - ex.NOISE_SEEDS["valid"]) >= 150  # 150 prompts a split never share a seed


def test_repeatability_ranks_variants_across_draws(bench_and_pools):
    bench, _ = bench_and_pools
    rows = [{"variant": f"default, strength {s:g}", "strength": s, "attr_loss": 3.0 * s, "drop": min(1.0, s),
             "collateral": 0.1 * s, "efficacy": min(1.0, s)} for s in (0.0, 0.5, 1.0, 1.5)]
    again = [{**r, "attr_loss": r["attr_loss"] + 0.1} for r in rows[::-1]] + [{**rows[0], "variant": "other"}]
    figures = bench.repeatability(rows, again)
    assert figures["variants"] == 4
    assert figures["spearman_attr_loss_across_draws"] == pytest.approx(1.0)
    assert figures["spearman_collateral_vs_attr_loss_both_draws"] == pytest.approx(1.0)
    assert figures["spearman_collateral_across_reports"] == pytest.approx(1.0)  # the same check in both
    assert figures["bench_best_both_draws"] == 0.5  # 1.0 loses 3.05 points on average, over the 2-point budget
    assert "spearman_pixel_change_across_draws" not in figures  # reports older than the graded figures
    graded = [{**r, "attr_margin_loss": s, "pixel_change": 0.01 * s} for r, s in zip(rows, (0.0, 2.0, 1.0, 3.0))]
    figures = bench.repeatability(graded, [{**r, "attr_margin_loss": 2 * r["attr_margin_loss"]} for r in graded])
    assert figures["spearman_attr_margin_loss_across_draws"] == pytest.approx(1.0)
    assert figures["spearman_pixel_change_across_draws"] == pytest.approx(1.0)
    assert figures["spearman_collateral_vs_attr_margin_loss_both_draws"] == pytest.approx(0.8)


def test_variants_that_fit_the_same_edit_are_one_row():
    """With 5 text-side pairs rank 8 and rank 16 both keep the 5 directions of positive contrast: one edit, whose
    row would otherwise count twice in every rank correlation."""
    import torch

    from core.refusal import RefusalFitter

    bench = load_script(BENCH, "check_validation_digest")
    g = torch.Generator().manual_seed(0)
    safe = torch.randn(5, 32, generator=g, dtype=torch.float64)
    unsafe = safe + 6 * torch.linalg.qr(torch.randn(32, 5, generator=g, dtype=torch.float64))[0].T
    fitter = RefusalFitter().update("k", unsafe.repeat(3, 1), safe.repeat(3, 1))
    fitter.update_neutral("k", torch.randn(20, 32, generator=g, dtype=torch.float64))
    def edit(rank, strength=1.0):
        return fitter.fit(rank=rank, edit="subspace"), ["k"], "safe_mean", strength

    assert bench._same_edit(edit(8), edit(16))
    assert not bench._same_edit(edit(4), edit(8)) and not bench._same_edit(edit(8, 2.0), edit(8))
    assert not bench._same_edit(edit(8), (edit(8)[0], ["k"], "zero", 1.0))


@pytest.mark.parametrize("concept", ["logo", "red", *CONCEPTS])
def test_keep_pairs_change_one_attribute_of_the_benign_prompts(bench_and_pools, concept):
    """Keep pairs: benign prompt i (unchanged by the pairing) against the same caption with only one attribute's
    words changed (colour, shape, motion in turn), never to the concept's colour; the real prompt joined to a broad
    concept's caption is the same on both sides."""
    from organism.world import TRAIN_WORDS

    bench, pools = bench_and_pools
    broad = concept in CONCEPTS
    keep = bench.broad_keep_pairs(pools, concept, 12) if broad else bench.benign_keep_pairs(concept, 12)
    benign = bench.broad_benign_prompts(pools, concept, 12) if broad else bench.benign_prompts(concept, 12)
    assert [first for first, _ in keep] == benign and all(first != second for first, second in keep)
    concept_words = {w for w in TRAIN_WORDS.get(concept, [])}
    for first, second in keep:
        if broad:
            head, tail = first.split(", ", 1)
            assert second.endswith(", " + tail)
            first, second = head, second[: -len(tail) - 2]
        assert not any(w in second.split(" ") for w in concept_words if " " not in w)
        # the captions share everything but the changed words: same start or same end
        a, b = first.split(), second.split()
        shared = next(i for i, (x, y) in enumerate(zip(a + [None], b + [None])) if x != y)
        tail = next(i for i, (x, y) in enumerate(zip(reversed(a), reversed(b))) if x != y)
        assert len(a) - shared - tail <= 5 and len(b) - shared - tail <= 5  # "moving to the right"
