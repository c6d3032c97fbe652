"""bench/pooled_paths.py (docs/architectures.md's figures for the pooled text paths) runs end to end on a tiny setting, so it does not
rot: one held pair, one frame, one sigma, both families."""

from __future__ import annotations

import json
from pathlib import Path

from script_module import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "pooled_paths.py"


def test_the_bench_runs_on_a_tiny_setting(pack, tmp_path, capsys):
    bench = load_script(BENCH, "pooled_paths_bench")
    out = tmp_path / "pooled.json"
    results = bench.main(["--json", str(out)], {"smoke": bench.SMOKE})
    printed = capsys.readouterr().out
    assert "RANDOM-weight" in printed and "vector_in" in printed and "t5_y_embedder" in printed
    assert [r["family"] for r in results] == ["hunyuan_video", "mochi"]
    for r in results:
        assert r["d_before"] > 0 and -1 < r["pooled_share"] < 1
        pooled = "vector_in" if r["family"] == "hunyuan_video" else "t5_y_embedder"
        assert set(r["groups"]) == {"default", "all", pooled}
        assert all(0 <= g["left"] < 2 for g in r["groups"].values())
        # all layers, then each group of 'all' (HunyuanVideo's four with txt_in, Mochi's three)
        assert "all layers" in r["check_removed"] and len(r["check_removed"]) == (5 if pooled == "vector_in" else 4)
    assert json.loads(out.read_text())["random_weights"] is True
