"""A headless ComfyUI (`main.py --cpu`) with the pack: shipped workflows run, nodes are described, interrupts are clean.

Model files are tiny stand-ins under the standard Wan 2.1 names (a tiny Wan diffusion model and a
random full-size Wan VAE). ComfyUI's CLIPLoader only detects a full-size UMT5-XXL (about 6 B
parameters), so the test swaps that one loader for a test-only node that builds the tiny UMT5 of
``tiny_models``; every other node runs as shipped.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from comfy_host import REPO_ROOT, comfyui_server, find_comfyui, http_json
from workflow_api import find_nodes, ui_to_api

HERE = Path(__file__).resolve().parent
WORKFLOWS = sorted((REPO_ROOT / "workflows").glob("*.json"))
TEST_LOADER = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(HERE)!r})
    import tiny_models


    class TinyWanCLIPLoader:
        CATEGORY = "testing"
        RETURN_TYPES = ("CLIP",)
        FUNCTION = "load"

        @classmethod
        def INPUT_TYPES(cls):
            return {{"required": {{}}}}

        def load(self):
            return (tiny_models.tiny_wan_clip(),)


    NODE_CLASS_MAPPINGS = {{"TinyWanCLIPLoader": TinyWanCLIPLoader}}
""")


def _write_models(base: Path) -> None:
    sys.path.insert(0, str(find_comfyui()))
    from comfy.cli_args import args

    args.cpu = True
    import torch
    from safetensors.torch import save_file

    import tiny_models
    from comfy.ldm.wan.vae import WanVAE

    (base / "models" / "diffusion_models").mkdir(parents=True)
    save_file(tiny_models.tiny_wan_state_dict(), str(base / "models" / "diffusion_models" / "wan2.1_t2v_1.3B_fp16.safetensors"))
    torch.manual_seed(0)
    vae = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    (base / "models" / "vae").mkdir(parents=True)
    save_file({k: v.half().contiguous() for k, v in vae.state_dict().items()}, str(base / "models" / "vae" / "wan_2.1_vae.safetensors"))
    loader = base / "custom_nodes" / "tiny_test_loaders"
    loader.mkdir(parents=True)
    (loader / "__init__.py").write_text(TEST_LOADER)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if find_comfyui() is None:
        pytest.skip("HOST TESTS SKIPPED: no ComfyUI found at $COMFYUI_PATH, ../.. or ~/ComfyUI")
    base = tmp_path_factory.mktemp("comfy_base")
    _write_models(base)
    with comfyui_server(base) as url:
        yield url, base, http_json(f"{url}/object_info")


def _shrink(api: dict, *, timesteps: str = "1") -> dict:
    """CPU-sized settings; the graph itself is the shipped one."""
    for node in api.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "CLIPLoader":
            node["class_type"], node["inputs"] = "TinyWanCLIPLoader", {}
        elif kind == "EmptyHunyuanLatentVideo":
            inputs.update(width=64, height=64, length=5)
        elif kind == "KSampler":
            inputs.update(steps=2)
        elif kind == "VideoUnlearnCollectActivations":
            inputs.update(width=64, height=64, length=1, timesteps=timesteps)
        elif kind == "VideoUnlearnPairEncoder":
            inputs.update(neutral_prompts="a dog in a park\na red car")
    return api


def _run(url: str, api: dict, timeout: float = 240.0) -> dict:
    response = http_json(f"{url}/prompt", {"prompt": api, "client_id": "tests"})
    assert not response.get("node_errors"), response
    prompt_id = response["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = http_json(f"{url}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            entry = history[prompt_id]
            if entry["status"].get("status_str") != "error" or entry["status"].get("completed"):
                return entry
        if prompt_id in history and history[prompt_id].get("status", {}).get("status_str") == "error":
            return history[prompt_id]
        time.sleep(0.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")


def _load(name: str, object_info: dict) -> dict:
    return ui_to_api(json.loads((REPO_ROOT / "workflows" / name).read_text()), object_info)


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
    api = _shrink(_load("compute_refusal_vector_wan21.json", info))
    entry = _run(url, api)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = base / "models" / "refusal_vectors" / "rolex_00001.safetensors"
    assert saved.is_file()
    vector_node = next(k for k, n in api.items() if n["class_type"] == "VideoUnlearnRefusalVector")
    assert entry["outputs"][vector_node]["images"], "the score chart was not returned as a preview"


def test_side_by_side_workflow_runs_on_the_saved_vector(server):
    url, base, info = server
    if not (base / "models" / "refusal_vectors" / "rolex_00001.safetensors").is_file():
        _run(url, _shrink(_load("compute_refusal_vector_wan21.json", info)))
    info = http_json(f"{url}/object_info/VideoUnlearnLoadRefusalVector")
    assert "rolex_00001.safetensors" in info["VideoUnlearnLoadRefusalVector"]["input"]["required"]["name"][1]["options"]
    api = _shrink(_load("unlearned_side_by_side_wan21.json", server[2]))
    entry = _run(url, api)
    assert entry["status"]["status_str"] == "success", entry["status"]
    apply_node = next(k for k, n in api.items() if n["class_type"] == "VideoUnlearnApply")
    badge = entry["outputs"][apply_node]["video_unlearning"][0]
    assert badge["enabled"] is True and badge["concept"] == "Rolex" and badge["layers"] > 0
    outputs = list((base / "output" / "unlearning").glob("side_by_side_*.webp"))
    assert outputs, "no side-by-side video was written"


def test_interrupt_during_collection_ends_cleanly(server):
    url, _, info = server
    api = _shrink(_load("compute_refusal_vector_wan21.json", info), timesteps="60")
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
    entry = _run(url, _shrink(_load("compute_refusal_vector_wan21.json", info)))
    assert entry["status"]["status_str"] == "success"
