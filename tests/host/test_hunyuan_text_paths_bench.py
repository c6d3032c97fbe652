"""bench/hunyuan_text_paths.py (docs/architectures.md's figures for HunyuanVideo's text paths) runs end to end on a tiny setting, so
it does not rot: one held pair (and its equal-length twin), one frame, one sigma."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_module import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hunyuan_text_paths.py"


def _bench():
    return load_script(BENCH, "hunyuan_text_paths_bench")


def test_the_bench_runs_on_a_tiny_setting(pack, tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "text_paths.json"
    (result,) = bench.main(["--json", str(out)], {"smoke": bench.SMOKE})
    printed = capsys.readouterr().out
    assert "RANDOM-weight" in printed and "left by txt_in" in printed
    assert result["d_before"] > 0 and set(result["shares"]) == {"single text", "pooled", "both"}
    assert all(-1 < share < 1 for share in result["shares"].values())
    # every group of the adapter, the text input included, and 'all' with its layers
    assert list(result["groups"]) == ["txt_mlp.0", "txt_attn.qkv", "txt_in", "vector_in", "all"]
    assert result["groups"]["txt_in"]["layers"] == ["txt_in.input_embedder", "txt_in.c_embedder.in_layer"]
    assert all(0 <= share <= 1 + 1e-9 for share in result["groups"]["txt_in"]["held_in_span"])
    assert all(0 <= g["left"] < 2 and 0 <= g["token_path_left"] < 2 for g in result["groups"].values())
    # the same measurements on held pairs whose sides have the same token count (the concept word replaced)
    assert "held pairs of equal token count" in printed
    same = result["same_length"]
    assert same["pairs"] == ["a shiny Rolex timepiece in a box | a shiny Seiko timepiece in a box"]
    assert same["d_before"] > 0 and set(same["shares"]) == {"single text", "pooled", "both"}
    assert all(-1 < share < 1 for share in same["shares"].values())
    assert all(0 <= g["same_length"]["left"] < 2 and 0 <= g["same_length"]["token_path_left"] < 2
               for g in result["groups"].values())
    txt_in = result["groups"]["txt_in"]["same_length"]
    assert all(0 <= share <= 1 + 1e-9 for share in txt_in["held_in_span"] + txt_in["rows_in_span"])
    assert set(result["check_removed"]) == {"all layers", "txt_mlp.0", "txt_attn.qkv", "txt_in", "vector_in"}
    assert json.loads(out.read_text())["random_weights"] is True


def test_equal_length_pairs_swap_the_concept_for_a_brand_and_refuse_a_pair_without_it():
    bench = _bench()
    held = ("a gold Rolex on a wrist | a gold watch on a wrist", "a Rolex watch | a watch")
    assert bench.same_length(held) == ("a gold Rolex on a wrist | a gold Seiko on a wrist",
                                       "a Rolex watch | a Casio watch")
    with pytest.raises(ValueError, match="no 'Rolex'"):
        bench.same_length(("a gold watch | a watch",))
