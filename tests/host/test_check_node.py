"""The Unlearning Check node on a real ComfyUI, in process, with the tiny Wan 2.1 of the host fixtures."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch

PAIRS = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
VALIDATION = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5))
NEUTRAL = "a dog in a park\na red car\na tree in the wind\na bowl of soup"
BENIGN = "a cat on a sofa\na boat on a lake\na bird in the sky\na train at a station\nsnow in a forest"
GRID = "0, 0.5, 1, 2"


pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.fixture(scope="module")
def defs(pack):
    from comfyui_video_unlearning.nodes import check, definitions

    return definitions, check


@pytest.fixture(scope="module")
def basis(defs, wan, clip):
    definitions, _ = defs
    with torch.inference_mode():
        encoded = definitions.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
        acts = definitions.CollectActivations.execute(wan, encoded, 64, 64, 1, "2", 0, "all", 0, -1)[0]
        return definitions.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]


@pytest.fixture(scope="module")
def validation(defs, clip):
    definitions, _ = defs
    with torch.inference_mode():
        return definitions.PairEncoder.execute(clip, VALIDATION, BENIGN, "Rolex")[0]


def run(check, wan, basis, validation, grid=GRID, layers="default", sweep="none", target="safe_mean"):
    return check.UnlearningCheck.execute(wan, basis, grid, layers, 0, -1, target, sweep, 64, 64, 1, "0.1, 0.4", 0,
                                         validation_pairs=validation)


def test_registered_with_the_pack(pack, monkeypatch):
    import sys
    import types

    # The routes need ComfyUI's running server (the headless-server tests cover them): stand in a no-op here.
    routes = types.ModuleType("comfyui_video_unlearning.nodes.routes")
    routes.register_routes = lambda: None
    monkeypatch.setitem(sys.modules, "comfyui_video_unlearning.nodes.routes", routes)
    monkeypatch.setattr(pack.nodes, "routes", routes, raising=False)
    nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    ids = [node.define_schema().node_id for node in nodes]
    assert "VideoUnlearnCheck" in ids and ids.count("VideoUnlearnCheck") == 1
    schema = next(n for n in nodes if n.define_schema().node_id == "VideoUnlearnCheck").define_schema()
    assert all(getattr(i, "tooltip", None) for i in schema.inputs), "every input has a tooltip"


def test_check_outputs_strength_chart_and_table(defs, wan, basis, validation):
    _, check = defs
    out = run(check, wan, basis, validation)
    strength, chart, table = out.args if hasattr(out, "args") else out
    assert strength in (0.0, 0.5, 1.0, 2.0) and isinstance(strength, float)
    assert chart.shape[0] == 1 and chart.shape[-1] == 3 and 0.0 <= float(chart.min()) <= float(chart.max()) <= 1.0
    assert "recommended strength" in table and "removed" in table
    shown = out.ui if isinstance(out.ui, dict) else out.ui.as_dict()
    assert shown["images"], "the chart is shown on the node"
    summary = shown["video_unlearning_check"][0]  # the editor shows these as text under the widgets
    assert summary["strength"] == strength and summary["table"] == table and summary["reason"]
    assert 0.0 <= summary["collateral"] and summary["sweep"] == []


def test_strength_zero_is_the_reference_and_removal_grows(defs, wan, basis, validation):
    _, check = defs
    main, swept = check.run_unlearning_check(wan, basis, validation, GRID, group="default", block_start=0, block_end=-1,
                                             target="safe_mean", width=64, height=64, length=1, timesteps="0.1, 0.4",
                                             seed=0)
    assert swept == []
    assert main.strengths == (0.0, 0.5, 1.0, 2.0)
    assert main.efficacy[0] == 0.0 and main.collateral_prediction[0] == 0.0
    assert main.efficacy_layers[0] == 0.0 and main.collateral_layers[0] == 0.0
    assert main.efficacy_layers[2] > main.efficacy_layers[1] > 0  # closed form: affine in the strength
    assert main.collateral_prediction[3] > main.collateral_prediction[1] > 0
    assert main.efficacy[2] > main.efficacy[1] > 0
    # Deterministic: the same inputs give the same figures.
    again, _ = check.run_unlearning_check(wan, basis, validation, GRID, group="default", block_start=0, block_end=-1,
                                          target="safe_mean", width=64, height=64, length=1, timesteps="0.1, 0.4",
                                          seed=0)
    assert again.efficacy == main.efficacy and again.collateral_prediction == main.collateral_prediction


@pytest.fixture(scope="module")
def negative(clip):
    import nodes as comfy_nodes

    with torch.inference_mode():
        return comfy_nodes.CLIPTextEncode().encode(clip, "blurry, low quality, static")[0]


def test_the_samplers_negative_prompt_gives_guided_collateral(defs, wan, basis, validation, negative):
    """With the negative prompt and cfg, collateral is also read on uncond + cfg (cond - uncond), and the budget,
    chart and table read that; removal and the conditional collateral are the plain check's; at cfg 1 the guided
    figure is the conditional one."""
    _, check = defs
    common = dict(group="default", block_start=0, block_end=-1, target="safe_mean", width=64, height=64, length=1,
                  timesteps="0.1, 0.4", seed=0)
    plain, _ = check.run_unlearning_check(wan, basis, validation, GRID, **common)
    guided, _ = check.run_unlearning_check(wan, basis, validation, GRID, negative=negative, cfg=6.0, **common)
    assert guided.efficacy == pytest.approx(plain.efficacy, abs=1e-6)
    assert guided.collateral_prediction == pytest.approx(plain.collateral_prediction, rel=1e-5, abs=1e-9)
    assert guided.guidance == 6.0 and guided.collateral == guided.collateral_guided
    assert guided.collateral_guided[0] == 0.0 and guided.collateral_guided[3] > guided.collateral_guided[1] > 0
    assert guided.collateral_guided != pytest.approx(guided.collateral_prediction, rel=1e-3)
    at_one, _ = check.run_unlearning_check(wan, basis, validation, GRID, negative=negative, cfg=1.0, **common)
    assert at_one.collateral_guided == pytest.approx(at_one.collateral_prediction, rel=1e-6, abs=1e-12)
    out = check.UnlearningCheck.execute(wan, basis, GRID, "default", 0, -1, "safe_mean", "none", 64, 64, 1,
                                        "0.1, 0.4", 0, validation_pairs=validation, negative=negative, cfg=6.0)
    table = out.args[2]
    summary = out.ui["video_unlearning_check"][0]
    assert "guided" in table and "at cfg 6" in table and summary["guidance"] == 6.0
    index = guided.strengths.index(summary["strength"])
    assert summary["collateral"] == pytest.approx(guided.collateral_guided[index])
    plain_table = run(check, wan, basis, validation).args[2]
    assert "connect the sampler's negative prompt" in plain_table


def test_a_negative_naming_the_concept_is_read_on_the_conditional_collateral(defs, wan, clip, basis, validation,
                                                                            negative, monkeypatch):
    """A negative prompt naming the concept moves under the edit like the concept's prompts: guided collateral would
    count that on every benign prompt, so the budget, chart, table and UI read the conditional collateral and warn;
    the quality-words negative keeps guided collateral. The random tiny Wan has no concept to tell: its pairs' unsafe
    sides move 0.002 more than their safe sides, below the spread of the benign prompts' moves (0.013), and scaled by
    that a negative naming no concept read 17.7 and one naming it -42; there the check says it cannot tell."""
    import nodes as comfy_nodes
    from comfyui_video_unlearning.core import check as core_check

    _, check = defs
    with torch.inference_mode():
        concept = comfy_nodes.CLIPTextEncode().encode(clip, "a shiny Rolex timepiece in box 0")[0]
    common = dict(group="default", block_start=0, block_end=-1, target="safe_mean", width=64, height=64, length=1,
                  timesteps="0.1, 0.4", seed=0)
    for prompt in (negative, concept):
        result, _ = check.run_unlearning_check(wan, basis, validation, GRID, negative=prompt, cfg=6.0, **common)
        assert result.negative_concept_share is None and result.negative_share_read
        assert result.collateral_read == "guided" and "cannot tell whether it carries the concept" in result.table()
        # the reason on this model is the benign spread, not the pairs (their unsafe sides do move clearly more)
        assert "by less than the benign prompts' moves differ among themselves" in result.table()
    # The node's plumbing, with the share a model with the concept gives (the organism: 0.64-1.68 for concept
    # negatives, -0.09-0.30 for empty and quality-word ones)
    monkeypatch.setattr(core_check, "negative_concept_share", lambda baseline, predictions: 1.1)
    out = check.UnlearningCheck.execute(wan, basis, GRID, "default", 0, -1, "safe_mean", "layer groups", 64, 64, 1,
                                        "0.1, 0.4", 0, validation_pairs=validation, negative=concept, cfg=6.0)
    summary, table = out.ui["video_unlearning_check"][0], out.args[2]
    assert summary["negative_concept_share"] >= 0.5 and summary["collateral_read"] == "conditional"
    assert summary["negative_warning"].startswith("WARNING: the negative prompt names the concept")
    assert "shown only" in table and "names the concept" in table and "conditional collateral" in summary["reason"]
    assert "(0 = like a safe prompt, 1 = like the concept's" in table
    main, _ = check.run_unlearning_check(wan, basis, validation, GRID, negative=concept, cfg=6.0, **common)
    index = main.strengths.index(summary["strength"])
    assert main.collateral == main.collateral_prediction
    assert summary["collateral"] == pytest.approx(main.collateral_prediction[index])


def test_a_sweep_reads_every_group_in_the_main_checks_unit_of_collateral(defs, wan, basis, validation, negative,
                                                                         monkeypatch):
    """Each group of a sweep reads the negative as the whole edit did: read per group, a group whose own share crossed
    0.5 was drawn in conditional collateral (5x the guided figures) on an axis and a table header saying guided."""
    from comfyui_video_unlearning.core import check as core_check

    _, check = defs
    shares = iter([0.1, 0.9, 0.9, 0.9])  # the whole edit first, then any group that would read its own
    monkeypatch.setattr(core_check, "negative_concept_share", lambda baseline, predictions: next(shares))
    main, swept = check.run_unlearning_check(wan, basis, validation, "0, 0.5, 1", group="all in vector",
                                             block_start=0, block_end=-1, target="zero", width=64, height=64, length=1,
                                             timesteps="0.1", seed=0, sweep="block halves", negative=negative, cfg=6.0)
    assert swept and main.collateral_read == "guided"
    for result in swept:
        assert result.negative_concept_share == 0.1 and result.collateral_read == "guided"
        assert result.collateral == result.collateral_guided


def test_a_bad_negative_or_cfg_names_the_fix(defs, wan, basis, validation, negative):
    _, check = defs
    two = [negative[0], negative[0]]
    with pytest.raises(ValueError, match="one prompt.s CONDITIONING.*a combined negative .2 conditionings"):
        check.UnlearningCheck.execute(wan, basis, GRID, "default", 0, -1, "safe_mean", "none", 64, 64, 1, "0.1", 0,
                                      validation_pairs=validation, negative=two, cfg=6.0)
    with pytest.raises(ValueError, match="cfg must be your sampler's cfg"):
        check.UnlearningCheck.execute(wan, basis, GRID, "default", 0, -1, "safe_mean", "none", 64, 64, 1, "0.1", 0,
                                      validation_pairs=validation, negative=negative, cfg=0.0)


@pytest.mark.parametrize("lora", [False, True])
def test_hooks_predict_what_apply_unlearning_patches_in(defs, wan, basis, validation, tiny, lora):
    """The check's edit (forward hooks) and Apply Unlearning's (LoRA + bias patches) give the same prediction; also
    on a MODEL with a LoRA of its own on the edited layers, where both take the edit from the weights it uses."""
    definitions, check = defs
    from comfyui_video_unlearning.core.check import EditHooks
    from comfyui_video_unlearning.nodes.collect import sigmas_for

    model = tiny.with_text_lora(wan) if lora else wan
    layers = check.select_layers(model, basis, "default", 0, -1)
    latent = torch.zeros(1, 16, 1, 8, 8)
    rows = [validation.unsafe[0], validation.safe[0], validation.neutral[0]]
    patched = definitions.ApplyUnlearning.execute(model, basis, 1.5, True, "default", 0, -1, "safe_mean")[0]
    sigmas = sigmas_for(model, [0.1])
    expected = check.comfy_forward(patched, latent, sigmas, 0, [])(rows, None)
    diffusion = model.model.diffusion_model
    forward = check.comfy_forward(model, latent, sigmas, 0, [])
    base = forward(rows, None)
    weights = {layer: check.layer_weight(model, layer) for layer in layers}
    with EditHooks(diffusion, basis, layers, weights=weights, target="safe_mean") as hooks:
        hooks.strength = 1.5
        hooked = forward(rows, None)
    assert not torch.allclose(base, expected, atol=1e-4)
    torch.testing.assert_close(hooked, expected, atol=2e-4, rtol=1e-3)
    assert all(not module._forward_hooks for module in diffusion.modules()), "hooks are removed"


def test_layer_group_sweep(defs, wan, basis, validation):
    _, check = defs
    main, swept = check.run_unlearning_check(wan, basis, validation, GRID, group="all in vector", block_start=0,
                                             block_end=-1, target="zero", width=64, height=64, length=1,
                                             timesteps="0.1, 0.4", seed=0, sweep="layer groups")
    assert [r.label for r in swept] == ["cross_attn.k+v", "cross_attn.o", "ffn.0"]
    assert sum(len(r.layers) for r in swept) == len(main.layers)
    table = check.table_text(main, swept)
    assert "cross_attn.o" in table and "ffn.0" in table
    halves = check.sweep_options(wan, basis, list(main.layers), "block halves")
    assert [name for name, _ in halves] == ["blocks 0-0", "blocks 1-1"]


def test_bad_inputs_get_errors_that_name_the_fix(defs, wan, basis, validation, clip):
    definitions, check = defs
    node = check.UnlearningCheck
    assert "empty" in node.validate_inputs(strengths=" , ")
    assert "negative" in node.validate_inputs(strengths="0, -0.5, 1")
    assert "not a number" in node.validate_inputs(strengths="0, one")
    assert "only 0" in node.validate_inputs(strengths="0")
    assert node.validate_inputs(strengths=GRID, timesteps="0.1, 0.4") is True
    # the recommended strength feeds Apply Unlearning's, which takes 0..4 (a linked grid is checked when it runs)
    assert "strength 50 is above 4" in node.validate_inputs(strengths="0, 1, 50")
    assert node.validate_inputs(strengths="0, 4") is True
    with pytest.raises(ValueError, match="Unlearning Check: strengths: strength 6 is above 4, the most Apply"):
        node.execute(wan, basis, "0, 6", "all in vector", 0, -1, "zero", "none", 64, 64, 1, "0.1", 0,
                     validation_pairs=validation)
    with pytest.raises(ValueError, match="no validation pairs.*second Pair Encoder"):
        run(check, wan, basis, None)
    overlapping = definitions.PairEncoder.execute(clip, PAIRS.splitlines()[0] + "\n" + VALIDATION, BENIGN, "Rolex")[0]
    with pytest.raises(ValueError, match="1 of the 6 validation pairs are among the pairs the refusal vector"):
        run(check, wan, basis, overlapping)
    with pytest.raises(ValueError, match="one distinct prompt has no variation"):  # refused where it is typed
        definitions.PairEncoder.execute(clip, VALIDATION, "a cat", "Rolex")
    lonely = definitions.PairEncoder.execute(clip, VALIDATION, "", "Rolex")[0]
    with pytest.raises(ValueError, match="0 neutral prompts.*at least 2 are needed"):
        run(check, wan, basis, lonely)
    with pytest.raises(ValueError, match="negative strength"):
        run(check, wan, basis, validation, grid="1, -1")
    with pytest.raises(ValueError, match="strengths: the strength grid is empty"):
        run(check, wan, basis, validation, grid=" ,, ")
    # Overlap is found whatever the case and spacing of the repeated pair.
    first = PAIRS.splitlines()[0]
    shouted = definitions.PairEncoder.execute(clip, "  ".join(first.upper().split(" ")) + "\n" + VALIDATION, BENIGN, "Rolex")[0]
    with pytest.raises(ValueError, match="1 of the 6 validation pairs are among the pairs the refusal vector"):
        run(check, wan, basis, shouted)


def test_cancel_stops_the_check_and_removes_the_hooks(defs, wan, basis, validation, monkeypatch):
    import comfy.model_management

    _, check = defs
    calls = {"n": 0}
    original = comfy.model_management.throw_exception_if_processing_interrupted

    def interrupt_on_third():
        calls["n"] += 1
        if calls["n"] == 3:
            raise comfy.model_management.InterruptProcessingException()
        return original()

    monkeypatch.setattr(comfy.model_management, "throw_exception_if_processing_interrupted", interrupt_on_third)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run(check, wan, basis, validation)
    diffusion = wan.model.diffusion_model
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in diffusion.modules())
    monkeypatch.undo()
    strength = run(check, wan, basis, validation).args[0]  # the next run succeeds
    assert isinstance(strength, float)


def test_replayed_model_calls_equal_comfyui_stack(defs, wan, basis, validation):
    """A row set's later forwards call apply_model with the arguments ComfyUI's batching built for its first one
    (no cond_cat copy); the predictions equal the full path's bit for bit, edit hooks on or off."""
    _, check = defs
    from comfyui_video_unlearning.core.check import EditHooks
    from comfyui_video_unlearning.nodes.collect import sigmas_for

    layers = check.select_layers(wan, basis, "default", 0, -1)
    latent = torch.zeros(1, 16, 1, 8, 8)
    rows = [validation.unsafe[0], validation.safe[0], validation.neutral[0]]
    sigmas = sigmas_for(wan, [0.1, 0.4])
    diffusion = wan.model.diffusion_model
    forward = check.comfy_forward(wan, latent, sigmas, 0, [])
    first = forward(rows, None)
    assert forward.replay.enabled and forward.replay.replayed == 0
    again = forward(rows, None)
    assert forward.replay.replayed == len(sigmas) and torch.equal(first, again)
    with EditHooks(diffusion, basis, layers, target="safe_mean") as hooks:
        hooks.strength = 1.5
        replayed = forward(rows, None)
        fresh = check.comfy_forward(wan, latent, sigmas, 0, [])(rows, None)  # its first call: the full path
    assert not torch.equal(replayed, first)
    assert torch.equal(replayed, fresh)
    # A model with its own model_function_wrapper keeps the full path (the wrapper would have to be chained).
    wrapped = wan.clone()
    wrapped.set_model_unet_function_wrapper(lambda apply_model, args: apply_model(args["input"], args["timestep"],
                                                                                  **args["c"]))
    own = check.comfy_forward(wrapped, latent, sigmas, 0, [])
    assert not own.replay.enabled
    assert torch.equal(own(rows, None), first) and torch.equal(own(rows, None), first)


