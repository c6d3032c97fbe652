"""A headless ComfyUI (`main.py --cpu`) with the pack: shipped workflows run, nodes are described, interrupts are clean.

Model stand-ins and the one swapped loader are described in ``server_setup``.
"""

from __future__ import annotations

import json
import time

import pytest

from comfy_host import http_json
from server_setup import WORKFLOWS, load_api, run_prompt, server_fixture, shrink
from workflow_api import find_nodes

server = pytest.fixture(scope="module")(server_fixture)


def test_every_node_is_listed_with_tooltips(server):
    _, _, info = server
    ours = {name: spec for name, spec in info.items() if name.startswith("VideoUnlearn")}
    assert set(ours) == {"VideoUnlearnPairEncoder", "VideoUnlearnCollectActivations", "VideoUnlearnRefusalVector",
                         "VideoUnlearnApply", "VideoUnlearnSaveRefusalVector", "VideoUnlearnLoadRefusalVector",
                         "VideoUnlearnExportLoRA"}
    for name, spec in ours.items():
        assert spec["category"] == "unlearning"
        for section in ("required", "optional"):
            for input_name, input_spec in spec["input"].get(section, {}).items():
                assert input_spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_shipped_workflows_are_served_as_templates(server):
    url, _, _ = server
    templates = http_json(f"{url}/workflow_templates")
    assert sorted(templates.get("comfyui-video-unlearning", [])) == sorted(p.stem for p in WORKFLOWS)
    for path in WORKFLOWS:
        served = http_json(f"{url}/api/workflow_templates/comfyui-video-unlearning/{path.name}")
        assert served["nodes"] == json.loads(path.read_text())["nodes"]


def test_compute_workflow_saves_a_refusal_vector(server):
    url, base, info = server
    api = shrink(load_api("compute_refusal_vector_wan21.json", info))
    entry = run_prompt(url, api)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = base / "models" / "refusal_vectors" / "rolex_00001.safetensors"
    assert saved.is_file()
    vector_node = next(k for k, n in api.items() if n["class_type"] == "VideoUnlearnRefusalVector")
    assert entry["outputs"][vector_node]["images"], "the score chart was not returned as a preview"


def test_side_by_side_workflow_runs_on_the_saved_vector(server):
    url, base, info = server
    if not (base / "models" / "refusal_vectors" / "rolex_00001.safetensors").is_file():
        run_prompt(url, shrink(load_api("compute_refusal_vector_wan21.json", info)))
    info = http_json(f"{url}/object_info/VideoUnlearnLoadRefusalVector")
    assert "rolex_00001.safetensors" in info["VideoUnlearnLoadRefusalVector"]["input"]["required"]["name"][1]["options"]
    api = shrink(load_api("unlearned_side_by_side_wan21.json", server[2]))
    entry = run_prompt(url, api)
    assert entry["status"]["status_str"] == "success", entry["status"]
    apply_node = next(k for k, n in api.items() if n["class_type"] == "VideoUnlearnApply")
    badge = entry["outputs"][apply_node]["video_unlearning"][0]
    assert badge["enabled"] is True and badge["concept"] == "Rolex" and badge["layers"] > 0
    outputs = list((base / "output" / "unlearning").glob("side_by_side_*.webp"))
    assert outputs, "no side-by-side video was written"


def test_interrupt_during_collection_ends_cleanly(server):
    url, _, info = server
    api = shrink(load_api("compute_refusal_vector_wan21.json", info), timesteps="60")
    collect = find_nodes(api, "VideoUnlearnCollectActivations")[0]
    collect["inputs"].update(layers="all", length=9, seed=7)  # video-side layers: one forward per timestep
    response = http_json(f"{url}/prompt", {"prompt": api, "client_id": "tests"})
    prompt_id = response["prompt_id"]
    deadline = time.monotonic() + 120
    while http_json(f"{url}/queue")["queue_running"] == [] and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(12.0)  # past the text encoder, well inside the collection loop (360 forwards)
    http_json(f"{url}/interrupt", {})
    while time.monotonic() < deadline:
        history = http_json(f"{url}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
            break
        time.sleep(0.3)
    status = history[prompt_id]["status"]
    assert status["status_str"] == "error" and not status["completed"]
    interrupted = [message[1] for message in status["messages"] if message[0] == "execution_interrupted"]
    assert interrupted and interrupted[0]["node_type"] == "VideoUnlearnCollectActivations", status["messages"]
    # The server is healthy and the model's hooks are gone: the next run succeeds.
    entry = run_prompt(url, shrink(load_api("compute_refusal_vector_wan21.json", info)))
    assert entry["status"]["status_str"] == "success"
