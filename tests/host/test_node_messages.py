"""What the nodes tell a user when a run or a queued prompt goes wrong: every run's warnings, the input an error
belongs to, and a remedy that fixes the run when followed."""

from __future__ import annotations

import pytest
import torch

PAIRS = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
NEUTRAL = "a dog in a park\na red car\na tree in the wind\na bowl of soup"

pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.fixture(scope="module")
def nodes(pack):
    from comfyui_video_unlearning.nodes import definitions

    return definitions


def test_pair_encoder_reports_its_warnings_on_every_run(nodes, clip, caplog):
    """Through warnings.warn Python showed a warning once per process and line: a second run with another swapped
    pair printed nothing, and a linked pairs text had no other check."""
    runs = [PAIRS + "\na watch on a desk | a Rolex watch on a desk",
            PAIRS.replace("number 0", "number 9") + "\na clock on a wall | a Rolex clock on a wall"]
    for text in runs:
        caplog.clear()
        with caplog.at_level("WARNING"):
            output = nodes.PairEncoder.execute(clip, text, NEUTRAL, "Rolex")
        assert "Pair Encoder: line 6: the safe (right) side" in caplog.text
        shown = output.ui[nodes.PAIR_WARNINGS_KEY][0]
        assert shown["pairs"] == 6 and len(shown["warnings"]) == 1
        assert shown["warnings"][0].startswith("line 6: the safe (right) side holds every word")
    few = "\n".join(PAIRS.splitlines()[:3])
    for concept in ("Rolex", "Rolex watch"):  # the same text again: reported again
        caplog.clear()
        with caplog.at_level("WARNING"):
            output = nodes.PairEncoder.execute(clip, few, NEUTRAL, concept)
        assert "only 3 pairs" in output.ui[nodes.PAIR_WARNINGS_KEY][0]["warnings"][0]
        assert "Pair Encoder: only 3 pairs" in caplog.text
    clean = nodes.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")
    assert clean.ui[nodes.PAIR_WARNINGS_KEY] == [{"pairs": 5, "warnings": []}]  # clears the last run's on the node


VALIDATION = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5))
BENIGN = "a cat on a sofa\na boat on a lake\na child with a kite\na plate of pasta"


@pytest.fixture(scope="module")
def check(pack):
    from comfyui_video_unlearning.nodes import check

    return check


@pytest.fixture(scope="module")
def default_vector(nodes, wan, clip):
    """A vector of Wan's default group (text-side cross_attn.k+v) over both tiny blocks."""
    with torch.inference_mode():
        encoded = nodes.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
        acts = nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
        return nodes.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]


@pytest.fixture(scope="module")
def validation(nodes, clip):
    with torch.inference_mode():
        return nodes.PairEncoder.execute(clip, VALIDATION, BENIGN, "Rolex")[0]


@pytest.mark.parametrize("sweep, blocks, expected", [
    ("layer groups", (0, -1), "sweep 'layer groups' not run: the 4 checked layers form one group (cross_attn.k+v)"),
    ("block halves", (1, 1), "sweep 'block halves' not run: the 2 checked layers lie in one block (block 1)"),
])
def test_a_sweep_with_nothing_to_compare_says_why(check, wan, default_vector, validation, sweep, blocks, expected):
    """One layer group or one block has nothing to compare: the sweep ran nothing and said nothing."""
    output = check.UnlearningCheck.execute(wan, default_vector, "0, 1", "all in vector", *blocks, "safe_mean", sweep,
                                           64, 64, 1, "0.1", 0, validation_pairs=validation)
    table, summary = output.result[2], output.ui[check.UI_KEY][0]
    assert summary["sweep"] == []
    assert expected in table and summary["sweep_skipped"].startswith(expected)
    remedy = "layers = all" if sweep == "layer groups" else "widen block_start..block_end"
    assert remedy in summary["sweep_skipped"]


@pytest.mark.parametrize("blocks, expected, remedy", [
    ((3, 5), "block_start 3 is beyond the last block: lower block_start to 1 or less; block_end 5 is beyond the last "
             "block: set block_end to -1", (1, -1)),
    ((3, -1), "block_start 3 is beyond the last block: lower block_start to 1 or less", (1, -1)),
    ((2, 0), "block_start 2 is beyond the last block: lower block_start to 0 or less", (0, 0)),
    ((0, 2), "block_end 2 is beyond the last block: set block_end to -1 (the last block) or to 1 or less", (0, -1)),
    ((1, 0), "block_start 1 is after block_end 0: swap them (block_start 0, block_end 1)", (0, 1)),
])
def test_a_block_range_error_names_the_bad_bound_and_its_fix(nodes, wan, blocks, expected, remedy):
    """The tiny Wan has blocks 0..1. The message always said 'use block_end = -1 for the last block', also when
    block_start was the bad bound or the range was inverted, where following it did not make the run pass."""
    with pytest.raises(ValueError) as error:
        nodes.CollectActivations.execute(wan, None, 64, 64, 1, "1", 0, "default", *blocks)
    assert str(error.value).startswith("Collect Activations: block range ") and expected in str(error.value)
    assert "block_end = -1 for the last block" not in str(error.value)
    from comfyui_video_unlearning.nodes.adapters import layers_for

    assert layers_for(wan, "default", *remedy)  # the remedy, followed literally, selects layers