def test_a_latent_below_one_latent_pixel_is_refused(defs, wan, tiny):
    """LTX-Video's VAE compresses 32x: at 16x16 its latent is empty, and every figure read 0 with no error."""
    from test_adapters import tiny_model

    from comfyui_video_unlearning.nodes.collect import empty_latent

    ltxv = tiny_model("ltxv", wan)
    with pytest.raises(ValueError, match="16x16 is less than one latent pixel for this ltxv model.*at least 32"):
        empty_latent(ltxv, 16, 16, 9)
    assert empty_latent(ltxv, 32, 32, 9).shape[-2:] == (1, 1)


def test_a_pair_difference_at_the_rounding_floor_is_flagged(defs):
    """When the pairs change the prediction by less than a few roundings of the compute dtype, the table says the
    removal figures may be rounding noise; in float32 the same difference is far above it."""
    _, check = defs
    from comfyui_video_unlearning.core.check import Baseline

    predictions = torch.ones(6, 100, dtype=torch.float64)
    predictions[0, 0] += 1e-4  # pair 0's sides differ by 1e-4 / |both sides| = 7.1e-6 of the prediction
    baseline = Baseline(pairs=1, benign=4, predictions=predictions, inputs={}, forwards=1)
    note = check.rounding_note(baseline, torch.bfloat16)
    assert "by 7.1e-06 of its size, within 4 roundings of the model's bfloat16 compute (7.8e-03)" in note
    assert check.rounding_note(baseline, torch.float32) is None



