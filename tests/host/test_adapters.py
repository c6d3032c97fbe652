"""Every architecture adapter on a tiny model of its family, built through ComfyUI's own model classes."""

from __future__ import annotations

import pytest
import torch

TINY = {
    "wan": None,  # loaded through ComfyUI's detection in the `wan` fixture
    "hunyuan_video": ("HunyuanVideo", {"image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32,
                                       "context_in_dim": 64, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 2,
                                       "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 256, "patch_size": [1, 2, 2],
                                       "qkv_bias": True, "guidance_embed": True, "byt5": False, "meanflow": False}),
    "ltxv": ("LTXV", {"image_model": "ltxv", "num_layers": 2, "attention_head_dim": 8, "num_attention_heads": 2,
                      "cross_attention_dim": 16, "caption_channels": 32, "in_channels": 128, "out_channels": 128}),
    # as ComfyUI's detection configures Mochi (model_detection.py), smaller; its x-stream MLP must be 12288 wide
    "mochi": ("GenmoMochi", {"image_model": "mochi_preview", "depth": 2, "num_heads": 2, "hidden_size_x": 128,
                             "hidden_size_y": 64, "mlp_ratio_x": 96.0, "mlp_ratio_y": 4.0, "qk_norm": True,
                             "t5_feat_dim": 32, "t5_token_length": 16, "in_channels": 12, "patch_size": 2,
                             "learn_sigma": False, "qkv_bias": False, "out_bias": True, "attn_drop": 0.0,
                             "patch_embed_bias": True, "posenc_preserve_area": True, "timestep_mlp_bias": True,
                             "attend_to_padding": False, "timestep_scale": 1000.0, "use_t5": True,
                             "rope_theta": 10000.0}),
    "cosmos_predict2": ("CosmosT2IPredict2", {"image_model": "cosmos_predict2", "in_channels": 16, "out_channels": 16, "max_img_h": 64,
                                              "max_img_w": 64, "max_frames": 8, "patch_spatial": 2, "patch_temporal": 1,
                                              "concat_padding_mask": True, "model_channels": 64, "num_blocks": 2, "num_heads": 2,
                                              "crossattn_emb_channels": 32, "pos_emb_cls": "rope3d", "use_adaln_lora": True,
                                              "adaln_lora_dim": 16}),
}


pytestmark = pytest.mark.usefixtures("inference_mode")


def tiny_model(family, wan):
    if TINY[family] is None:
        return wan
    import comfy.model_patcher
    import comfy.supported_models

    config_class, unet = TINY[family]
    torch.manual_seed(0)
    model = getattr(comfy.supported_models, config_class)(dict(unet)).get_model({})
    for parameter in model.parameters():  # ComfyUI's ops leave weights uninitialised
        parameter.copy_(torch.randn_like(parameter) * 0.05)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


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
