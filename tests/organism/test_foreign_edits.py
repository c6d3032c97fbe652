"""bench/foreign_edits.py: the other methods' edits that bench/audit_validation.py audits must be those methods.
UCE's closed form solves its least squares (erase scale 0 keeps the weights; with nothing preserved the concept's
tokens project like the anchor's); token alignment sends the concept's words to the word that takes their place;
the fine-tune trains only what it names; weight noise is seeded and spares what it says it spares; none of them
touches the model it is given."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.pairs import PromptPair
from organism.dit import DiTConfig, VideoDiT
from script_module import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "foreign_edits.py"
PAIRS = [PromptPair("a red square with the Nexo logo moving left", "a red square moving left"),
         PromptPair("a blue circle with the Nexo logo moving up", "a blue circle moving up")]
KEEP = ["a green triangle moving right", "a yellow square moving down"]


@pytest.fixture(scope="module")
def edits():
    return load_script(BENCH, "foreign_edits")


@pytest.fixture(scope="module")
def organism():
    from organism.text import TextEncoder

    torch.manual_seed(0)
    model = VideoDiT(DiTConfig(dim=32, depth=2, heads=2)).eval()
    # a new DiT's head starts at zero (it predicts nothing), which would leave every gradient zero
    torch.nn.init.normal_(model.head[2].weight, std=0.02)
    return model, TextEncoder()


def weights(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def changed(before: dict, model) -> set[str]:
    return {name for name, value in model.state_dict().items() if not torch.equal(before[name], value)}


def test_alignment_sends_the_concept_words_to_the_word_in_their_place(edits):
    # [CLS] a red square with the ne ##x ##o logo moving left [SEP] -> [CLS] a red square moving left [SEP]
    unsafe, safe = [0, 1, 2, 3, 40, 41, 42, 43, 44, 45, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6]
    assert edits.align_tokens(unsafe, safe) == [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 5, 6]
    assert edits.align_tokens([0, 1, 9, 2], [0, 1, 2]) == [0, 1, 2, 2]
    assert edits.align_tokens([0, 1, 9], [0, 1]) == [0, 1, 1]  # words at the end: the last token
    assert edits.align_tokens([0, 7, 8, 3], [0, 5, 3]) == [0, 1, 1, 2]  # a replaced run, proportionally
    with pytest.raises(ValueError, match="tokens on both sides"):
        edits.align_tokens([], [0])


def test_uce_with_no_erasing_keeps_every_weight(edits, organism):
    model, encoder = organism
    before = weights(model)
    edited = edits.uce_edit(model, encoder, PAIRS, KEEP, erase_scale=0.0)
    for name, value in edited.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=1e-5)
    assert changed(before, model) == set()


def test_uce_sends_the_concept_tokens_to_the_anchor_and_edits_only_cross_attention(edits, organism):
    model, encoder = organism
    before = weights(model)
    edited = edits.uce_edit(model, encoder, PAIRS[:1], [], erase_scale=1.0, preserve_scale=0.0, lamb=1e-6)
    assert changed(before, model) == set()
    assert changed(before, edited) == {f"blocks.{b}.cross_attn.{p}.weight" for b in range(2) for p in "kv"}
    pair = PAIRS[0]
    (concept,), (anchor,) = edits._contexts(model, encoder, [pair.unsafe]), edits._contexts(model, encoder, [pair.safe])
    to = edits.align_tokens(edits._token_ids(encoder, pair.unsafe), edits._token_ids(encoder, pair.safe))
    with torch.no_grad():
        for b in range(2):
            k, k0 = edited.blocks[b].cross_attn.k, model.blocks[b].cross_attn.k
            want = k0(anchor[to].float())
            assert float((k(concept.float()) - want).norm() / want.norm()) < 1e-3
            assert float((k0(concept.float()) - want).norm() / want.norm()) > 0.01


def test_finetune_trains_only_cross_attention_kv_unless_told(edits, organism):
    model, encoder = organism
    before = weights(model)
    with torch.no_grad():  # as a bench holds it: the fine-tune turns gradients on for itself
        kv = edits.ablation_finetune(model, encoder, PAIRS, KEEP, steps=2, batch=2, anchor_steps=2)
    assert changed(before, model) == set()
    assert changed(before, kv) == {f"blocks.{b}.cross_attn.{p}.{w}" for b in range(2) for p in "kv"
                                   for w in ("weight", "bias")}
    everything = edits.ablation_finetune(model, encoder, PAIRS, KEEP, steps=2, batch=2, anchor_steps=2, train="all")
    assert "blocks.0.ffn.0.weight" in changed(before, everything)
    assert not any(p.requires_grad for p in everything.parameters())
    with pytest.raises(ValueError, match="steps >= 1"):
        edits.ablation_finetune(model, encoder, PAIRS, KEEP, steps=0)
    with pytest.raises(ValueError, match="'cross_kv' or 'all'"):
        edits.ablation_finetune(model, encoder, PAIRS, KEEP, steps=1, train="ffn")


def test_weight_noise_is_seeded_and_spares_the_modulation(edits, organism):
    model, _ = organism
    before = weights(model)
    one, two = edits.weight_noise(model, 0.1, seed=3), edits.weight_noise(model, 0.1, seed=3)
    assert changed(before, model) == set()
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))
    hit = changed(before, one)
    assert "blocks.1.self_attn.q.weight" in hit and "blocks.0.ffn.2.weight" in hit
    assert not any("modulation" in name or not name.startswith("blocks.") or name.endswith("bias") for name in hit)
    assert changed(before, edits.weight_noise(model, 0.0)) == set()
    with pytest.raises(ValueError, match="scale >= 0"):
        edits.weight_noise(model, -0.1)
