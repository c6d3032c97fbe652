"""Small models that ComfyUI's own classes build, for the benchmarks and (imported from here) the host tests.

- ``tiny_wan_clip``: a UMT5 text encoder built through ComfyUI's Wan CLIP classes with a tiny config
  (d_model 4096 is kept because Wan's ``text_embedding`` reads 4096 features) and the T5 pile
  SentencePiece model that ships with ComfyUI. ComfyUI's CLIPLoader detects only a full-size UMT5-XXL.
- ``zero_padded``: such a CLIP padding with exact zeros, as ComfyUI's Wan does with the real UMT5-XXL.
- ``medium_wan``: a Wan 2.1 with dim 256 and 4 blocks, loaded through ComfyUI's detection.
- ``family_model``: a model of another family (HunyuanVideo, LTX-Video, Mochi, Cosmos Predict2, Cosmos 1.0) built by
  ComfyUI's own model config class from a unet config (``TINY_FAMILIES``: the host tests' sizes; ``MEDIUM_FAMILIES``:
  about ``medium_wan``'s size, for the benchmarks), random weights.
- ``FamilyText``: a text encoder's output shaped as the family's own ComfyUI encoder gives it (rows, width, pooled
  output, attention mask).
- ``GGUFStandIn``, ``packed_like_gguf``, ``decoded_gguf``: a weight quantised to a GGUF block format by the ``gguf``
  package and held as ComfyUI-GGUF holds it, and its decoded values.
All are seeded, so every run sees the same weights. Needs ``comfy`` importable (a ComfyUI on sys.path).
Benchmarks never import ``tests/``; tests may import this module.
"""

from __future__ import annotations

import os

import torch

TINY_UMT5 = {"d_ff": 32, "d_kv": 8, "d_model": 4096, "num_heads": 2, "num_layers": 1, "vocab_size": 32128,
             "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True, "layer_norm_epsilon": 1e-6,
             "model_type": "umt5", "relative_attention_num_buckets": 32}


def tiny_wan_clip(seed: int = 0, spiece_model: torch.Tensor | None = None):
    """A comfy.sd.CLIP with a tiny UMT5 (random weights) and the T5 pile tokenizer that ships with ComfyUI (a
    32,000-piece SentencePiece model with byte fallback: a character it has no piece for is spelt as its UTF-8 bytes,
    never as the unknown token), or ``spiece_model``: a SentencePiece model as a checkpoint holds it (its serialised
    proto as a uint8 tensor, which ComfyUI's loader hands the tokenizer as ``tokenizer_data["spiece_model"]``), the
    vocabulary then sized to its pieces."""
    import comfy.sd
    import comfy.text_encoders.wan as wan

    config = dict(TINY_UMT5)
    if spiece_model is None:
        spiece = os.path.join(os.path.dirname(wan.__file__), "t5_pile_tokenizer", "tokenizer.model")
    else:
        import sentencepiece

        spiece = spiece_model
        pieces = sentencepiece.SentencePieceProcessor(model_proto=spiece_model.numpy().tobytes()).get_piece_size()
        config["vocab_size"] = pieces

    class Target:
        params = {}
        clip = wan.te()
        tokenizer = wan.WanT5Tokenizer

    clip = comfy.sd.CLIP(Target, tokenizer_data={"spiece_model": spiece},
                         model_options={"umt5xxl_model_config": config, "dtype": torch.float32})
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


