"""Shared by the server and browser tests: a scratch ComfyUI base directory with tiny models, and prompt helpers.

Model files are tiny stand-ins under the official file names: tiny Wan 2.1 / 2.2 and HunyuanVideo diffusion models
(``tiny_models``) and random full-size Wan and HunyuanVideo VAEs (ComfyUI builds only the full-size ones). ComfyUI's
CLIPLoader only detects a full-size UMT5-XXL (about 6 B parameters), so the tests swap that one loader for a test-only
node that builds the tiny UMT5 of ``tiny_models``. HunyuanVideo's DualCLIPLoader is swapped for a stand-in shaped as
its output (the pinned ComfyUI lacks the Llama tokenizer). Every other node runs as shipped.
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


    class TinyHunyuanVideoTextLoader(TinyWanCLIPLoader):
        def load(self):
            return (tiny_models.tiny_hunyuan_video_text(),)


    NODE_CLASS_MAPPINGS = {{"TinyWanCLIPLoader": TinyWanCLIPLoader,
                           "TinyHunyuanVideoTextLoader": TinyHunyuanVideoTextLoader}}
""")


def write_models(base: Path, *, wan22: bool = False, hunyuan_video: bool = False) -> None:
    """The Wan 2.1 files; with ``wan22`` also the Wan 2.2 5B, the two 14B experts and the 2.2 VAE (1.4 GB); with
    ``hunyuan_video`` the HunyuanVideo T2V model and its VAE (0.5 GB)."""
    sys.path.insert(0, str(find_comfyui()))
    from comfy.cli_args import args

    args.cpu = True
    import torch
    from safetensors.torch import save_file

    import tiny_models
    from comfy.ldm.wan.vae import WanVAE

    (base / "models" / "diffusion_models").mkdir(parents=True)
    save_file(tiny_models.tiny_wan_state_dict(), str(base / "models" / "diffusion_models" / "wan2.1_t2v_1.3B_fp16.safetensors"))
    vae = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    (base / "models" / "vae").mkdir(parents=True)
    save_file(_random_vae_weights(vae.state_dict()), str(base / "models" / "vae" / "wan_2.1_vae.safetensors"))
    if wan22:
        for name, build in tiny_models.WAN22_FILES.items():
            save_file(build(), str(base / "models" / "diffusion_models" / name))
        from comfy.ldm.wan.vae2_2 import WanVAE as Wan22VAE

        with torch.device("meta"):  # 705 M parameters: shapes only, the weights come from _random_vae_weights
            vae22 = Wan22VAE(dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                             temperal_downsample=[False, True, True], dropout=0.0)
        save_file(_random_vae_weights(vae22.state_dict(), tiled=True), str(base / "models" / "vae" / "wan2.2_vae.safetensors"))
    if hunyuan_video:
        from comfy.ldm.models.autoencoder import AutoencoderKL

        for name, build in tiny_models.HUNYUAN_VIDEO_FILES.items():
            save_file(build(), str(base / "models" / "diffusion_models" / name))
        # The config ComfyUI's VAE detection gives a 3D KL autoencoder with 16 latent channels (comfy/sd.py)
        config = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                  "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
                  "conv3d": True, "time_compress": 4}
        with torch.device("meta"):  # 246 M parameters: shapes only
            hunyuan_vae = AutoencoderKL(ddconfig=config, embed_dim=16)
        save_file(_random_vae_weights(hunyuan_vae.state_dict()),
                  str(base / "models" / "vae" / "hunyuan_video_vae_bf16.safetensors"))
    loader = base / "custom_nodes" / "tiny_test_loaders"
    loader.mkdir(parents=True)
    (loader / "__init__.py").write_text(TEST_LOADER)