def test_no_vector_layer_in_the_blocks_names_the_blocks_to_choose(nodes, wan, clip):
    """Already on 'all in vector', the remedy said to choose it; it now names the vector's blocks."""
    encoded = nodes.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
    acts = nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "1", 0, "default", 0, 0)[0]
    first = nodes.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]
    with pytest.raises(ValueError) as error:
        nodes.ApplyUnlearning.execute(wan, first, 1.0, True, "all in vector", 1, 1, "zero")
    message = str(error.value)
    assert "choose layers 'all in vector'" not in message
    assert "the vector's layers lie in blocks 0..0: set block_start and block_end to include them" in message
    nodes.ApplyUnlearning.execute(wan, first, 1.0, True, "all in vector", 0, -1, "zero")  # followed: it runs
    with pytest.raises(ValueError, match="or choose layers 'all in vector'"):
        nodes.ApplyUnlearning.execute(wan, first, 1.0, True, "ffn.0", 1, 1, "zero")


def test_export_without_biases_names_export_as_the_node_to_change(nodes, wan, clip, tmp_path, monkeypatch):
    """Mochi's text qkv have no bias: Export at target 'safe_mean' told to set target 'zero' in Apply Unlearning and
    Unlearning Check, where changing it leaves Export failing."""
    import folder_paths
    import tiny_models
    from test_adapters import tiny_model
    from test_families_graph import TEXT, family_text

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    model = tiny_model("mochi", wan)
    encoded = nodes.PairEncoder.execute(family_text(tiny_models, clip, *TEXT["mochi"]), PAIRS, NEUTRAL, "Rolex")[0]
    acts = nodes.CollectActivations.execute(model, encoded, 64, 64, 9, "1", 0, "default", 0, -1)[0]
    vector = nodes.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]
    with pytest.raises(ValueError, match="set target to 'zero' in Export Unlearning as LoRA$"):
        nodes.ExportLoRA.execute(model, vector, 1.0, "safe_mean", "unlearning/lora")
    nodes.ExportLoRA.execute(model, vector, 1.0, "zero", "unlearning/lora")  # the remedy, followed
    with pytest.raises(ValueError, match="set target to 'zero' in Apply Unlearning and Unlearning Check$"):
        nodes.ApplyUnlearning.execute(model, vector, 1.0, True, "all in vector", 0, -1, "safe_mean")


def test_a_combined_negative_is_named_unsupported_with_what_to_connect(check, wan, clip, default_vector, validation):
    """A ConditioningCombine negative (what the sampler got) was refused with 'connect the negative prompt that feeds
    your sampler': what was already connected."""
    import nodes as comfy_nodes

    blurry, low = (clip.encode_from_tokens_scheduled(clip.tokenize(text)) for text in ("blurry", "low quality"))
    combined = comfy_nodes.ConditioningCombine().combine(blurry, low)[0]
    with pytest.raises(ValueError, match="a combined negative .2 conditionings.*ConditioningConcat") as error:
        check.UnlearningCheck.execute(wan, default_vector, "0, 1", "all in vector", 0, -1, "safe_mean", "none", 64, 64,
                                      1, "0.1", 0, validation_pairs=validation, negative=combined, cfg=5.0)
    assert "feeds your sampler" not in str(error.value)
    joined = comfy_nodes.ConditioningConcat().concat(blurry, low)[0]  # the remedy, followed: it runs
    check.UnlearningCheck.execute(wan, default_vector, "0, 1", "all in vector", 0, -1, "safe_mean", "none", 64, 64, 1,
                                  "0.1", 0, validation_pairs=validation, negative=joined, cfg=5.0)


