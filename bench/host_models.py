"""Small models that ComfyUI's own classes build, for the benchmarks and (imported from here) the host tests.

- ``tiny_wan_clip``: a UMT5 text encoder built through ComfyUI's Wan CLIP classes with a tiny config
  (d_model 4096 is kept because Wan's ``text_embedding`` reads 4096 features) and the T5 pile
  SentencePiece model that ships with ComfyUI. ComfyUI's CLIPLoader detects only a full-size UMT5-XXL.
- ``zero_padded``: such a CLIP padding with exact zeros, as ComfyUI's Wan does with the real UMT5-XXL.
- ``medium_wan``: a Wan 2.1 with dim 256 and 4 blocks, loaded through ComfyUI's detection.
Both are seeded, so every run sees the same weights. Needs ``comfy`` importable (a ComfyUI on sys.path).
Benchmarks never import ``tests/``; tests may import this module.
"""

from __future__ import annotations

import os

import torch

TINY_UMT5 = {"d_ff": 32, "d_kv": 8, "d_model": 4096, "num_heads": 2, "num_layers": 1, "vocab_size": 32128,
             "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True, "layer_norm_epsilon": 1e-6,
             "model_type": "umt5", "relative_attention_num_buckets": 32}


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


def zero_padded(clip):
    """``clip`` with its UMT5 model's end token set to the tiny tokenizer's (2), so that ComfyUI zeroes every row after
    it. The real UMT5-XXL tokenizer ends a prompt with 1, the Wan model's end token, and its padding rows are exact
    zeros; the pile-T5 tokenizer ends with 2, so without this the padding rows hold the encoder's pad-token output."""
    for module in clip.cond_stage_model.modules():
        if hasattr(module, "special_tokens"):
            module.special_tokens = {**module.special_tokens, "end": 2}
    return clip


def medium_wan():
    """A Wan 2.1 with dim 256 and 4 blocks, loaded through ComfyUI's detection."""
    import comfy.ops
    import comfy.sd
    from comfy.ldm.wan.model import WanModel

    torch.manual_seed(0)
    net = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, freq_dim=256, window_size=(-1, -1), qk_norm=True,
                   cross_attn_norm=True, eps=1e-6, operations=comfy.ops.manual_cast, dim=256, ffn_dim=1024, num_layers=4,
                   num_heads=2, in_dim=16, out_dim=16, text_dim=4096)
    state = {k: torch.randn(v.shape) * (0.02 if v.ndim > 1 else 0.1) for k, v in net.state_dict().items()}
    return comfy.sd.load_diffusion_model_state_dict(state)
