"""The shipped benchmark pair sets (workflows/pairs/benchmarks): they parse, carry their licences, and hold only the
estimate split's pairs, so nothing the organism trains or is evaluated on (read in place from ../shared/data; skipped
without it; no prompt is printed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.pairs import parse_pairs
from organism.scenes import CONCEPTS, DATA, PROMPT_SPLITS, load_pools, norm

SETS = Path(__file__).resolve().parents[2] / "workflows" / "pairs" / "benchmarks"


@pytest.mark.parametrize("concept", CONCEPTS)
def test_sets_parse_and_carry_their_notice_and_licences(concept):
    pairs = parse_pairs((SETS / f"{concept}_estimate.txt").read_text(encoding="utf-8"))
    assert len(pairs) >= 25
    notice = (SETS / "NOTICE.md").read_text(encoding="utf-8")
    for licence in ("Six-CD.MIT.txt", "SteeringFields.MIT.txt"):
        assert licence in notice and "MIT License" in (SETS / "LICENSES" / licence).read_text(encoding="utf-8")


def test_sets_hold_only_estimate_pairs():
    if not DATA.is_dir():
        pytest.skip(f"no prompt data at {DATA}")
    pools = load_pools(DATA, coco=2000)
    for concept in CONCEPTS:
        shipped = {(norm(p.unsafe), norm(p.safe))
                   for p in parse_pairs((SETS / f"{concept}_estimate.txt").read_text(encoding="utf-8"))}
        assert shipped == set(pools.pairs[concept]["estimate"])
        used = {prompt for pool in pools.prompts.values() for split in PROMPT_SPLITS for prompt in pool[split]}
        assert not {side for pair in shipped for side in pair} & used, "a shipped pair is a training/evaluation prompt"