def _random_vae_weights(shapes: dict, *, tiled: bool = False) -> dict:
    """Seeded weights for a full-size Wan or HunyuanVideo VAE. ComfyUI's ops skip weight init, so the module's own tensors are
    uninitialised memory (they decode to NaN); fan-in scaled normals decode latents to varied, finite frames.
    ``tiled`` cycles one block of 2^20 normals (the 2.2 VAE's 705 M draws take most of a minute on a busy CPU)."""
    import math

    import torch

    generator = torch.Generator().manual_seed(0)
    block = torch.randn(1 << 20, generator=generator) if tiled else None
    weights = {}
    for index, (name, tensor) in enumerate(shapes.items()):
        if name.endswith("gamma") or (tensor.ndim == 1 and ".norm" in name and name.endswith("weight")):
            value = torch.ones(tensor.shape)  # RMS norms' gamma (Wan), group norms' weight (HunyuanVideo)
        elif name.endswith("bias") or tensor.ndim < 2:
            value = torch.zeros(tensor.shape)
        elif tiled:
            count = tensor.numel()
            values = block.roll(index * 7919).repeat(count // block.numel() + 1)[:count]
            value = values.reshape(tensor.shape) / math.sqrt(tensor[0].numel())
        else:
            value = torch.randn(tensor.shape, generator=generator) / math.sqrt(tensor[0].numel())
        weights[name] = value.half().contiguous()
    return weights


def server_fixture(tmp_path_factory, *, wan22: bool = False, hunyuan_video: bool = False):
    if find_comfyui() is None:
        pytest.skip("HOST TESTS SKIPPED: no ComfyUI found at $COMFYUI_PATH, ../.. or ~/ComfyUI")
    base = tmp_path_factory.mktemp("comfy_base")
    write_models(base, wan22=wan22, hunyuan_video=hunyuan_video)
    with comfyui_server(base) as url:
        yield url, base, http_json(f"{url}/object_info")


def workflows_server_fixture(tmp_path_factory):
    """A server with every shipped workflow's files: Wan 2.1, Wan 2.2 (5B, both 14B experts, the 2.2 VAE) and
    HunyuanVideo (T2V and its VAE)."""
    yield from server_fixture(tmp_path_factory, wan22=True, hunyuan_video=True)


def shrink(api: dict, *, timesteps: str = "1") -> dict:
    """CPU-sized settings; the graph itself is the shipped one."""
    for node in api.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "CLIPLoader":
            node["class_type"], node["inputs"] = "TinyWanCLIPLoader", {}
        elif kind == "DualCLIPLoader" and inputs["type"] == "hunyuan_video":
            node["class_type"], node["inputs"] = "TinyHunyuanVideoTextLoader", {}
        elif kind == "BasicScheduler":
            inputs.update(steps=2)
        elif kind == "EmptyHunyuanLatentVideo":
            inputs.update(width=64, height=64, length=5)
        elif kind == "KSampler":
            inputs.update(steps=2)
        elif kind == "KSamplerAdvanced":  # the 14B pair: high-noise expert step 0-1, low-noise expert step 1-2
            inputs.update(steps=2, **({"end_at_step": 1} if inputs["add_noise"] == "enable" else {"start_at_step": 1}))
        elif kind == "Wan22ImageToVideoLatent":
            inputs.update(width=32, height=32, length=1)  # the full-size 2.2 VAE decodes this in a few seconds on a CPU
        elif kind == "VideoUnlearnCollectActivations":
            inputs.update(width=64, height=64, length=1, timesteps=timesteps)
        elif kind == "SaveAnimatedWEBP":
            inputs.update(lossless=True)  # exact pixels, so the test can compare the two halves
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




def interrupt_after_progress(url: str, api: dict, node_id: str, *, steps: int = 1, timeout: float = 180.0) -> dict:
    """Queue ``api``, send ``POST /interrupt`` once ``node_id`` reported ``steps`` progress steps, and time the stop.

    Watches the server's websocket like the editor does, so the interrupt lands inside the node's loop
    whatever the machine's speed. Returns ``{"prompt_id", "progress": (value, max), "stop_seconds"}``,
    where ``stop_seconds`` runs from the interrupt request to the server's ``execution_interrupted``.
    """
    import asyncio

    import aiohttp  # a ComfyUI requirement

    async def run() -> dict:
        client_id = f"tests-{time.monotonic_ns()}"
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
                async with session.post(f"{url}/prompt", json={"prompt": api, "client_id": client_id}) as response:
                    queued = await response.json()
                assert not queued.get("node_errors"), queued
                prompt_id, progress, interrupted_at = queued["prompt_id"], None, None
                async with asyncio.timeout(timeout):
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            continue
                        event = json.loads(message.data)
                        data = event.get("data", {})
                        if data.get("prompt_id") not in (None, prompt_id):
                            continue
                        if (event["type"] == "progress" and data.get("node") == node_id and interrupted_at is None
                                and data["value"] >= steps):
                            progress = (data["value"], data["max"])
                            interrupted_at = time.monotonic()
                            async with session.post(f"{url}/interrupt", json={}) as response:
                                response.raise_for_status()
                        elif event["type"] in ("execution_interrupted", "execution_error", "execution_success"):
                            if interrupted_at is None:
                                raise AssertionError(f"prompt ended ({event['type']}) before {node_id} reported progress: {data}")
                            return {"prompt_id": prompt_id, "progress": progress, "event": event["type"],
                                    "stop_seconds": time.monotonic() - interrupted_at}
        raise AssertionError("the websocket closed before the prompt ended")

    return asyncio.run(run())


def wait_for_history(url: str, prompt_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = http_json(f"{url}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            return history[prompt_id]
        time.sleep(0.3)
    raise TimeoutError(f"prompt {prompt_id} has no history after {timeout}s")
