"""Every architecture adapter on a tiny model of its family, built through ComfyUI's own model classes."""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY_FAMILIES, family_model

TINY = {"wan": None, **TINY_FAMILIES}  # Wan: loaded through ComfyUI's detection in the `wan` fixture


pytestmark = pytest.mark.usefixtures("inference_mode")


def tiny_model(family, wan):
    return wan if TINY[family] is None else family_model(*TINY[family])


@pytest.mark.parametrize("family", list(TINY))
def test_adapter_layers_exist_and_an_edit_removes_the_direction(family, pack, wan, effective_weights):
    from comfyui_video_unlearning.core.refusal import RefusalFitter
    from comfyui_video_unlearning.nodes.adapters import adapter_for
    from comfyui_video_unlearning.nodes.patching import apply_unlearning

    patcher = tiny_model(family, wan)
    adapter = adapter_for(patcher)
    assert adapter.family == family
    diffusion = patcher.model.diffusion_model
    for group in adapter.groups:
        names = adapter.layer_names(diffusion, group)
        assert names and all(diffusion.get_submodule(n).weight.ndim == 2 for n in names), (family, group)
    layers = adapter.layer_names(diffusion, adapter.default_group)
    fitter = RefusalFitter()
    g = torch.Generator().manual_seed(1)
    for name in layers:
        width = diffusion.get_submodule(name).weight.shape[1]
        safe = torch.randn(6, width, generator=g)
        fitter.update(name, safe + torch.randn(width, generator=g), safe)
    basis = fitter.fit(rank=2, model_family=family)
    patched, edited = apply_unlearning(patcher, basis, strength=1.0, target="zero")
    assert edited == layers
    keys = [f"diffusion_model.{name}.weight" for name in layers]
    weights = effective_weights(patched, keys)
    for name, key in zip(layers, keys):
        weight = weights[key]
        direction = basis.subspace(name)[:, 0]
        assert (weight @ direction).abs().max() < 1e-4, (family, name)


#: ComfyUI's own empty-latent node for each family (Cosmos Predict2 and Wan share the Wan 2.1 VAE).
EMPTY_LATENT_NODES = {
    "wan": ("comfy_extras.nodes_hunyuan", "EmptyHunyuanLatentVideo"),
    "hunyuan_video": ("comfy_extras.nodes_hunyuan", "EmptyHunyuanLatentVideo"),
    "ltxv": ("comfy_extras.nodes_lt", "EmptyLTXVLatentVideo"),
    "mochi": ("comfy_extras.nodes_mochi", "EmptyMochiLatentVideo"),
    "cosmos_predict2": ("comfy_extras.nodes_hunyuan", "EmptyHunyuanLatentVideo"),
    "wan22_5b": ("comfy_extras.nodes_wan", "Wan22ImageToVideoLatent"),
}


def _node_latent(module_name: str, node_name: str, width: int, height: int, length: int):
    import importlib

    node = getattr(importlib.import_module(module_name), node_name)
    if hasattr(node, "generate"):  # a V1 node
        return node().generate(width, height, length)[0]["samples"]
    if node_name == "Wan22ImageToVideoLatent":
        return node.execute(None, width, height, length, 1)[0]["samples"]
    return node.execute(width, height, length)[0]["samples"]


@pytest.mark.parametrize("family", list(EMPTY_LATENT_NODES))
def test_empty_latent_has_the_shape_of_the_familys_own_latent_node(family, pack, wan, wan22_5b):
    """The adapter owns each family's VAE factors; Collect Activations' empty latent matches ComfyUI's node."""
    from comfyui_video_unlearning.nodes.collect import empty_latent

    model = wan22_5b if family == "wan22_5b" else tiny_model(family, wan)
    width, height, length = 1024, 512, 97
    expected = _node_latent(*EMPTY_LATENT_NODES[family], width, height, length)
    assert list(empty_latent(model, width, height, length).shape) == list(expected.shape), family


def test_collect_and_apply_resolve_layers_through_one_function(pack, wan):
    """Collect Activations (``definitions``) and Apply Unlearning / Export (``patching``) both ask
    ``adapters.layers_for`` which layers a choice means; there is no second resolver."""
    from comfyui_video_unlearning.nodes import adapters, definitions, patching

    assert definitions.layers_for is adapters.layers_for and patching.layers_for is adapters.layers_for
    assert not hasattr(adapters, "resolve_group")
    names = adapters.layers_for(wan, "default")
    assert names == [f"blocks.{i}.cross_attn.{p}" for i in range(2) for p in "kv"]
    assert adapters.layers_for(wan, "all", 1, 1) == ["blocks.1.cross_attn.k", "blocks.1.cross_attn.v",
                                                     "blocks.1.cross_attn.o", "blocks.1.ffn.0"]
    assert adapters.adapter_for(wan).shared_inputs(names) == {"text_embedding": names}
