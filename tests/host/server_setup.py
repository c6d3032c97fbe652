"""Shared by the server and browser tests: a scratch ComfyUI base directory with tiny models, and prompt helpers.

Model files are tiny stand-ins under the standard Wan 2.1 names (a tiny Wan diffusion model and a
random full-size Wan VAE). ComfyUI's CLIPLoader only detects a full-size UMT5-XXL (about 6 B
parameters), so the tests swap that one loader for a test-only node that builds the tiny UMT5 of
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
from workflow_api import ui_to_api

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


def write_models(base: Path) -> None:
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


def server_fixture(tmp_path_factory):
    if find_comfyui() is None:
        pytest.skip("HOST TESTS SKIPPED: no ComfyUI found at $COMFYUI_PATH, ../.. or ~/ComfyUI")
    base = tmp_path_factory.mktemp("comfy_base")
    write_models(base)
    with comfyui_server(base) as url:
        yield url, base, http_json(f"{url}/object_info")


def shrink(api: dict, *, timesteps: str = "1") -> dict:
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


def run_prompt(url: str, api: dict, timeout: float = 240.0) -> dict:
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


def load_api(name: str, object_info: dict) -> dict:
    return ui_to_api(json.loads((REPO_ROOT / "workflows" / name).read_text()), object_info)


