"""bench/check_validation.py on broad concepts: the check's rows come from the ``valid`` split, never from the pairs
the edit is estimated from (read in place from ../shared/data; skipped without it; no prompt is printed: the
assertions compare counts)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from organism.scenes import CONCEPTS, DATA, join, load_pools

BENCH = Path(__file__).resolve().parents[2] / "bench" / "check_validation.py"


@pytest.fixture(scope="module")
def bench_and_pools():
    if not DATA.is_dir():
        pytest.skip(f"no prompt data at {DATA}")
    spec = importlib.util.spec_from_file_location("check_validation", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module, load_pools(DATA, coco=2000)


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
    assert bench.broad_validation_pairs(pools, concept, 5) == pairs
