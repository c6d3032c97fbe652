"""The organism: exact readers, the DiT's shapes and layer names, the packaged text encoder, the committed
weights, and collect -> fit -> edit through core/ on it (tiny sizes; the figures come from bench/)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from organism import experiment as ex
from organism.dit import DiTConfig, VideoDiT
from organism.readers import margins, matches, read
from organism.world import CONCEPT_MARKS, COLOURS, MOTIONS, SHAPES, Scene, caption, random_scene, render


def test_readers_are_exact_on_rendered_clips():
    """Every attribute, the logo and each concept mark (in any combination) read back exactly."""
    rng, np_rng = random.Random(0), np.random.default_rng(0)
    for _ in range(300):
        marks = frozenset(c for c in CONCEPT_MARKS if rng.random() < 0.5)
        scene = replace(random_scene(rng, logo_rate=0.5), marks=marks)
        assert read(render(scene, np_rng)) == {"colour": scene.colour, "shape": scene.shape, "motion": scene.motion,
                                               "logo": scene.logo, **{c: c in marks for c in CONCEPT_MARKS}}


def test_graded_margins_agree_with_the_readers_in_sign():
    """``margins`` is > 0 exactly where ``read`` gives the scene's value: on rendered clips (all positive), on noisy
    and blended ones, and against a scene that asks for other values; a clip with no object scores -1."""
    rng, np_rng = random.Random(1), np.random.default_rng(1)
    checked = {True: 0, False: 0}
    for index in range(300):
        scene = random_scene(rng, logo_rate=0.0)
        clip = render(scene, np_rng)
        other = render(random_scene(rng, logo_rate=0.0), np_rng)
        clip = np.clip((1 - index / 600) * clip + index / 600 * other + np_rng.normal(0, 0.1, clip.shape), 0, 1)
        asked = scene if index % 3 else random_scene(rng, logo_rate=0.0)
        right = matches(clip, asked)
        for attribute, value in margins(clip, asked).items():
            assert -1 <= value <= 1
            assert (value > 0) == right[attribute], (index, attribute, value)
            checked[right[attribute]] += 1
    assert min(checked.values()) > 50  # both signs were exercised
    rendered = render(Scene("red", "cross", "left", False), np_rng)
    assert min(margins(rendered, Scene("red", "cross", "left", False)).values()) > 0
    assert margins(np.zeros_like(rendered), Scene("red", "cross", "left", False)) == dict.fromkeys(
        ("colour", "shape", "motion"), -1.0)


def test_every_attribute_combination_is_renderable():
    np_rng = np.random.default_rng(1)
    for colour in COLOURS:
        for shape in SHAPES:
            for motion in MOTIONS:
                clip = render(Scene(colour, shape, motion, True, frozenset(CONCEPT_MARKS)), np_rng)
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
    from organism.text import MAX_TOKENS

    assert tokens.shape == (3, MAX_TOKENS, 384) and mask[0].sum() >= 5 and not mask[:, 20:].any()
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
    assert verdicts["rule"]["threshold"] == THRESHOLD  # the committed verdicts were made under today's rule
    verdicts = verdicts["phrases"]
    for phrase, row in nearest_centroid(organism[1]).items():  # part 1 of the rule still holds as committed
        assert {k: verdicts[phrase][k] for k in row} == row, phrase
    for phrase, row in verdicts.items():
        assert row["understood"] == passes_rule(row), phrase


def test_a_small_readout_probe_agrees_with_the_committed_verdicts_on_clear_phrases(organism):
    """Part 2 of the rule, bounded (~1 min): one small probe (1,500 captions, 400 steps instead of 6,000 x 1,500 x 3
    seeds) on the phrases whose committed verdict is clear-cut. Probe scores move by up to 0.15 between CPUs (float
    summation order), so only phrases far from the threshold are compared, with a wide margin; the full re-check of
    every verdict is ``python -m organism.paraphrases --check`` (~30 min)."""
    from organism.paraphrases import VALUES, is_new_word, readout_accuracy, train_probe
    from organism.world import VERDICTS, random_scene

    verdicts = json.loads(VERDICTS.read_text())["phrases"]
    by_attribute = {"colour": list(COLOURS), "shape": list(SHAPES), "motion": list(MOTIONS)}
    clear_yes = [next(p for p, r in verdicts.items() if r["understood"] and min(r["readout"]) >= 1.0
                      and r["value"] in values) for values in by_attribute.values()]
    clear_no = ["scarlet", "azure", "citrine", "cube", "tent shape"]
    assert all(max(verdicts[p]["readout"]) <= 0.05 for p in clear_no)
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(1500)]
    tokens, mask = organism[1].encode([caption(s, rng) for s in scenes])
    labels = {name: torch.tensor([values.index(getattr(s, name)) for s in scenes]) for name, values in VALUES.items()}
    probe = train_probe(tokens, mask, labels, seed=0, steps=400)
    with torch.no_grad():
        for phrase in clear_yes:
            assert readout_accuracy([probe], organism[1], verdicts[phrase]["value"], phrase)[0] >= 0.75, phrase
        for phrase in clear_no:
            assert readout_accuracy([probe], organism[1], verdicts[phrase]["value"], phrase)[0] <= 0.5, phrase
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


def test_script_inputs_fail_in_one_line_with_status_2(tmp_path, capsys):
    """What bench/demo.py and bench/unlearning.py check before anything loads."""
    import argparse

    from organism import cli

    bad = tmp_path / "pairs.txt"
    bad.write_text("# comment\na Nexo ball | a ball\nno bar here\n")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("seen: a red ball\nbenign [red circle up]: a red ball rising, a street\nbenign [red cube up]: x\n")
    for call, expected in ((lambda: cli.read_pairs(bad, "logo"), f"{bad}:3: "),
                           (lambda: cli.read_pairs(tmp_path / "missing.txt", "logo"), "does not exist"),
                           (lambda: cli.read_pairs(None, "blue"), "concepts with shipped pairs: logo, red"),
                           (lambda: cli.read_prompt_lines(prompts), f"{prompts}:3: unknown shape 'cube'")):
        with pytest.raises(SystemExit) as stop:
            call()
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    prompts.write_text("seen: a red ball\nbenign [red circle up logo]: a red ball rising, a street\n")
    assert cli.read_prompt_lines(prompts) == [("seen", None, "a red ball"), (
        "benign", {"colour": "red", "shape": "circle", "motion": "up", "logo": True}, "a red ball rising, a street")]
    assert cli.read_pairs(None, "nudity") is None  # broad concepts: pairs come from the data's estimate split
    for text in ("0", "-3", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.positive_int(text)
    with pytest.raises(argparse.ArgumentTypeError, match="logo, red, .*nudity, violence"):
        cli.concept_name("blue-ish")


def test_real_prompt_splits_are_disjoint_and_marks_follow_labels():
    """What trains the DiT, what estimates an edit and what evaluates are disjoint by prompt (read in place from
    ../shared/data; skipped without it)."""
    from organism.scenes import CONCEPTS, DATA, PROMPT_SPLITS, join, load_pools, training_captions

    if not DATA.is_dir():
        pytest.skip(f"no prompt data at {DATA}")
    pools = load_pools(DATA, coco=2000)
    by_split = {s: set() for s in (*PROMPT_SPLITS, "estimate")}
    for pool in pools.prompts.values():
        for split, prompts in pool.items():
            by_split[split] |= set(prompts)
    for concept in CONCEPTS:
        for split, pairs in pools.pairs[concept].items():
            by_split[split] |= {p for pair in pairs for p in pair}
        assert len(pools.pairs[concept]["estimate"]) >= 25 and len(pools.prompts[concept]["test"]) >= 150
    names = list(by_split)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not by_split[a] & by_split[b], (a, b)
    captions, scenes = training_captions(pools, 400, random.Random(0), caption, random_scene)
    assert any(s.marks for s in scenes) and any(not s.marks for s in scenes)
    train = by_split["train"]
    for text, scene in zip(captions, scenes):
        if scene.marks:
            assert any(text == p or text.endswith(", " + p) for p in train) and scene.marks <= set(CONCEPTS)
    assert join("a red ball", "x") == "a red ball, x"
    # A mix override (stage 3's hard negatives) draws only from the pools it names, train split only.
    only_safe = {name: 0.0 for name in ("nudity", "violence", "safe_nudity", "benign_near", "benign")}
    captions, scenes = training_captions(pools, 200, random.Random(1), caption, random_scene,
                                         mix={**only_safe, "safe_violence": 1.0})
    safe_train = set(pools.prompts["safe_violence"]["train"])
    assert all(any(text == p or text.endswith(", " + p) for p in safe_train) for text in captions)
    assert not any(s.marks for s in scenes)


def test_training_mix_overrides_and_their_errors():
    from organism.scenes import TRAINING_MIX
    from organism.train import _mix

    assert _mix([]) == TRAINING_MIX
    assert _mix(["safe_violence=0.1", "benign=0.2"]) == {**TRAINING_MIX, "safe_violence": 0.1, "benign": 0.2}
    with pytest.raises(ValueError, match="unknown pool 'gore'"):
        _mix(["gore=0.1"])
    with pytest.raises(ValueError, match="not a number"):
        _mix(["benign=lots"])
    with pytest.raises(ValueError, match="sum to <= 1"):
        _mix(["benign=0.9"])


def test_committed_organism_draws_each_concepts_own_mark_and_the_chosen_edit_removes_it(organism):
    """A regression guard on the committed weights for the broad concepts (fixed seeds; figures come from bench/):
    held-out valid-split concept prompts draw their own mark, and the nodes' default edit from the estimate pairs
    removes it (read in place from ../shared/data; skipped without it; no prompt is printed)."""
    from core.pairs import PromptPair
    from organism.broad import broad_prompts, measure
    from organism.scenes import CONCEPTS, DATA, join, load_pools

    if not DATA.is_dir():
        pytest.skip(f"no prompt data at {DATA}")
    model, encoder = organism
    pools = load_pools(DATA, coco=2000)
    neutral = [join(c, p) for c, p in zip(ex.neutral_prompts(12), pools.prompts["benign"]["train"][:12])]
    layers = ex.layer_names(model, "text_kv")
    for concept in CONCEPTS:
        prompts = broad_prompts(pools, concept, "valid", 12)
        prompts.prompts = {"concept": prompts.prompts["concept"]}
        pairs = [PromptPair(u, s) for u, s in pools.pairs[concept]["estimate"]]
        with torch.no_grad():
            before = measure(model, encoder, prompts, concept, steps=12)
            basis = ex.collect(model, encoder, pairs, neutral, layers).fitter.fit(rank=4, layers=layers)
            after = measure(ex.edited_copy(model, basis), encoder, prompts, concept, steps=12)
        assert before["rate_concept"] >= 0.6 and before["other_concept"] <= 0.4, (concept, before["rate_concept"])
        assert after["rate_concept"] <= 0.2, (concept, after["rate_concept"])


def test_broad_accuracy_over_several_noises(organism):
    """``--noise-seeds``: concept and safe-side sets are also sampled from more noises, the first being the
    one-noise figure; benign sets are not (read in place from ../shared/data; skipped without it)."""
    from organism.accuracy import broad_accuracy
    from organism.scenes import DATA, load_pools

    if not DATA.is_dir():
        pytest.skip(f"no prompt data at {DATA}")
    model, encoder = organism
    with torch.no_grad():
        report = broad_accuracy(model, encoder, load_pools(DATA, coco=2000), "valid", count=3, steps=1, noise_seeds=2)
    for key, row in report.items():
        if key.startswith("benign"):
            assert "mark_over_noises" not in row, key
        else:
            assert row["noise_seeds"] == 2, key
            assert row["marked_on_every_noise"] <= row["mark"] <= 2 * row["mark_over_noises"], (key, row)


def test_broad_prompts_on_the_training_split_are_training_prompts():
    """``organism.accuracy --broad --split train`` (the DiT's fit on what it trained on) draws only train-split
    prompts, each under an attribute caption; no estimation pair and no held-out prompt (read in place from
    ../shared/data; skipped without it)."""
    from organism.broad import broad_prompts
    from organism.scenes import CONCEPTS, DATA, load_pools

    if not DATA.is_dir():
        pytest.skip(f"no prompt data at {DATA}")
    pools = load_pools(DATA, coco=2000)
    pools_of = {"concept": "{}", "safe": "safe_{}", "benign_near": "benign_near", "benign": "benign"}
    held_out = {p for pool in pools.prompts.values() for split in ("valid", "test") for p in pool[split]}
    held_out |= {p for pairs in pools.pairs.values() for pair in pairs["estimate"] for p in pair}
    for concept in CONCEPTS:
        drawn = broad_prompts(pools, concept, "train", 20)
        for name, texts in drawn.prompts.items():
            train = pools.prompts[pools_of[name].format(concept)]["train"]
            assert len(texts) == min(20, len(train)) > 0, (concept, name)
            for text in texts:
                assert any(text.endswith(", " + p) for p in train), (concept, name)
                assert not any(text.endswith(", " + p) for p in held_out), (concept, name)


def test_bench_variant_selection_by_name_and_block_range():
    """bench/unlearning.py: logo/colour sweep rows picked by name (the default first), broad variants with a block
    range (collected over every block, fitted and edited on the late ones)."""
    from pathlib import Path

    from script_module import load_script

    bench = load_script(Path(__file__).resolve().parents[2] / "bench" / "unlearning.py", "bench_unlearning")
    rows = bench.sweep_rows("default,late blocks")
    assert [name for name, _ in rows] == [bench.SWEEP[0][0], "layers: text k/v, late blocks"]
    assert rows[1][1] == {"blocks": "late"} and bench.sweep_rows(None) == bench.SWEEP
    with pytest.raises(SystemExit):
        bench.sweep_rows("no such row")
    label, change = bench.broad_variant("pairsall-late@0.75")
    config = {**bench.BROAD_SETTINGS, **change}
    assert config["blocks"] == "late" and config["pairs"] is None and config["strength"] == 0.75
    model = VideoDiT(DiTConfig(dim=32, depth=4, heads=2))
    assert ex.layer_names(model, config["group"], config["blocks"]) == [
        f"blocks.{i}.cross_attn.{kv}" for i in (2, 3) for kv in ("k", "v")]


def test_uncoloured_prompts_name_no_colour():
    """The colour pairs' safe side as captions (bench/unlearning.py's bound on a faithful colour edit's drop)."""
    from organism.world import COLOURS, HELD_OUT_WORDS, TRAIN_WORDS

    prompts = ex.uncoloured_prompts(48)
    assert len(prompts) == 48 and prompts == ex.uncoloured_prompts(48)
    words = {w for c in COLOURS for w in (*TRAIN_WORDS[c], *HELD_OUT_WORDS.get(c, ()))}
    assert not any(f" {w} " in f" {p} " for p in prompts for w in words)
    assert all("  " not in p and p == p.strip() for p in prompts)