#: Per family: ComfyUI's model config class and a unet config, as small as the host tests can make it.
TINY_FAMILIES = {
    "hunyuan_video": ("HunyuanVideo", {"image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16,
                                       "vec_in_dim": 32, "context_in_dim": 64, "hidden_size": 64, "mlp_ratio": 2.0,
                                       "num_heads": 2, "depth": 2, "depth_single_blocks": 1, "axes_dim": [8, 12, 12],
                                       "theta": 256, "patch_size": [1, 2, 2], "qkv_bias": True,
                                       "guidance_embed": True, "byt5": False, "meanflow": False}),
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
    "cosmos_predict2": ("CosmosT2IPredict2", {"image_model": "cosmos_predict2", "in_channels": 16, "out_channels": 16,
                                              "max_img_h": 64, "max_img_w": 64, "max_frames": 8, "patch_spatial": 2,
                                              "patch_temporal": 1, "concat_padding_mask": True, "model_channels": 64,
                                              "num_blocks": 2, "num_heads": 2, "crossattn_emb_channels": 32,
                                              "pos_emb_cls": "rope3d", "use_adaln_lora": True, "adaln_lora_dim": 16}),
    # Cosmos 1.0 as ComfyUI's detection configures it (model_detection.py; COSMOS1_SIZES are what differs), smaller.
    # What the detection itself loads has 36 blocks of 40 heads at any width but 7B's 4096, and reads 1024-wide text:
    # 43 M parameters at the narrowest that runs (tests/host/tiny_models.py, tiny_cosmos1_state_dict), loaded once
    # in the tests, too slow for every graph test.
    "cosmos1": ("CosmosT2V", {"image_model": "cosmos", "in_channels": 16, "out_channels": 16, "max_img_h": 64,
                              "max_img_w": 64, "max_frames": 8, "patch_spatial": 2, "patch_temporal": 1,
                              "concat_padding_mask": True, "model_channels": 64, "block_config": "FA-CA-MLP",
                              "num_blocks": 2, "num_heads": 2, "crossattn_emb_channels": 32, "pos_emb_cls": "rope3d",
                              "pos_emb_learnable": False, "pos_emb_interpolation": "crop", "block_x_format": "THWBD",
                              "affline_emb_norm": True, "use_adaln_lora": True, "adaln_lora_dim": 16,
                              "extra_per_block_abs_pos_emb": True, "extra_per_block_abs_pos_emb_type": "learnable",
                              "rope_h_extrapolation_ratio": 2.0, "rope_w_extrapolation_ratio": 2.0,
                              "rope_t_extrapolation_ratio": 2.0, "extra_h_extrapolation_ratio": 2.0,
                              "extra_w_extrapolation_ratio": 2.0, "extra_t_extrapolation_ratio": 2.0}),
}

#: The keys of Cosmos 1.0's unet config in which ``TINY_FAMILIES["cosmos1"]`` differs from what ComfyUI's detection
#: makes of its state dict (sizes only; detection also leaves the text width at GeneralDIT's default, 1024).
COSMOS1_SIZES = ("max_img_h", "max_img_w", "max_frames", "num_blocks", "num_heads", "crossattn_emb_channels",
                 "adaln_lora_dim")

#: The same families at about ``medium_wan``'s size (width 256, 4 blocks; HunyuanVideo 2 double and 2 single
#: blocks), with their real text widths (4096 from Llama or T5-XXL; the Cosmos families' 1024), for the benchmarks.
MEDIUM_FAMILIES = {
    "hunyuan_video": ("HunyuanVideo", {**TINY_FAMILIES["hunyuan_video"][1], "vec_in_dim": 768, "context_in_dim": 4096,
                                       "hidden_size": 256, "mlp_ratio": 4.0, "num_heads": 4,
                                       "depth_single_blocks": 2, "axes_dim": [16, 24, 24]}),
    "ltxv": ("LTXV", {**TINY_FAMILIES["ltxv"][1], "num_layers": 4, "attention_head_dim": 64, "num_attention_heads": 4,
                      "cross_attention_dim": 256, "caption_channels": 4096}),
    "mochi": ("GenmoMochi", {**TINY_FAMILIES["mochi"][1], "depth": 4, "num_heads": 4, "hidden_size_x": 256,
                             "hidden_size_y": 128, "mlp_ratio_x": 48.0, "t5_feat_dim": 4096, "t5_token_length": 256}),
    "cosmos_predict2": ("CosmosT2IPredict2", {**TINY_FAMILIES["cosmos_predict2"][1], "max_img_h": 240,
                                              "max_img_w": 240, "max_frames": 128, "model_channels": 256,
                                              "num_blocks": 4, "num_heads": 4, "crossattn_emb_channels": 1024}),
    "cosmos1": ("CosmosT2V", {**TINY_FAMILIES["cosmos1"][1], "max_img_h": 240, "max_img_w": 240, "max_frames": 128,
                              "model_channels": 256, "num_blocks": 4, "num_heads": 4, "crossattn_emb_channels": 1024,
                              "adaln_lora_dim": 256}),
}

#: Per family, what its ComfyUI text encoder hands the model, for the medium models: context rows (None: as many as
#: the prompt's tokens, no padding, as HunyuanVideo's Llama gives), context width, pooled width (None: no pooled
#: output), attention mask (the T5 encoders of LTX-Video, Mochi and Cosmos return one; HunyuanVideo's drops it).
MEDIUM_TEXT = {
    "hunyuan_video": (None, 4096, 768, False),
    "ltxv": (128, 4096, None, True),
    "mochi": (256, 4096, None, True),
    "cosmos_predict2": (512, 1024, None, True),
    "cosmos1": (512, 1024, None, True),
}


