"""bench/inversion_attack.py fits token rows in place of a concept's words: the splice must put the learned rows
exactly where the placeholder words were and pass gradient to them alone, and the templates must hold no trace of
the concept's words (else the attack would not need its rows to revive it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from script_module import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "inversion_attack.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH, "inversion_attack")


def test_splice_replaces_the_placeholder_rows_only(bench):
    prefix = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3)
    mask = torch.tensor([True] * 6 + [False] * 2)
    rows = torch.full((2, 3), -1.0, requires_grad=True)
    tokens, kept = bench.splice(prefix, mask, 3, rows, 2)
    assert torch.equal(tokens[3:5], rows.detach())
    assert torch.equal(tokens[:3], prefix[:3]) and torch.equal(tokens[5:], prefix[5:])
    assert torch.equal(kept, mask)
    tokens.sum().backward()
    assert torch.equal(rows.grad, torch.ones(2, 3))


def test_splice_names_a_wrong_row_count_and_rows_past_the_prompt(bench):
    prefix, mask = torch.zeros(8, 3), torch.tensor([True] * 4 + [False] * 4)
    with pytest.raises(ValueError, match="expected k = 2"):
        bench.splice(prefix, mask, 1, torch.zeros(3, 3), 2)
    with pytest.raises(ValueError, match="past the carrier's 4 real tokens"):
        bench.splice(prefix, mask, 3, torch.zeros(2, 3), 2)


@pytest.mark.parametrize("concept, words", [("logo", ("Nexo",)), ("red", ("red",))])
def test_templates_hold_no_concept_word(bench, concept, words):
    pairs = bench.concept_templates(concept, 40, None, "train", seed=5)
    for prompt, template in pairs:
        assert template.count("{}") == 1
        assert not any(w in template for w in words), template
        assert any(w in prompt for w in words), prompt
