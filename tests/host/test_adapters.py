"""Every architecture adapter on a tiny model of its family, built through ComfyUI's own model classes."""

from __future__ import annotations

import pytest
import torch

TINY = {
    "wan": None,  # loaded through ComfyUI's detection in the `wan` fixture
    "hunyuan_video": ("HunyuanVideo", {"image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32,
                                       "context_in_dim": 64, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 2,
                                       "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 256, "patch_size": [1, 2, 2],
                                       "qkv_bias": True, "guidance_embed": False, "byt5": False, "meanflow": False}),
    "ltxv": ("LTXV", {"image_model": "ltxv", "num_layers": 2, "attention_head_dim": 8, "num_attention_heads": 2,
                      "cross_attention_dim": 16, "caption_channels": 32, "in_channels": 128, "out_channels": 128}),
    "mochi": ("GenmoMochi", {"image_model": "mochi_preview", "depth": 2, "num_heads": 2, "hidden_size_x": 128, "hidden_size_y": 64,
                             "mlp_ratio_x": 96.0, "qk_norm": True, "t5_feat_dim": 32, "t5_token_length": 16, "in_channels": 12}),
    "cosmos_predict2": ("CosmosT2IPredict2", {"image_model": "cosmos_predict2", "in_channels": 16, "out_channels": 16, "max_img_h": 64,
                                              "max_img_w": 64, "max_frames": 8, "patch_spatial": 2, "patch_temporal": 1,
                                              "concat_padding_mask": True, "model_channels": 64, "num_blocks": 2, "num_heads": 2,
                                              "crossattn_emb_channels": 32, "pos_emb_cls": "rope3d", "use_adaln_lora": True,
                                              "adaln_lora_dim": 16}),
}


@pytest.fixture(autouse=True)
def _inference_mode():
    with torch.inference_mode():
        yield


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
