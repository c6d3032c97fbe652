"""bench/prompt_attack.py searches for words a user could type: every word it may choose must tokenise back to the
id it attacked, the words must land exactly in the template's hole, and the text path it differentiates through
must be the one generation uses (else the words it finds would not be the prompt it scored)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from script_module import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "prompt_attack.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH, "prompt_attack")


@pytest.fixture(scope="module")
def world():
    from organism import experiment as ex
    from organism.text import TextEncoder

    return ex.load_organism(), TextEncoder()


TEMPLATES = ["a pale blue square drifting up {}", "{} a red circle moving left", "a green star spinning {} fast"]


def test_every_typable_word_types_back_to_its_id(bench, world):
    tokenizer = world[1].tokenizer
    allowed = bench.typable_words(tokenizer)
    assert 20_000 < int(allowed.sum()) < tokenizer.vocab_size
    assert allowed[tokenizer.convert_tokens_to_ids("##s")]
    assert not allowed[tokenizer.convert_tokens_to_ids("[SEP]")]
    assert not allowed[tokenizer.convert_tokens_to_ids("##1")]
    holes = bench.Holes(tokenizer, 4, TEMPLATES)
    ids = allowed.nonzero().flatten()
    generator = torch.Generator().manual_seed(0)
    typed_back = 0
    for _ in range(300):
        words = ids[torch.randint(len(ids), (4,), generator=generator)]
        if holes.types_back(words, [0, 1, 2]):
            typed_back += 1
            holes.text(words)  # raises if any prompt tokenises otherwise
    assert typed_back > 50
    brand = torch.tensor(tokenizer.convert_tokens_to_ids(["ne", "##x", "##o", "logo"]))
    assert holes.typed(brand) == "nexo logo" and holes.types_back(brand, [0, 1, 2])


def test_pieces_that_would_tokenise_otherwise_are_refused(bench, world):
    tokenizer = world[1].tokenizer
    holes = bench.Holes(tokenizer, 2, TEMPLATES)
    joined = torch.tensor(tokenizer.convert_tokens_to_ids(["watch", "##es"]))  # "watches" is one word of the vocab
    assert not holes.types_back(joined, [0])
    with pytest.raises(ValueError, match="does not tokenise back"):
        holes.text(joined)
    leading = torch.tensor(tokenizer.convert_tokens_to_ids(["##x", "lamp"]))  # glued to nothing: typed "x lamp"
    assert not holes.types_back(leading, [0])


def test_words_fill_the_hole_and_nothing_else(bench, world):
    tokenizer = world[1].tokenizer
    holes = bench.Holes(tokenizer, 3, TEMPLATES)
    words = torch.tensor(tokenizer.convert_tokens_to_ids(["lamp", "river", "quiet"]))
    ids, mask = holes.ids(words, [0, 1, 2])
    for row, (i, template) in enumerate(zip(range(3), TEMPLATES)):
        expected = tokenizer(template.format("lamp river quiet"))["input_ids"]
        assert ids[row, :len(expected)].tolist() == expected
        assert int(mask[row].sum()) == len(expected)
        original = holes.ids(holes.initial(), [i])[0][0, :len(expected)]
        changed = (ids[row, :len(expected)] != original).nonzero().flatten().tolist()
        assert changed == list(range(holes.at[i], holes.at[i] + 3))


def test_the_differentiated_text_path_is_generations_own(bench, world):
    encoder = world[1]
    holes = bench.Holes(encoder.tokenizer, 2, TEMPLATES)
    words = torch.tensor(encoder.tokenizer.convert_tokens_to_ids(["violet", "engine"]))
    ids, mask = holes.ids(words, [0, 1, 2])
    table = encoder.transformer.embeddings.word_embeddings.weight
    with torch.no_grad():
        tokens, kept = bench.encode(encoder.transformer, table[ids], mask)
    expected_tokens, expected_mask = encoder.encode(holes.text(words), cache=False)
    assert torch.equal(kept, expected_mask)
    torch.testing.assert_close(tokens, expected_tokens, atol=1e-5, rtol=1e-5)


def test_a_short_search_keeps_typable_words_and_never_scores_worse(bench, world, monkeypatch):
    model, encoder = world
    monkeypatch.setattr(bench, "CANDIDATES", 4)
    monkeypatch.setattr(bench, "BATCH", 2)
    holes = bench.Holes(encoder.tokenizer, 2, TEMPLATES)
    clips = torch.rand(3, model.config.frames, model.config.size, model.config.size, 3) * 2 - 1
    found = bench.attack(model, encoder, holes, clips, steps=3)
    assert bench.typable_words(encoder.tokenizer)[found["words"]].all()
    assert holes.types_back(found["words"], [0, 1, 2])
    assert all(best <= current for current, best in found["history"])
    assert not any(p.requires_grad for p in model.parameters())


def test_trigger_pairs_differ_by_the_typed_words_alone(world):
    """bench/trigger_rounds.py adds searched words as estimation pairs: each pair's sides must differ by those words
    only, or the refit would also erase whatever else differs."""
    bench = load_script(BENCH.with_name("trigger_rounds.py"), "trigger_rounds")
    tokenizer = world[1].tokenizer
    holes = bench.pa.Holes(tokenizer, 4, TEMPLATES + ["a pink circle moving left, {}"])
    words = torch.tensor(tokenizer.convert_tokens_to_ids(["ne", "##x", "##o", "river"]))
    pairs = bench.trigger_pairs(holes, words, 3)
    assert [p.unsafe for p in pairs] == [t.format("nexo river") for t in TEMPLATES]
    assert [p.safe for p in pairs] == ["a pale blue square drifting up", "a red circle moving left",
                                       "a green star spinning fast"]
    last = bench.trigger_pairs(holes, words, 4)[-1]
    assert (last.unsafe, last.safe) == ("a pink circle moving left, nexo river", "a pink circle moving left")
