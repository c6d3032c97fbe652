"""The organism: exact readers, the DiT's shapes and layer names, the packaged text encoder, the committed
weights, and collect -> fit -> edit through core/ on it (tiny sizes; the figures come from bench/)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from organism import experiment as ex
from organism.dit import DiTConfig, VideoDiT
from organism.readers import read
from organism.world import COLOURS, MOTIONS, SHAPES, Scene, caption, random_scene, render


def test_readers_are_exact_on_rendered_clips():
    rng, np_rng = random.Random(0), np.random.default_rng(0)
    for _ in range(300):
        scene = random_scene(rng, logo_rate=0.5)
        assert read(render(scene, np_rng)) == {"colour": scene.colour, "shape": scene.shape, "motion": scene.motion,
                                               "logo": scene.logo}


def test_every_attribute_combination_is_renderable():
    np_rng = np.random.default_rng(1)
    for colour in COLOURS:
        for shape in SHAPES:
            for motion in MOTIONS:
                clip = render(Scene(colour, shape, motion, True), np_rng)
                assert clip.shape == (8, 16, 16, 3) and 0 <= clip.min() and clip.max() <= 1


def test_dit_shapes_and_wan_like_layer_names():
    model = VideoDiT(DiTConfig())
    video = torch.randn(2, 8, 16, 16, 3)
    out = model(video, torch.rand(2), torch.randn(2, 24, 384), torch.ones(2, 24, dtype=torch.bool))
    assert out.shape == video.shape
    names = dict(model.named_modules())
    assert {"blocks.0.cross_attn.k", "blocks.3.cross_attn.v", "blocks.1.ffn.0", "text_embedding.0"} <= set(names)


@pytest.fixture(scope="module")
def organism():
    torch.set_num_threads(2)
    from organism.text import TextEncoder

    return ex.load_organism(), TextEncoder()


def test_text_encoder_is_real_and_offline(organism):
    _, encoder = organism
    tokens, mask = encoder.encode(["a red ball moving left", "a crimson ball moving left", "a blue cube standing still"])
    assert tokens.shape == (3, 24, 384) and mask[0].sum() >= 5
    pooled = torch.nn.functional.normalize((tokens * mask[..., None]).sum(1), dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2]  # real semantics: crimson is closer to red than blue is


def test_unlearning_through_core_on_the_organism(organism):
    model, encoder = organism
    pairs = ex.load_pairs(ex.default_pairs_path("logo"))
    layers = ex.layer_names(model, "text_kv")
    measured = ex.collect(model, encoder, pairs, ex.neutral_prompts(4), layers, times=(0.5,))
    basis = measured.fitter.fit(rank=2, concept="logo", pairs=pairs, model_family="organism")
    edited = ex.edited_copy(model, basis)
    for layer in layers:
        weight = edited.get_submodule(layer).weight.detach()
        assert (weight @ basis.subspace(layer)).abs().max() < 1e-5
        assert not torch.equal(weight, model.get_submodule(layer).weight)  # the original is untouched
    prompts = ex.concept_prompts("logo", 2)
    with torch.no_grad():
        result = ex.evaluate(edited, encoder, prompts, "logo", steps=2)
    assert set(result) >= {"rate_seen", "rate_unseen", "rate_adversarial", "attr_unrelated", "attr_unrelated_each", "clips"}
    assert set(result["attr_unrelated_each"]) == {"colour", "shape", "motion"}
    assert caption(Scene("red", "cross", "left", True), random.Random(0))


def test_accuracy_report_reads_every_attribute(organism):
    from organism.accuracy import ATTRIBUTES, accuracy

    model, encoder = organism
    result = accuracy(model, encoder, 2, wording="held-out", steps=1)
    assert set(result) == {*ATTRIBUTES, "all"} and all(0.0 <= v <= 1.0 for v in result.values())


def test_held_out_paraphrases_are_unseen_and_split_by_the_committed_verdicts(organism):
    from organism.paraphrases import THRESHOLD, nearest_centroid, passes_rule
    from organism.world import (HELD_OUT_WORDS, LOGO_HELD_OUT, LOGO_TRAIN, PARAPHRASE_CANDIDATES, REJECTED_PARAPHRASES,
                                TRAIN_WORDS, VERDICTS)

    trained = {phrase for phrases in TRAIN_WORDS.values() for phrase in phrases}
    for value, candidates in PARAPHRASE_CANDIDATES.items():
        assert HELD_OUT_WORDS[value] and not set(candidates) & trained, value
        assert sorted(HELD_OUT_WORDS[value] + REJECTED_PARAPHRASES[value]) == sorted(candidates)
    assert not set(LOGO_HELD_OUT) & set(LOGO_TRAIN)
    verdicts = json.loads(VERDICTS.read_text())
    assert verdicts["rule"]["threshold"] == THRESHOLD == 0.9
    verdicts = verdicts["phrases"]
    for phrase, row in nearest_centroid(organism[1]).items():  # part 1 of the rule still holds as committed
        assert {k: verdicts[phrase][k] for k in row} == row, phrase
    for phrase, row in verdicts.items():
        assert row["understood"] == passes_rule(row), phrase


def test_readout_probe_reproduces_the_committed_verdicts(organism):
    """Part 2 of the rule, re-run with the first probe seed: a text-only reader trained on training wording."""
    from organism.paraphrases import is_new_word, readout
    from organism.world import VERDICTS

    verdicts = json.loads(VERDICTS.read_text())["phrases"]
    with torch.no_grad():
        first_seed = readout(organism[1], seeds=(0,))
    close = [abs(first_seed[p][0] - row["readout"][0]) <= 0.15 for p, row in verdicts.items()]
    assert np.mean(close) >= 0.95
    assert is_new_word("down", "plummeting") and not is_new_word("red", "rust red")


def test_paths_are_centred_with_a_little_jitter():
    from organism.world import JITTER, OBJECT, SIZE

    np_rng = np.random.default_rng(2)
    starts = {tuple(np.argwhere(render(Scene("red", "square", "still", False), np_rng)[0].max(-1) > 0).min(0))
              for _ in range(200)}
    centre = (SIZE - OBJECT) // 2
    assert {s for pair in starts for s in pair} == set(range(centre - JITTER, centre + JITTER + 1))


def test_committed_organism_follows_prompts_and_forgets_the_trademark(organism):
    """A regression guard on the committed weights (fixed seeds, so deterministic); figures come from bench/."""
    from organism.accuracy import accuracy

    model, encoder = organism
    with torch.no_grad():
        followed = accuracy(model, encoder, 16, wording="training", steps=12)
    assert followed["all"] >= 0.85, followed
    pairs = ex.load_pairs(ex.default_pairs_path("logo"))
    layers = ex.layer_names(model, "text_kv")
    with torch.no_grad():
        basis = ex.collect(model, encoder, pairs, ex.neutral_prompts(), layers).fitter.fit(rank=4, layers=layers)
        prompts = ex.concept_prompts("logo", 12)
        prompts.prompts = {"seen": prompts.prompts["seen"]}
        before = ex.evaluate(model, encoder, prompts, "logo", steps=12)["rate_seen"]
        after = ex.evaluate(ex.edited_copy(model, basis), encoder, prompts, "logo", steps=12)["rate_seen"]
    assert before >= 0.5 and after <= before / 3, (before, after)


def test_per_phrase_report_covers_every_held_out_phrase(organism):
    from organism.accuracy import per_phrase
    from organism.world import COLOURS, HELD_OUT_WORDS, MOTIONS, SHAPES

    rows = per_phrase(*organism, count=1, steps=1)
    expected = [p for v in (*COLOURS, *SHAPES, *MOTIONS) for p in HELD_OUT_WORDS[v]]
    assert [r["phrase"] for r in rows] == expected and all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