def test_timesteps_read_as_the_strength_grid_and_a_bare_0_points_to_0_0(nodes, check):
    """The tooltips said "(0 = pure noise)" while "0" was read as a count and refused ("between 1 and 100"), and
    "5e-1" or "0.1; 0.5" were refused while the strength grid beside them takes both. Fractions now parse as the grid
    does, "0" is told to be written 0.0, and the strengths tooltip states the maximum, 4."""
    from comfyui_video_unlearning.nodes.collect import parse_timesteps

    assert parse_timesteps("5e-1") == [0.5] and parse_timesteps("0.1; 0.5") == [0.1, 0.5]
    assert parse_timesteps("0.0") == [0.0] and parse_timesteps("4") == 4 and parse_timesteps(" 12 ") == 12
    # a count in another script's decimal digits, as the strength grid's float() reads them
    assert parse_timesteps("\uff14") == 4 and parse_timesteps("\u0663") == 3
    # a count too long for int() (4300 digits) got its message naming no input
    assert "timesteps:" in nodes.CollectActivations.validate_inputs(timesteps="1" * 4301)
    message = nodes.CollectActivations.validate_inputs(timesteps="0")
    assert "between 1 and 100, got 0; for the fraction 0 (pure noise) write 0.0" in message
    # '²' and '4²' pass str.isdigit(): int() raised "invalid literal for int() with base 10" instead of this message
    for text, expected in (("0.1, x", "'x' is not a number"), ("nan", "in [0, 1)"), ("1e0", "in [0, 1)"),
                           ("0.5, 1", "in [0, 1)"), ("²", "'²' is not a number"), ("4²", "'4²' is not a number")):
        assert expected in nodes.CollectActivations.validate_inputs(timesteps=text), text
    tips = {i.id: i.tooltip for i in check.UnlearningCheck.GET_SCHEMA().inputs}
    collect_tip = {i.id: i.tooltip for i in nodes.CollectActivations.GET_SCHEMA().inputs}["timesteps"]
    assert "0 to 4" in tips["strengths"] and "0.0 = pure noise" in tips["timesteps"]
    assert "0.0 = pure noise" in collect_tip
    assert "finite number" in check.UnlearningCheck.validate_inputs(strengths="nan")


#: Refusals while Apply Unlearning and Unlearning Check choose layers: (vector's change, layers, block_start,
#: block_end, how the message goes on after the node's name). The first lie in the adapters, the last in patching.
LAYER_CHOICE_REFUSALS = [
    (None, "all in vector", 5, -1, "block range 5..-1 does not fit this model's blocks 0..1: block_start 5 is beyond"),
    (None, "txt_mlp.0", 0, -1, "layer group 'txt_mlp.0' does not exist for wan; choose one of"),
    ("first block", "all in vector", 1, 1, "no layer of the refusal vector (['blocks.0.cross_attn.k'"),
    ("other family", "all in vector", 0, -1, "this refusal vector was measured on a 'hunyuan_video' model (Rolex)"),
]


def _changed(vector, change: str | None):
    import dataclasses

    if change == "first block":
        return vector.select([layer for layer in vector.layers if layer.startswith("blocks.0.")])
    return dataclasses.replace(vector, model_family="hunyuan_video") if change == "other family" else vector


@pytest.mark.parametrize("node", ["Apply Unlearning", "Unlearning Check"])
def test_a_layer_choice_refusal_starts_with_the_node_that_refuses(nodes, check, wan, default_vector, validation, node):
    """Apply Unlearning and Unlearning Check choose layers alike (``patching.select_layers``), from a vector and the
    same layers and block inputs. Only the refusal of an old 'all' vector named the node; the others (a block range
    past the model, a group it lacks, no vector layer in the blocks, another family's vector) did not, as the nodes'
    other refusals do. Each now starts with the node's name, the rest of the message as it was."""
    for change, layers, block_start, block_end, message in LAYER_CHOICE_REFUSALS:
        vector = _changed(default_vector, change)
        with pytest.raises(ValueError) as error:
            if node == "Apply Unlearning":
                nodes.ApplyUnlearning.execute(wan, vector, 1.0, True, layers, block_start, block_end, "zero")
            else:
                check.UnlearningCheck.execute(wan, vector, "0, 1", layers, block_start, block_end, "safe_mean", "none",
                                              64, 64, 1, "0.1", 0, validation_pairs=validation)
        assert str(error.value).startswith(f"{node}: {message}"), (change, layers, str(error.value))


def test_a_layer_choice_refusal_of_export_starts_with_its_name(nodes, wan, tiny, default_vector, tmp_path,
                                                               monkeypatch):
    """Export Unlearning as LoRA edits every layer of the vector (no layers or block inputs), so what it refuses while
    choosing them is a vector of another model: another family, or the same family's other weights."""
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    for model, vector, message in (
            (wan, _changed(default_vector, "other family"),
             "this refusal vector was measured on a 'hunyuan_video' model (Rolex), but the MODEL is 'wan'"),
            (tiny.load_tiny_wan(seed=1), default_vector, "this refusal vector (Rolex) was measured on other weights")):
        with pytest.raises(ValueError) as error:
            nodes.ExportLoRA.execute(model, vector, 1.0, "zero", "unlearning/refused")
        assert str(error.value).startswith(f"Export Unlearning as LoRA: {message}"), str(error.value)
    assert not list(tmp_path.rglob("*.safetensors"))  # refused before a file was claimed, or the claim undone
