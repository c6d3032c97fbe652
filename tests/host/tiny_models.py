"""Tiny random models that ComfyUI's own loaders accept, for CPU host tests.

- ``tiny_wan_state_dict``: a Wan 2.1 T2V state dict (dim 128, 2 blocks) that
  ``comfy.sd.load_diffusion_model_state_dict`` detects as Wan 2.1.
- ``tiny_wan_clip``: a UMT5 text encoder built through ComfyUI's Wan CLIP classes with a tiny config
  (d_model 4096 is kept because Wan's ``text_embedding`` reads 4096 features) and the T5 pile
  SentencePiece model that ships with ComfyUI.
Both are seeded, so every test run sees the same weights.
"""

from __future__ import annotations

import os

import torch

TINY_WAN = {"dim": 128, "ffn_dim": 256, "num_layers": 2, "num_heads": 1, "in_dim": 16, "out_dim": 16, "text_dim": 4096}
TINY_UMT5 = {"d_ff": 32, "d_kv": 8, "d_model": 4096, "num_heads": 2, "num_layers": 1, "vocab_size": 32128,
             "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True, "layer_norm_epsilon": 1e-6,
             "model_type": "umt5", "relative_attention_num_buckets": 32}


def tiny_wan_state_dict(seed: int = 0, *, i2v: bool = False) -> dict[str, torch.Tensor]:
    """Random weights of a tiny Wan 2.1 (T2V, or I2V with an image embedding)."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    torch.manual_seed(seed)
    model = WanModel(model_type="i2v" if i2v else "t2v", patch_size=(1, 2, 2), text_len=512, freq_dim=256,
                     window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6,
                     operations=comfy.ops.manual_cast, **TINY_WAN)
    state = {}
    for name, tensor in model.state_dict().items():
        # Plain randn everywhere (ComfyUI's ops skip weight init); small scale keeps activations sane.
        state[name] = torch.randn(tensor.shape) * (0.02 if tensor.ndim > 1 else 0.1)
    return state


def load_tiny_wan(seed: int = 0, model_options: dict | None = None):
    """A ModelPatcher around a tiny Wan 2.1, loaded through ComfyUI's own detection."""
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model_state_dict(tiny_wan_state_dict(seed), model_options=model_options or {})
    if patcher is None:
        raise RuntimeError("ComfyUI did not detect the tiny Wan state dict")
    return patcher


def tiny_wan_clip(seed: int = 0):
    """A comfy.sd.CLIP with a tiny UMT5 (random weights) and the T5 pile tokenizer."""
    import comfy.sd
    import comfy.text_encoders.wan as wan

    spiece = os.path.join(os.path.dirname(wan.__file__), "t5_pile_tokenizer", "tokenizer.model")

    class Target:
        params = {}
        clip = wan.te()
        tokenizer = wan.WanT5Tokenizer

    clip = comfy.sd.CLIP(Target, tokenizer_data={"spiece_model": spiece},
                         model_options={"umt5xxl_model_config": dict(TINY_UMT5), "dtype": torch.float32})
    torch.manual_seed(seed)
    random = {name: torch.randn(t.shape) * (1.0 if "shared" in name else 0.05)
              for name, t in clip.cond_stage_model.state_dict().items()}
    for name in random:
        if "layer_norm" in name:
            random[name] = torch.ones_like(random[name])
    clip.cond_stage_model.load_state_dict(random, strict=True)
    return clip
