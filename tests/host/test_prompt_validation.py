"""The pack's nodes in ComfyUI's own prompt validation (``execution.validate_inputs``), as the server runs it on a
queued prompt: inputs fed by a link are valid, and ComfyUI's range and option checks still apply to the rest."""

from __future__ import annotations

import asyncio

import pytest

#: Upstream nodes of the prompts below, taken as validated: only the node under test is checked.
UPSTREAM = {
    "model": {"class_type": "UNETLoader", "inputs": {}},
    "clip": {"class_type": "CLIPLoader", "inputs": {}},
    "text": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a Rolex | a watch"}},
    "pairs": {"class_type": "VideoUnlearnPairEncoder", "inputs": {}},
    "vector": {"class_type": "VideoUnlearnLoadRefusalVector", "inputs": {}},
}

COLLECT = {"model": ["model", 0], "pairs": ["pairs", 0], "width": 832, "height": 480, "length": 1, "timesteps": "4",
           "seed": 0, "layers": "default", "block_start": 0, "block_end": -1}
CHECK = {"model": ["model", 0], "refusal_vector": ["vector", 0], "strengths": "0, 0.5, 1", "layers": "all in vector",
         "block_start": 0, "block_end": -1, "target": "safe_mean", "sweep": "none", "width": 64, "height": 64,
         "length": 1, "timesteps": "0.1", "seed": 0, "cfg": 6.0}


@pytest.fixture(scope="module")
def registered(pack):
    """The pack's nodes and ComfyUI's primitive string nodes in ComfyUI's node table, for this module only."""
    import nodes
    from comfy_extras import nodes_primitive

    from comfyui_video_unlearning.nodes.check import NODES as CHECK_NODES
    from comfyui_video_unlearning.nodes.definitions import NODES as PACK_NODES

    added = {cls.GET_SCHEMA().node_id: cls for cls in (*PACK_NODES, *CHECK_NODES, nodes_primitive.String,
                                                       nodes_primitive.StringMultiline)}
    saved = {name: nodes.NODE_CLASS_MAPPINGS.get(name) for name in added}
    nodes.NODE_CLASS_MAPPINGS.update(added)
    yield
    for name, cls in saved.items():
        if cls is None:
            nodes.NODE_CLASS_MAPPINGS.pop(name, None)
        else:
            nodes.NODE_CLASS_MAPPINGS[name] = cls


def validate(class_type: str, inputs: dict) -> list[tuple[str, str]]:
    """ComfyUI's validation of one node: its errors as ``(type, details)``, empty when valid."""
    import execution

    prompt = {**UPSTREAM, "node": {"class_type": class_type, "inputs": inputs}}
    validated = {name: (True, [], name) for name in UPSTREAM}
    valid, errors, _ = asyncio.run(execution.validate_inputs("test", prompt, "node", validated))
    assert valid == (not errors)
    return [(error["type"], error["details"]) for error in errors]


def test_inputs_fed_by_a_link_are_valid(registered):
    """A linked input reaches a node's validate_inputs as None (ComfyUI has no value for it yet): the pairs text
    from a primitive or a text file node, timesteps or strengths from a shared primitive."""
    assert validate("VideoUnlearnPairEncoder", {"clip": ["clip", 0], "pairs": ["text", 0],
                                                "neutral_prompts": "a dog\na cat", "concept": "Rolex"}) == []
    assert validate("VideoUnlearnCollectActivations", {**COLLECT, "timesteps": ["text", 0]}) == []
    assert validate("VideoUnlearnCheck", {**CHECK, "strengths": ["text", 0], "timesteps": ["text", 0]}) == []


def test_an_api_prompt_of_before_cfg_is_valid(registered):
    """API prompts saved before 2026-12-01 hold an Unlearning Check without cfg: it was refused as a missing
    required input, though cfg only matters with a negative prompt and execute defaults it to 6."""
    old = {name: value for name, value in CHECK.items() if name != "cfg"}
    assert validate("VideoUnlearnCheck", old) == []


def test_comfyuis_own_range_checks_still_apply(registered):
    """The nodes' validate_inputs name their parameters (no **kwargs, which makes ComfyUI skip its own checks of
    every input), so values outside a widget's range are refused before anything runs. (ComfyUI 0.3.64 does not
    check a V3 node's combo options; the nodes refuse an unknown option when they run, naming the choices.)"""
    assert sorted(validate("VideoUnlearnCollectActivations", {**COLLECT, "width": 0, "seed": -1})) == [
        ("value_smaller_than_min", "seed"), ("value_smaller_than_min", "width")]
    assert sorted(validate("VideoUnlearnCheck", {**CHECK, "cfg": 0.0, "length": 0})) == [
        ("value_smaller_than_min", "cfg"), ("value_smaller_than_min", "length")]
    custom = validate("VideoUnlearnCheck", {**CHECK, "strengths": "0, -1"})
    assert custom and custom[0][0] == "custom_validation_failed" and "a negative strength" in custom[0][1]
    refused = validate("VideoUnlearnSaveRefusalVector", {"refusal_vector": ["vector", 0], "filename_prefix": "../x"})
    assert refused[0][0] == "custom_validation_failed" and "stay inside the folder" in refused[0][1]


PAIRS = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))


@pytest.mark.parametrize("class_type, inputs, start", [
    ("VideoUnlearnPairEncoder", {"pairs": PAIRS + "\na Rolex"}, "Pair Encoder: pairs: line 6: expected exactly one"),
    ("VideoUnlearnPairEncoder", {"pairs": "a Rolex | a watch\na Rolex | a watch\na Rolex on a wrist | a wrist"},
     "Pair Encoder: pairs: line 2: duplicate"),
    ("VideoUnlearnPairEncoder", {"neutral_prompts": "a cat"}, "Pair Encoder: neutral_prompts: one distinct prompt"),
    ("VideoUnlearnCheck", {"strengths": "0, 5"}, "Unlearning Check: strengths: strength 5 is above 4"),
    ("VideoUnlearnCheck", {"timesteps": "1.5"}, "Unlearning Check: timesteps: fractions must be in [0, 1)"),
    ("VideoUnlearnCollectActivations", {"timesteps": "0"}, "Collect Activations: timesteps: "),
])
def test_a_message_names_the_input_it_is_about(registered, class_type, inputs, start):
    """ComfyUI 0.3.64 attaches a validate_inputs message to every input the method takes: Pair Encoder's (pairs and
    neutral_prompts) and Unlearning Check's (strengths and timesteps) must say which of the two is wrong."""
    base = {"VideoUnlearnPairEncoder": {"clip": ["clip", 0], "pairs": PAIRS, "neutral_prompts": "a dog\na cat",
                                        "concept": "Rolex"},
            "VideoUnlearnCheck": CHECK, "VideoUnlearnCollectActivations": COLLECT}[class_type]
    errors = validate(class_type, {**base, **inputs})
    assert errors and all(kind == "custom_validation_failed" for kind, _ in errors)
    assert all(f" - {start}" in details for _, details in errors), errors  # ComfyUI writes "input - message"
