"""Host-test setup: a real ComfyUI on sys.path (CPU), the pack imported as ComfyUI imports it, tiny models."""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comfy_host import REPO_ROOT, find_comfyui  # noqa: E402

PACK_MODULE = "comfyui_video_unlearning"
COMFYUI = find_comfyui()


@pytest.fixture
def inference_mode():
    """ComfyUI runs nodes under ``torch.inference_mode()``; so do the host tests that call nodes in process
    (``pytestmark = pytest.mark.usefixtures("inference_mode")``)."""
    import torch

    with torch.inference_mode():
        yield


@pytest.fixture(autouse=True)
def restored_model_folders():
    """ComfyUI's model folders as they were before each test: tests point them at their own tmp_path, and the pack
    registers ``refusal_vectors`` under ``models_dir`` when it first saves. pytest deletes a passed test's tmp_path
    (``tmp_path_retention_policy``), so a folder or a cached listing left pointing there breaks the next test
    that lists it."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None:
        yield
        return
    models_dir = folder_paths.models_dir
    folders = {name: (list(paths), copy.copy(extensions))
               for name, (paths, extensions) in folder_paths.folder_names_and_paths.items()}
    yield
    folder_paths.models_dir = models_dir
    folder_paths.folder_names_and_paths.clear()
    folder_paths.folder_names_and_paths.update(folders)
    folder_paths.filename_list_cache.clear()


def pytest_collection_modifyitems(config, items):
    if COMFYUI is None:
        marker = pytest.mark.skip(reason="HOST TESTS SKIPPED: no ComfyUI found at $COMFYUI_PATH, ../.., ~/ComfyUI or ../shared/host")
        for item in items:
            if "tests/host" in str(item.fspath).replace("\\", "/"):
                item.add_marker(marker)


def pytest_report_header(config):
    if COMFYUI is None:
        return "HOST TESTS SKIPPED: no ComfyUI found at $COMFYUI_PATH, ../.., ~/ComfyUI or ../shared/host"
    return f"ComfyUI host: {COMFYUI}"


def _prepare_host():
    if str(COMFYUI) not in sys.path:
        sys.path.insert(0, str(COMFYUI))
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management is imported: never probe CUDA in tests


@pytest.fixture(scope="session")
def host():
    """The ComfyUI path, with comfy importable on the CPU."""
    if COMFYUI is None:
        pytest.skip("HOST TESTS SKIPPED: no ComfyUI found")
    _prepare_host()
    return COMFYUI


@pytest.fixture(scope="session")
def pack(host):
    """The pack imported under a fixed package name, as ComfyUI imports a custom-node folder."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import tiny_models

    return tiny_models


@pytest.fixture(scope="session")
def wan(host, tiny):
    import torch

    with torch.inference_mode():
        return tiny.load_tiny_wan()


@pytest.fixture(scope="session")
def clip(host, tiny):
    import torch

    with torch.inference_mode():
        return tiny.tiny_wan_clip()


@pytest.fixture(scope="session")
def effective_weights(host):
    """``effective_weights(patcher, keys) -> {key: weight}``: the weights as ComfyUI computes them for ``patcher``,
    its patch list applied by ``comfy.lora.calculate_weight`` (what ModelPatcher runs when it loads a model) to the
    unpatched weights."""
    import comfy.lora
    import comfy.model_management

    def compute(patcher, keys):
        comfy.model_management.unload_all_models()  # restores every backed-up weight
        state = patcher.model.state_dict()
        out = {}
        for key in keys:
            weight = state[key].detach().clone().float()
            out[key] = comfy.lora.calculate_weight(patcher.patches[key], weight, key) if key in patcher.patches else weight
        return out

    return compute


@pytest.fixture
def apply_check_export(pack, tmp_path, monkeypatch):
    """``apply_check_export(model, validation, size, length) -> {node name: (run(vector), remedy)}``: the three nodes
    that take a refusal vector to a MODEL, at target zero: Apply Unlearning ('all in vector'), Unlearning Check (the
    default group, strengths 0 and 1, ``size`` x ``size``, ``length`` frames, on the ``validation`` pairs) and Export
    Unlearning as LoRA (into a fresh loras folder); ``remedy`` is how that node's refusal of a vector to compute again
    ends (``patching._compute_again``)."""
    import folder_paths

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import UnlearningCheck

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path / "loras")], {".safetensors"}))
    folder_paths.filename_list_cache.clear()

    in_place = "; a LoRA exported from this vector holds the same edit: export it again from the new one"

    def nodes(model, validation, size: int, length: int):
        return {
            "Apply Unlearning": (lambda vector: definitions.ApplyUnlearning.execute(
                model, vector, 1.0, True, "all in vector", 0, -1, "zero"), in_place),
            "Unlearning Check": (lambda vector: UnlearningCheck.execute(
                model, vector, "0, 1", "default", 0, -1, "zero", "none", size, size, length, "0.5", 0,
                validation_pairs=validation), in_place),
            "Export Unlearning as LoRA": (lambda vector: definitions.ExportLoRA.execute(
                model, vector, 1.0, "zero", "unlearning"), " and export that vector"),
        }

    yield nodes
    folder_paths.filename_list_cache.clear()


@pytest.fixture(scope="session")
def wan22_5b(host, tiny):
    """A tiny Wan 2.2 TI2V 5B (48-channel latent, class WAN22), loaded as UNETLoader loads a file."""
    import torch

    with torch.inference_mode():
        return tiny.load_tiny_wan(state=tiny.tiny_wan22_5b_state_dict())


@pytest.fixture(scope="session")
def wan22_experts(host, tiny):
    """The tiny Wan 2.2 A14B pair ``{"high": MODEL, "low": MODEL}``: scaled-fp8 files, each with its own weights."""
    import torch

    with torch.inference_mode():
        return {expert: tiny.load_tiny_wan(state=tiny.tiny_wan22_expert_state_dict(expert)) for expert in ("high", "low")}


@pytest.fixture(scope="session")
def schemas(pack):
    """node id -> (schema, V1 info) of every node the pack registers, built through its ``comfy_entrypoint``."""
    # The routes need ComfyUI's running server (test_routes covers them): a no-op stands in, as in test_check_node.
    routes = types.ModuleType("comfyui_video_unlearning.nodes.routes")
    routes.register_routes = lambda: None
    saved = sys.modules.get(routes.__name__)
    sys.modules[routes.__name__] = routes
    try:
        nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    finally:
        if saved is None:
            sys.modules.pop(routes.__name__, None)
        else:
            sys.modules[routes.__name__] = saved
    return {node.GET_SCHEMA().node_id: (node.GET_SCHEMA(), node.GET_NODE_INFO_V1()) for node in nodes}