def test_the_safe_prompts_movement_toward_the_concept_is_shown(defs, wan, basis, validation):
    """The figure that tells removing the concept from adding it (a vector from ``safe | unsafe`` pairs: core's
    test) reaches the table and the editor's summary; the tiny Wan's random weights give it no meaning to assert."""
    _, check = defs
    for target in ("safe_mean", "zero"):
        main, _ = check.run_unlearning_check(wan, basis, validation, GRID, group="default", block_start=0,
                                             block_end=-1, target=target, sweep="none", width=64, height=64,
                                             length=1, timesteps="0.1, 0.4", seed=0)
        out = run(check, wan, basis, validation, target=target)
        summary = (out.ui if isinstance(out.ui, dict) else out.ui.as_dict())["video_unlearning_check"][0]
        index = main.strengths.index(main.recommended)
        assert summary["toward_concept"] == main.toward_concept[index] and len(main.toward_concept) == 4
        assert "safe->concept" in summary["table"] and summary["warning"] == (main.toward_concept_warning() or None)
        assert (summary["warning"] is not None) == any(t > 0.25 for t in main.toward_concept)


def test_a_model_carrying_another_vectors_edit_is_told_to_combine(defs, wan, clip, basis, validation):
    """Unlearning Check refuses a MODEL that carries Apply Unlearning's edit. Where the edit is another vector's (two
    concepts, checked one after the other), the refusal said only to connect the model from before Apply, and the
    user had no way to check both: it now says to combine the vectors and check the combined one there."""
    definitions, check = defs
    blood = "\n".join(f"a bloody knife number {i} on a table | a knife number {i} on a table" for i in range(5))
    other = definitions.RefusalVectorNode.execute(definitions.CollectActivations.execute(
        wan, definitions.PairEncoder.execute(clip, blood, NEUTRAL, "blood")[0], 64, 64, 1, "1", 0, "default", 0,
        -1)[0], "cpca", 1, 1.0)[0]
    apply = definitions.ApplyUnlearning.execute
    with pytest.raises(ValueError, match="already carries Apply Unlearning's edit.*from before Apply Unlearning.*"
                                         "another refusal vector's edit \\(edits of 'blood'\\).*Combine Refusal "
                                         "Vectors.*check the combined vector on the model from before Apply"):
        run(check, apply(wan, other, 1.0, True, "all in vector", 0, -1, "safe_mean")[0], basis, validation)
    with pytest.raises(ValueError, match="already carries Apply Unlearning's edit") as same:
        run(check, apply(wan, basis, 1.0, True, "all in vector", 0, -1, "safe_mean")[0], basis, validation)
    assert "Combine" not in str(same.value)


