"""bench/audit_validation.py: its rank correlations count the other methods' edits apart from the pack's own, and its
repeatability pairs variants by name across draws (a variant missing from one draw is left out, not misaligned)."""

from __future__ import annotations

from pathlib import Path

import pytest

from script_module import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "audit_validation.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH, "audit_validation")


def row(method, variant, removed, drop, collateral, loss, pixels=0.0):
    return {"method": method, "variant": variant, "removed": removed, "drop": drop, "collateral": collateral,
            "collateral_conditional": collateral, "attr_loss": loss, "pixel_change": pixels}


ROWS = [row("pack", "pack 1", 0.8, 1.0, 0.1, 0.5, 0.01), row("pack", "pack 2", 0.9, 0.9, 0.2, 0.1, 0.02),
        row("uce", "uce a", 0.1, 0.2, 0.1, 1.0, 0.01), row("uce", "uce b", 0.5, 0.6, 0.2, 2.0, 0.02),
        row("noise", "noise", 0.3, 0.4, 0.3, 3.0, 0.03)]


def test_figures_rank_every_variant_and_the_other_methods_alone(bench):
    found = bench.figures(ROWS)
    assert found["all"]["variants"] == 5 and found["other_methods"]["variants"] == 3
    assert found["other_methods"]["spearman_removed_vs_drop"] == pytest.approx(1.0)
    assert found["other_methods"]["spearman_collateral_vs_attr_loss"] == pytest.approx(1.0)
    assert found["all"]["spearman_collateral_vs_attr_loss"] < 1.0  # the pack's rows rank the other way


def test_repeatability_pairs_variants_by_name(bench):
    other = [dict(r) for r in reversed(ROWS) if r["variant"] != "pack 2"]
    found = bench.repeatability(ROWS, other)
    assert found["variants"] == 4
    assert found["spearman_attr_loss_across_draws"] == pytest.approx(1.0)
    assert found["spearman_drop_across_draws"] == pytest.approx(1.0)


def test_every_variant_has_its_own_name(bench):
    names = [name for _, name, _ in bench.variants(None, None, type("S", (), {"pairs": [], "neutral": []})(), None,
                                                   "safe_mean")]
    assert len(names) == len(set(names)) == (len(bench.PACK_STRENGTHS) + len(bench.UCE_ERASE_SCALES)
                                             + len(bench.FINETUNE_STEPS) + 1 + len(bench.NOISE_SCALES))


def test_two_runs_writing_one_cache_keep_each_others_entries(bench, tmp_path):
    """Two benches at once each hold the cache file as they first read it; a write must not drop what the other
    added since."""
    path = tmp_path / "cache.json"
    path.write_text('{"old": 1}')
    first, second = {"old": 1}, {"old": 1}
    first["a"] = 2
    bench.cv.save_cache(path, first)
    second["b"] = 3
    bench.cv.save_cache(path, second)
    assert bench.json.loads(path.read_text()) == {"old": 1, "a": 2, "b": 3}
    assert second == {"old": 1, "a": 2, "b": 3} and not (tmp_path / "cache.json.partial").exists()
