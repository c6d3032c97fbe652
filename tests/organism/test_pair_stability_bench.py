"""bench/pair_stability.py: its figures must read a planted concept as stable and a pair without it as the one that
fails, and ``--decide`` must apply the rule of docs/benchmarks.md ("Can a figure flag a failing draw of 5 pairs?")
as written: calibration on draws 0-9, the threshold fixed there, confirmation on draws 10-29."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from script_module import load_script

from core.refusal import RefusalFitter

BENCH = Path(__file__).resolve().parents[2] / "bench" / "pair_stability.py"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from synthetic import planted, unit  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH, "pair_stability")


def fitted(unsafe, safe, neutral, rows_per_pair=1):
    fitter = RefusalFitter().update("x", unsafe, safe).update_neutral("x", neutral)
    pairs = [(f"unsafe {i}", f"safe {i}") for i in range(unsafe.shape[0] // rows_per_pair)]
    return fitter, fitter.fit(rank=4, alpha=1.0, pairs=pairs)


def test_a_planted_concept_is_stable(bench):
    _, _, unsafe, safe, neutral = planted(dim=64, pairs=5, neutral=40)
    fitter, basis = fitted(unsafe, safe, neutral)
    figures = bench.stability_figures(fitter, basis, "x")
    # each pair carries the concept at 1.0-1.5x: its share of the others' shift stays near its own strength
    assert figures["held_out_shift"] > 0.5 and figures["leave_one_out_cosine"] > 0.99
    assert figures["lowest_pair_shift"] > 0.5
    assert len(figures["held_out_shifts"]) == len(figures["leave_one_out_cosines"]) == 5


def test_a_pair_without_the_concept_is_the_lowest_held_out_shift(bench):
    concept, _, unsafe, safe, neutral = planted(dim=64, pairs=5, neutral=40)
    other = unit(torch.Generator().manual_seed(7), 64)
    other = other - (other @ concept) * concept
    unsafe[2] = safe[2] + 1.2 * other / other.norm()  # differs, but not by the concept
    fitter, basis = fitted(unsafe, safe, neutral)
    figures = bench.stability_figures(fitter, basis, "x")
    shifts = figures["held_out_shifts"]
    assert min(range(5), key=shifts.__getitem__) == 2 and abs(shifts[2]) < 0.1
    assert figures["held_out_shift"] == shifts[2]


def test_rows_are_grouped_by_pair(bench):
    """Two rows per pair (pair-major, as the collection writes them): leaving a pair out drops both its rows."""
    _, _, unsafe, safe, neutral = planted(dim=64, pairs=10, neutral=40)
    fitter, basis = fitted(unsafe, safe, neutral, rows_per_pair=2)
    figures = bench.stability_figures(fitter, basis, "x")
    assert len(figures["held_out_shifts"]) == 5 and figures["leave_one_out_cosine"] > 0.99


def test_auroc_and_threshold(bench):
    assert bench.auroc([0.1, 0.2], [0.5, 0.6, 0.7]) == 1.0
    assert bench.auroc([0.9], [0.1, 0.2]) == 0.0
    assert bench.auroc([0.5], [0.5]) == 0.5
    assert bench.best_threshold([0.1, 0.2], [0.5, 0.6]) == pytest.approx(0.35)
    # catching the second failing edit costs two false alarms: as good as not catching it, and the lower t wins
    assert bench.best_threshold([0.1, 0.65], [0.5, 0.6, 0.7, 0.8]) == pytest.approx(0.3)
    assert bench.best_threshold([0.1, 0.55], [0.5, 0.6, 0.7, 0.8]) == pytest.approx(0.575)
    with pytest.raises(ValueError, match="failing and passing"):
        bench.auroc([], [0.5])


def rows_and_drops(failing_confirmation=4, alarm=False):
    """Edits where held_out_shift tells failing from passing (lower = failing), leave_one_out_cosine does not."""
    rows, drops = [], {}
    for seed in range(30):
        for concept in ("nudity", "violence"):
            for name in ("bench", "node"):
                for pairs in (5, 25):
                    fails = pairs == 5 and name == "node" and (
                        seed in (0, 3, 5) if seed < 10 else seed - 10 < failing_confirmation) and concept == "nudity"
                    shift = 0.1 if fails else (0.15 if alarm and pairs == 25 else 0.6)
                    rows.append({"concept": concept, "seed": seed, "pairs": pairs, "set": name,
                                 "held_out_shift": shift, "leave_one_out_cosine": 0.99 - 0.001 * seed,
                                 "lowest_pair_shift": 0.5})
                    drops[(concept, pairs, name, seed)] = 0.7 if fails else 1.0
    return rows, drops


def test_decide_adopts_a_figure_that_holds_on_the_confirmation_draws(bench):
    decision = bench.decide(*rows_and_drops())
    assert decision["calibration_edits"] == 40 and decision["calibration_failing"] == 3
    assert decision["taken"] == "held_out_shift" and decision["candidates"]["held_out_shift"]["auroc"] == 1.0
    assert decision["candidates"]["held_out_shift"]["threshold"] == pytest.approx(0.35)
    assert decision["confirmation"]["caught"] == 4 and decision["confirmation"]["false_alarms"] == 0
    assert decision["adopted"] is True


def test_decide_refuses_too_few_failing_edits_and_false_alarms_at_25_pairs(bench):
    undecided = bench.decide(*rows_and_drops(failing_confirmation=2))
    assert undecided["adopted"] is False and "undecided" in undecided["why"]
    alarming = bench.decide(*rows_and_drops(alarm=True))
    assert alarming["adopted"] is False and alarming["confirmation"]["false_alarms_25"] == 120


def test_decide_refuses_an_edit_given_twice(bench):
    rows, drops = rows_and_drops()
    with pytest.raises(ValueError, match="given twice"):
        bench.decide(rows + rows[:1], drops)


def test_decide_names_draws_that_lack_the_taken_figure(bench):
    rows, drops = rows_and_drops()
    for row in rows:
        if row["seed"] == 12:
            del row["held_out_shift"]
    with pytest.raises(ValueError, match=r"draws \[12\] lack it"):
        bench.decide(rows, drops)


def test_decide_takes_nothing_below_the_qualifying_auroc(bench):
    rows, drops = rows_and_drops()
    for row in rows:
        row["held_out_shift"] = row["lowest_pair_shift"] = 0.5
    decision = bench.decide(rows, drops)
    assert decision["taken"] is None and decision["adopted"] is False


def test_report_drops_reads_valid_draws_only(bench, tmp_path):
    def report(split, seed):
        rows = [{"pairs": 5, "set": "node", "drop": 0.786}, {"pairs": 5, "set": "named", "drop": 0.9}]
        return {"split": split, **({"pairs_seed": seed} if seed is not None else {}),
                "concepts": [{"concept": "nudity", "rows": rows}]}

    paths = []
    for split, seed in (("valid", None), ("valid", 3), ("test", 4)):
        paths.append(tmp_path / f"r{len(paths)}.json")
        paths[-1].write_text(json.dumps(report(split, seed)))
    paths.append(tmp_path / "mean.json")  # another method's report: not the edit the rule reads
    paths[-1].write_text(json.dumps({**report("valid", 5), "method": "mean"}))
    paths.append(tmp_path / "subspace.json")  # another edit's report: not the one the rule reads either
    paths[-1].write_text(json.dumps({**report("valid", 6), "edit": "subspace"}))
    paths.append(tmp_path / "rank2.json")  # nor another rank's
    paths[-1].write_text(json.dumps({**report("valid", 7), "rank": 2}))
    assert bench.report_drops(paths) == {("nudity", 5, "node", 0): 0.786, ("nudity", 5, "node", 3): 0.786}


def test_figures_run_end_to_end_on_the_organism(bench, tmp_path, monkeypatch):
    from organism.scenes import DATA

    if not DATA.is_dir():
        pytest.skip(f"no prompt data at {DATA}")
    report = tmp_path / "figures.json"
    monkeypatch.setattr(sys, "argv", ["pair_stability.py", "--concepts", "violence", "--pairs-seeds", "1",
                                      "--threads", "1", "--json", str(report)])
    bench.main()
    rows = json.loads(report.read_text())["rows"]
    assert [(r["pairs"], r["set"]) for r in rows] == [(5, "bench"), (5, "node"), (25, "bench"), (25, "node")]
    assert all(0.5 < r["leave_one_out_cosine"] <= 1 + 1e-9 and len(r["held_out_shifts"]) == r["pairs"] for r in rows)


def test_decide_needs_reports(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["pair_stability.py", "--decide", str(tmp_path / "none.json")])
    with pytest.raises(SystemExit):
        bench.main()
    assert "--drops" in capsys.readouterr().err


def test_picks_compare_edits_whose_drops_differ_by_the_gap(bench):
    rows = [{"drop": d, "figure": f} for d, f in ((1.0, 0.9), (0.95, 0.2), (0.85, 0.5), (0.5, 0.5))]
    # 1.0 against 0.95 is under the gap; of the other five, 0.95 > 0.85 and 0.95 > 0.5 pick wrong, 0.85 = 0.5 ties
    assert bench.picks(rows, "figure") == (2, 5)
    assert bench.picks([{"drop": 0.9, "figure": 1.0}, {"drop": 0.8, "figure": 0.0}], "figure") == (1, 1)
    # the gap is signed, the higher drop's figure minus the lower's: a wrong pick reads below 0
    assert bench.picks_by_concept([dict(r, concept="nudity") for r in rows], "figure")["nudity"]["median_gap"] == 0.0


def comparison_rows(wrong_violence=False, draws=range(50)):
    """Edits where check_lowest_pair follows the drop and check_removed reads every edit alike."""
    rows, drops = [], {}
    for seed in draws:
        for concept in ("nudity", "violence"):
            for name in ("bench", "node"):
                for pairs in (5, 25):
                    drop = 0.5 + 0.1 * (seed % 5) if pairs == 5 and name == "node" else 1.0
                    lowest = drop if not (wrong_violence and concept == "violence" and seed >= 30) else 1.5 - drop
                    rows.append({"concept": concept, "seed": seed, "pairs": pairs, "set": name,
                                 "check_removed": 0.98, "check_lowest_pair": lowest})
                    drops[(concept, pairs, name, seed)] = drop
    return rows, drops


def test_decide_comparison_takes_the_calibration_winner_and_confirms_it_per_concept(bench):
    decision = bench.decide_comparison(*comparison_rows())
    assert decision["taken"] == "check_lowest_pair" and decision["candidates"]["check_removed"]["right"] == 0
    assert decision["calibration_edits"] == 240 and decision["confirmation_edits"] == 160
    confirmed = decision["candidates"]["check_lowest_pair"]["confirmation"]
    assert all(v["share"] == 1.0 and v["compared"] >= 20 for v in confirmed.values()) and decision["adopted"] is True
    wrong = bench.decide_comparison(*comparison_rows(wrong_violence=True))
    assert wrong["taken"] == "check_lowest_pair" and wrong["adopted"] is False
    assert wrong["candidates"]["check_lowest_pair"]["confirmation"]["violence"]["right"] == 0


def test_decide_comparison_is_undecided_with_too_few_comparisons_and_needs_the_check(bench):
    undecided = bench.decide_comparison(*comparison_rows(draws=list(range(30)) + [30]))
    assert undecided["adopted"] is False and "undecided" in undecided["why"]
    rows, drops = comparison_rows()
    del rows[-1]["check_removed"]
    with pytest.raises(ValueError, match=r"draws \[49\].*--check"):
        bench.decide_comparison(rows, drops)


def test_compare_needs_decide(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["pair_stability.py", "--compare"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "--decide" in capsys.readouterr().err