def test_a_second_check_reads_what_names_to_keep_lose(defs, wan, clip, basis, validation):
    """The recipe of docs/nodes.md ("What an edit takes from names you must keep"): a second Unlearning Check on the
    same model and vector, whose validation pairs name what must be kept, runs as the first does and reads their
    removed share, which the check of the vector's own concept cannot show. On the random tiny Wan, at strength 1, the
    Omega pairs lose 27 % of their difference where the Rolex pairs lose 60 %: part of what one word's pairs differ
    by is what any added word's pairs differ by."""
    definitions, check = defs
    with torch.inference_mode():
        kept = definitions.PairEncoder.execute(clip, VALIDATION.replace("Rolex", "Omega"), BENIGN, "Omega")[0]
    out = run(check, wan, basis, kept)
    assert "removed" in out.args[2] and out.ui["images"]
    common = dict(group="default", block_start=0, block_end=-1, target="safe_mean", width=64, height=64, length=1,
                  timesteps="0.1, 0.4", seed=0)
    rolex, _ = check.run_unlearning_check(wan, basis, validation, GRID, **common)
    omega, _ = check.run_unlearning_check(wan, basis, kept, GRID, **common)
    at_one = rolex.strengths.index(1.0)
    assert 0.0 < omega.efficacy[at_one] < 0.7 * rolex.efficacy[at_one]
    assert 0.0 < omega.efficacy_layers[at_one] < 0.7 * rolex.efficacy_layers[at_one]
    # the same benign prompts and model: the collateral is the same, only the pairs' figures differ
    assert omega.collateral_prediction == pytest.approx(rolex.collateral_prediction, rel=1e-6, abs=1e-12)


