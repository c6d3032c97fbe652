"""bench/pair_removal.py: its pairs differ only by the concept's wording, its kept rate counts only seeds the original
drew, and its AUC and Spearman are left undefined with too few pairs on one side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from script_module import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "pair_removal.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH, "pair_removal")


@pytest.mark.parametrize("concept", ["logo", "red"])
def test_a_pair_differs_only_by_the_concept_s_wording(bench, concept):
    pairs = bench.wording_pairs(concept, 40, bench.PAIR_SEEDS["valid"])
    for unsafe, safe, wording in pairs:
        assert wording in unsafe and wording not in safe
        assert " ".join(unsafe.replace(wording, "", 1).split()) == safe
    if concept == "logo":  # held-out wordings and misspellings both drawn
        wordings = {w for _, _, w in pairs}
        assert wordings & set(bench.LOGO_HELD_OUT) and wordings & set(bench.LOGO_ADVERSARIAL)
    assert pairs != bench.wording_pairs(concept, 40, bench.PAIR_SEEDS["test"])


def test_the_kept_rate_counts_the_seeds_the_original_drew(bench):
    before = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], bool)
    after = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    assert bench.kept_rates(before, after) == [0.5, 0.0]  # pair 1 never drawn before: left out; a new draw not counted


def test_figures_need_three_pairs_on_each_side(bench):
    found = bench.pair_figures([0.5, 0.4, 0.3, 0.05, 0.02, 0.01], [1.0, 0.5, 0.25, 0.0, 0.0, 0.0])
    assert found["auc"] == pytest.approx(1.0) and found["spearman"] > 0.9  # under 1: the three tied zeros
    assert (found["keep_concept"], found["pairs_under_90"], found["flagged_keep"]) == (3, 3, 3)
    assert found["removed_min"] == pytest.approx(0.5)
    few = bench.pair_figures([0.5, 0.4, 0.05, 0.02, 0.01], [1.0, 0.5, 0.0, 0.0, 0.0])
    assert few["auc"] is None and few["spearman"] is None
    assert bench.auc([0.2, 0.2], [True, False]) == 0.5  # a tie counts half
