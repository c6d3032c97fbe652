"""bench/neutral_prompts.py changes only the neutral prompts of the nodes' default edit: each set must be what
docs/benchmarks.md's design names (``named`` differs from ``bench`` in exactly its last 3 prompts, each carrying the
concept, taken from pairs neither fit uses), and the script must run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from script_module import load_script

from core.pairs import DEFAULT_NEUTRAL_PROMPTS
from organism import broad
from organism.scenes import CONCEPTS, DATA, load_pools
from organism.world import BRAND, TRAIN_WORDS

BENCH = Path(__file__).resolve().parents[2] / "bench" / "neutral_prompts.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH, "neutral_prompts")


@pytest.fixture(scope="module")
def pools():
    if not DATA.is_dir():
        pytest.skip(f"no prompt data at {DATA}")
    return load_pools(DATA, coco=2000)


@pytest.mark.parametrize("concept", ["logo", "red", *CONCEPTS])
def test_each_set_is_the_designs(bench, pools, concept):
    sets = bench.neutral_sets(concept, pools)
    broad_only = {"near", "bench-bare", "near-bare"}
    assert set(sets) == set(bench.SETS + bench.EXPLAINING) - (broad_only if concept not in CONCEPTS else set())
    assert len(sets["node-people"]) == 5 and sorted(sets["node-people"] + sets["node-things"]) == sorted(sets["node"])
    first = sets["bench"]
    assert len(first) == 12 and len(set(first)) == 12
    assert sets["none"] == [] and sets["4"] == first[:4]
    assert len(sets["48"]) == 48 and sets["48"][:12] == first
    assert sets["node"] == list(DEFAULT_NEUTRAL_PROMPTS)
    named = sets["named"]
    assert named[:-bench.NAMED] == first[:-bench.NAMED]
    assert all(a != b for a, b in zip(named[-bench.NAMED:], first[-bench.NAMED:]))
    if concept == "logo":
        assert all(BRAND.lower() in p.lower() for p in named[-bench.NAMED:])
        assert not any(BRAND.lower() in p.lower() for p in first)
    elif concept == "red":
        assert all(any(word in p for word in TRAIN_WORDS["red"]) for p in named[-bench.NAMED:])
    else:
        estimate = broad.estimate_order(pools, concept)
        fitted = {side for pair in estimate[:25] for side in pair}
        carriers = [u for u, _ in estimate[25:25 + bench.NAMED]]
        assert all(p.endswith(c) for p, c in zip(named[-bench.NAMED:], carriers))
        assert not fitted & set(carriers)
        assert len(sets["near"]) == 12 and not set(sets["near"]) & set(first)
        assert [p.endswith(b) for p, b in zip(first, sets["bench-bare"])] == [True] * 12
        assert [p.endswith(b) for p, b in zip(sets["near"], sets["near-bare"])] == [True] * 12


def test_every_bench_fits_the_same_first_pairs_and_neutral_prompts(bench, pools):
    """The draw of pairs seed 0 and the 12 neutral captions are every bench's: check_validation's estimation and this
    bench's ``bench`` set read the same ``organism.broad`` helpers, and seed 1 draws other pairs."""
    cv = load_script(Path(__file__).resolve().parents[2] / "bench" / "check_validation.py", "check_validation")
    for concept in ("nudity", "violence"):
        first = broad.estimate_order(pools, concept)[:25]
        pairs, neutral = cv.broad_estimation(pools, concept, 25)
        assert [(p.unsafe, p.safe) for p in pairs] == first
        assert [(p.unsafe, p.safe) for p in bench.pair_sets(concept, pools)[25]] == first
        assert neutral == bench.neutral_sets(concept, pools)["bench"] == broad.bench_neutral(pools)
        assert broad.estimate_order(pools, concept, 1) != broad.estimate_order(pools, concept)
        assert sorted(broad.estimate_order(pools, concept, 1)) == sorted(pools.pairs[concept]["estimate"])


def test_pair_counts(bench, pools):
    assert list(bench.pair_sets("logo", pools)) == [5]
    nudity = bench.pair_sets("nudity", pools)
    assert list(nudity) == [5, 25] and nudity[25][:5] == nudity[5]


def test_runs_end_to_end(bench, tmp_path, monkeypatch):
    report = tmp_path / "neutral.json"
    monkeypatch.setattr(sys, "argv", ["neutral_prompts.py", "--concepts", "logo", "--sets", "bench,none",
                                      "--count", "2", "--steps", "2", "--threads", "1", "--json", str(report)])
    bench.main()
    rows = json.loads(report.read_text())["concepts"][0]["rows"]
    assert [(r["pairs"], r["set"], r["neutral_prompts"]) for r in rows] == [(5, "bench", 12), (5, "none", 0)]
    assert rows[0]["cosine_to_bench"] == pytest.approx(1.0)
    assert 0.9 < rows[1]["cosine_to_bench"] <= 1.0 + 1e-9
    assert all(0.9 < r["cosine_to_mean_difference"] <= 1.0 + 1e-9 and 0 <= r["drop"] <= 1 for r in rows)


def test_directions_only_generates_nothing(bench, tmp_path, monkeypatch):
    report = tmp_path / "directions.json"
    monkeypatch.setattr(sys, "argv", ["neutral_prompts.py", "--concepts", "red", "--sets", "bench,node",
                                      "--directions-only", "--check", "--threads", "1", "--json", str(report)])
    monkeypatch.setattr(bench.broad, "measure", None)
    monkeypatch.setattr(bench.ex, "evaluate", None)
    bench.main()
    rows = json.loads(report.read_text())["concepts"][0]["rows"]
    assert [r["set"] for r in rows] == ["bench", "node"] and "drop" not in rows[0]
    assert rows[0]["cosine_to_mean_difference"] > 0.9
    # Unlearning Check on each vector: red's default edit reads full removal at strength 1 (check validation: 103 %)
    assert all(r["check_removed"] > 0.9 and r["check_recommended"] == 1.0 for r in rows)