def test_each_validation_pair_s_removal_reaches_the_table_the_editor_and_the_chart(defs, wan, basis, validation):
    """Pooled removal weighs each pair by its difference, so one wording the edit misses hides in it: the table, the
    editor's summary and the chart (a dashed line) show each pair's share, named by its unsafe side."""
    from comfyui_video_unlearning.nodes import check_chart

    _, check = defs
    main, _ = check.run_unlearning_check(wan, basis, validation, GRID, group="default", block_start=0, block_end=-1,
                                         target="safe_mean", sweep="none", width=64, height=64, length=1,
                                         timesteps="0.1, 0.4", seed=0)
    assert main.pair_names == tuple(line.split(" | ")[0] for line in VALIDATION.splitlines())
    assert len(main.removed_by_pair) == 5 and all(len(shares) == 4 for shares in main.removed_by_pair)
    out = run(check, wan, basis, validation)
    summary = (out.ui if isinstance(out.ui, dict) else out.ui.as_dict())["video_unlearning_check"][0]
    at = main.script_strength
    assert summary["removed_by_pair"] == [{"pair": i + 1, "removed": share}
                                          for i, share in enumerate(main.removed_by_pair_at(at))]
    assert f"\nremoved by pair at {at:.2f}: " in summary["table"] and "(least: pair " in summary["table"]
    assert summary["pair_warning"] == (main.pair_warning() or None)
    assert check_chart.least_removed_pair(main) == [min(shares) for shares in zip(*main.removed_by_pair)]
    with_line = check_chart.check_chart(main)
    without = check_chart.check_chart(dataclasses.replace(main, removed_by_pair=main.removed_by_pair[:1]))
    assert not torch.equal(with_line, without)  # the least-removed pair's line, drawn only for 2 or more pairs


def test_a_pair_whose_difference_grows_does_not_squash_the_chart(pack):
    """The least-removed pair's line stays within the pooled curves' axis: a pair read at -500 % is drawn at its
    floor, as one at 0 % is."""
    from comfyui_video_unlearning.core.check import CheckResult
    from comfyui_video_unlearning.nodes import check_chart

    def result(least):
        return CheckResult(strengths=(0.0, 1.0), survival_layers=(1.0, 0.05), survival_prediction=(1.0, 0.05),
                           collateral_layers=(0.0, 0.2), collateral_prediction=(0.0, 0.2), recommended=1.0,
                           reason="", layers=("layer",), removed_by_pair=((0.0, 0.99), (0.0, least)))

    assert torch.equal(check_chart.check_chart(result(-5.0)), check_chart.check_chart(result(0.0)))
    assert not torch.equal(check_chart.check_chart(result(0.5)), check_chart.check_chart(result(0.0)))