def family_model(config_class: str, unet: dict, *, scale: float = 0.05, seed: int = 0):
    """A ModelPatcher on the CPU around ``comfy.supported_models.<config_class>(unet).get_model({})``, every parameter
    drawn from N(0, scale^2) (ComfyUI's ops leave weights uninitialised)."""
    import comfy.model_patcher
    import comfy.supported_models

    torch.manual_seed(seed)
    model = getattr(comfy.supported_models, config_class)(dict(unet)).get_model({})
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * scale)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


class FamilyText:
    """What Pair Encoder calls of a CLIP, shaped as a family's own ComfyUI text encoder output: ``inner`` (a CLIP or a
    stand-in giving ``[1, rows, >= width]`` with zeros after the end token) cut to ``rows`` rows (None: the prompt's
    own tokens, up to and including the end token) and ``width`` features, with an ``attention_mask`` and a
    ``pooled_output`` (the first row's first ``pooled`` features) where the family's encoder gives them."""

    def __init__(self, inner, rows: int | None, width: int, pooled: int | None, mask: bool):
        self.inner, self.rows, self.width, self.pooled, self.mask = inner, rows, width, pooled, mask

    def tokenize(self, text):
        return self.inner.tokenize(text)

    def encode_from_tokens_scheduled(self, tokens):
        (cond, extras), = self.inner.encode_from_tokens_scheduled(tokens)
        used = int(cond[0].abs().sum(-1).gt(0).sum())  # up to and including the end token
        if self.rows is not None and self.rows > cond.shape[1]:
            raise ValueError(f"the inner encoder gives {cond.shape[1]} rows, fewer than the {self.rows} asked for")
        if self.pooled and self.pooled > cond.shape[2]:
            raise ValueError(f"the inner encoder gives {cond.shape[2]} features, fewer than the pooled {self.pooled}")
        pooled = cond[:, 0, :self.pooled].clone() if self.pooled else None
        cond = cond[:, :used if self.rows is None else self.rows, :self.width].clone()
        extras = {key: value for key, value in extras.items() if key != "attention_mask"}
        if self.mask:
            extras["attention_mask"] = (torch.arange(cond.shape[1]) < used).to(torch.int64)[None]
        if pooled is not None:
            extras["pooled_output"] = pooled
        return [[cond, extras]]


class GGUFStandIn(torch.Tensor):
    """A weight as ComfyUI-GGUF holds it, for CI, where ComfyUI-GGUF cannot be installed (it is on no registry): the
    file's raw blocks as the tensor's elements (``uint8``), the block format as ``.tensor_type``, and the logical
    shape as ``.shape`` (``.size()`` is the raw one), like its ``GGMLTensor``; ``detach`` returns the tensor itself,
    as GGMLTensor's does, so ``torch.nn.Parameter`` keeps these attributes. It does not compute: only the pack's
    reads of a weight run on it (``bench/gguf_compat.py`` runs the real ComfyUI-GGUF end to end)."""

    @staticmethod
    def __new__(cls, raw: torch.Tensor, tensor_type, shape: tuple[int, ...]):
        tensor = torch.Tensor._make_subclass(cls, raw)
        tensor.tensor_type, tensor.tensor_shape = tensor_type, torch.Size(shape)
        return tensor

    @property
    def shape(self):
        return self.tensor_shape

    def detach(self):
        return self


def packed_like_gguf(weight: torch.Tensor, qtype: str) -> GGUFStandIn:
    """``weight`` ``[out, in]`` quantised to the GGUF block format ``qtype`` ("Q8_0", "Q4_0", "BF16" ...) by the
    ``gguf`` package, held as ComfyUI-GGUF holds it."""
    import gguf

    tensor_type = getattr(gguf.GGMLQuantizationType, qtype)
    raw = gguf.quants.quantize(weight.detach().float().numpy(), tensor_type)
    return GGUFStandIn(torch.from_numpy(raw), tensor_type, tuple(weight.shape))


def decoded_gguf(weight: GGUFStandIn) -> torch.Tensor:
    """The float32 values of a packed weight, decoded by the ``gguf`` package."""
    import gguf

    values = gguf.quants.dequantize(weight.as_subclass(torch.Tensor).numpy(), weight.tensor_type)
    return torch.from_numpy(values).reshape(tuple(weight.shape))