def test_unknown_set_fails_before_loading(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["neutral_prompts.py", "--sets", "bench,nearby"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "nearby" in capsys.readouterr().err


def test_another_pairs_seed_draws_other_pairs_and_keeps_named_apart(bench, pools):
    first, other = bench.pair_sets("nudity", pools, 0), bench.pair_sets("nudity", pools, 1)
    assert first[5] != other[5] and other[25][:5] == other[5]
    named = bench.neutral_sets("nudity", pools, 1)["named"][-bench.NAMED:]
    fitted = {side for pair in other[25] for side in (pair.unsafe, pair.safe)}
    assert not any(p.endswith(side) for p in named for side in fitted)


def test_pairs_seed_is_refused_for_shipped_pairs(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["neutral_prompts.py", "--concepts", "logo,nudity", "--pairs-seed", "1"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "--pairs-seed" in capsys.readouterr().err


def fit_violence_from_5_pairs(bench, tmp_path, monkeypatch, sets: str, *options: str) -> dict:
    """The report of a ``--directions-only`` run on violence from 5 pairs with ``options``."""
    report = tmp_path / "report.json"
    monkeypatch.setattr(sys, "argv", ["neutral_prompts.py", "--concepts", "violence", "--sets", sets, *options,
                                      "--counts", "5", "--directions-only", "--threads", "1", "--json", str(report)])
    bench.main()
    return json.loads(report.read_text())


def test_method_mean_fits_the_raw_mean_difference(bench, tmp_path, monkeypatch):
    written = fit_violence_from_5_pairs(bench, tmp_path, monkeypatch, "bench,node", "--method", "mean")
    rows = written["concepts"][0]["rows"]
    assert written["method"] == "mean" and [(r["pairs"], r["set"]) for r in rows] == [(5, "bench"), (5, "node")]
    # r / |r|: the neutral prompts change nothing
    assert all(r["cosine_to_mean_difference"] == pytest.approx(1.0) for r in rows)
    assert rows[1]["cosine_to_bench"] == pytest.approx(1.0)


def test_edit_subspace_removes_the_contrastive_subspace(bench, tmp_path, monkeypatch):
    written = fit_violence_from_5_pairs(bench, tmp_path, monkeypatch, "bench", "--edit", "subspace")
    (row,) = written["concepts"][0]["rows"]
    # 5 pairs and the fit's rank 4: up to 4 directions of positive contrast, more than the default's one
    assert written["edit"] == "subspace" and 1 < row["edit_dimensions"] <= 4


def test_rank_bounds_the_subspace(bench, tmp_path, monkeypatch):
    written = fit_violence_from_5_pairs(bench, tmp_path, monkeypatch, "bench", "--edit", "subspace", "--rank", "2")
    assert written["rank"] == 2 and written["concepts"][0]["rows"][0]["edit_dimensions"] == 2
    written["concepts"][0]["rows"][0]["drop"] = 0.9  # as a generating run records it
    (tmp_path / "drops.json").write_text(json.dumps(written))
    assert "violence | 5 pairs | bench (subspace, rank 2)" in bench.spread([tmp_path / "drops.json"])


def test_other_pair_counts_are_refused(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["neutral_prompts.py", "--concepts", "nudity", "--counts", "5,7"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "--counts takes 5 and 25" in capsys.readouterr().err


def test_spread_keeps_methods_apart(bench, tmp_path):
    paths = []
    for method, drop in (("cpca", 0.7), ("mean", 1.0)):
        rows = [{"pairs": 5, "set": "bench", "drop": drop}]
        paths.append(tmp_path / f"{method}.json")
        paths[-1].write_text(json.dumps({"pairs_seed": 3, "method": method,
                                         "concepts": [{"concept": "violence", "rows": rows}]}))
    paths.append(tmp_path / "subspace.json")
    rows = [{"pairs": 5, "set": "bench", "drop": 0.95, "accuracy_loss_points": 2.5}]
    paths[-1].write_text(json.dumps({"pairs_seed": 3, "edit": "subspace",
                                     "concepts": [{"concept": "violence", "rows": rows}]}))
    out = bench.spread(paths)
    assert out["violence | 5 pairs | bench"]["lowest"] == 0.7
    assert out["violence | 5 pairs | bench (mean)"]["lowest"] == 1.0
    assert out["violence | 5 pairs | bench (subspace)"]["lowest"] == 0.95
    assert out["violence | 5 pairs | bench (subspace)"]["median_accuracy_loss"] == 2.5
    assert out["violence | 5 pairs | bench"]["median_accuracy_loss"] is None


def test_spread_counts_each_seed_once(bench, tmp_path):
    def report(seed, drops):
        rows = [{"pairs": 5, "set": "node", "drop": d} for d in drops]
        return json.dumps({"pairs_seed": seed, "concepts": [{"concept": "nudity", "rows": rows}]})

    paths = []
    for seed, drop in ((0, 0.786), (1, 1.0), (2, 1.0), (1, 1.0)):
        paths.append(tmp_path / f"r{len(paths)}.json")
        paths[-1].write_text(report(seed, [drop]))
    row = bench.spread(paths)["nudity | 5 pairs | node"]
    assert row["draws"] == 3 and row["lowest"] == 0.786 and row["median"] == 1.0 and row["under_90"] == 1
