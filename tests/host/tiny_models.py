"""Tiny random models that ComfyUI's own loaders accept, for CPU host tests.

- ``tiny_wan_state_dict``: a Wan 2.1 T2V state dict (dim 128, 2 blocks) that
  ``comfy.sd.load_diffusion_model_state_dict`` detects as Wan 2.1.
- ``tiny_wan22_5b_state_dict``: a Wan 2.2 TI2V 5B stand-in (48-channel latent), detected as ``WAN22``.
- ``tiny_wan22_expert_state_dict("high" | "low")``: a Wan 2.2 A14B expert stand-in. ComfyUI detects the real
  experts as the Wan 2.1 architecture; each has its own weights (here: its own seed), stored as scaled fp8
  like the official ``*_fp8_scaled`` files. ``WAN22_FILES`` maps the official file names to these builders.
- ``tiny_wan_clip``, ``family_model`` with ``TINY_FAMILIES`` (the other families' tiny models) and ``FamilyText``:
  from ``bench/host_models.py`` (tests import them from there; of the benchmarks only ``pooled_paths.py``,
  ``hunyuan_text_paths.py`` and ``text_paths.py`` import this module, the models their docs/ figures were
  measured on).
- ``tiny_hunyuan_video_state_dict``, ``tiny_hunyuan_video_text`` and ``tiny_hunyuan_video_mean_pooled_text``: a
  HunyuanVideo that ComfyUI's detection loads, and text encoder stand-ins shaped as HunyuanVideo's.
- ``tiny_cosmos1_state_dict``: a Cosmos 1.0 that ComfyUI's detection loads as ``CosmosVideo`` (the narrowest that
  runs; the other tests use ``TINY_FAMILIES["cosmos1"]``, its configuration at a tenth of the size).
- ``tiny_wan_gguf_twins``: a tiny Wan whose k/v layers hold GGUF blocks as ComfyUI-GGUF holds them
  (``GGUFStandIn`` from ``bench/host_models.py``), and its float twin holding the decoded values.
- ``tiny_t5_clip``: a CLIP as ComfyUI builds LTX-Video's, Mochi's or Cosmos' (their own tokenizer and text-encoder
  classes: the original T5 SentencePiece vocabulary that ships with ComfyUI, no byte fallback) around a tiny T5.
- ``LookupTextEncoder``: the tiny CLIP's tokenizer with a fixed table in place of its transformer, for tests whose
  figures must be the same bits on every CPU (``tests/host/test_check_exact.py``).
All are seeded, so every test run sees the same weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

_BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if _BENCH not in sys.path:  # also imported by the server tests' loader node, in ComfyUI's own process
    sys.path.insert(0, _BENCH)
from host_models import (  # noqa: E402,F401  (re-exported for the tests)
    TINY_FAMILIES, TINY_UMT5, FamilyText, GGUFStandIn, decoded_gguf, family_model, packed_like_gguf, tiny_wan_clip,
    zero_padded,
)

TINY_WAN = {"dim": 128, "ffn_dim": 256, "num_layers": 2, "num_heads": 1, "in_dim": 16, "out_dim": 16, "text_dim": 4096}


def tiny_wan_state_dict(seed: int = 0, *, i2v: bool = False, channels: int = 16) -> dict[str, torch.Tensor]:
    """Random weights of a tiny Wan 2.1 (T2V, or I2V with an image embedding, which ComfyUI detects as
    ``WAN21_I2V``); ``channels`` = 48 makes the latent width of Wan 2.2 TI2V 5B."""
    return _random_state(_tiny_wan_module(seed, i2v=i2v, channels=channels))


#: Wan 2.1 I2V reads the latent, a 4-channel frame mask and the start image's latent: 16 + 4 + 16 channels in
#: (``comfy.supported_models.WAN21_I2V``'s ``in_dim``, which its detection matches), 16 out.
I2V_EXTRA_CHANNELS = 20


def _tiny_wan_module(seed: int, *, i2v: bool = False, channels: int = 16):
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    torch.manual_seed(seed)
    config = {**TINY_WAN, "in_dim": channels + (I2V_EXTRA_CHANNELS if i2v else 0), "out_dim": channels}
    return WanModel(model_type="i2v" if i2v else "t2v", patch_size=(1, 2, 2), text_len=512, freq_dim=256,
                    window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6,
                    operations=comfy.ops.manual_cast, **config)


def _random_state(module) -> dict[str, torch.Tensor]:
    """Random weights for ``module``'s state dict, drawn from the seed its builder set."""
    # Plain randn everywhere (ComfyUI's ops skip weight init); small scale keeps activations sane.
    return {name: torch.randn(tensor.shape) * (0.02 if tensor.ndim > 1 else 0.1)
            for name, tensor in module.state_dict().items()}


def tiny_wan22_5b_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny Wan 2.2 TI2V 5B: 48 latent channels in and out, which ComfyUI detects as ``WAN22`` (16x VAE)."""
    return tiny_wan_state_dict(seed, channels=48)


#: Seeds of the two A14B expert stand-ins: each expert has its own weights.
WAN22_EXPERT_SEEDS = {"high": 22, "low": 23}


def tiny_wan22_expert_state_dict(expert: str, *, scaled_fp8: bool = True) -> dict[str, torch.Tensor]:
    """A tiny Wan 2.2 A14B expert ("high" or "low" noise). With ``scaled_fp8`` every linear weight is stored as
    float8_e4m3fn with a per-tensor ``scale_weight`` and the ``scaled_fp8`` marker, as in the official
    ``wan2.2_t2v_*_14B_fp8_scaled.safetensors`` files (ComfyUI then loads them with its scaled-fp8 ops)."""
    if expert not in WAN22_EXPERT_SEEDS:
        raise ValueError(f"expert must be one of {list(WAN22_EXPERT_SEEDS)}, got {expert!r}")
    seed = WAN22_EXPERT_SEEDS[expert]
    module = _tiny_wan_module(seed)
    state = _random_state(module)
    if not scaled_fp8:
        return state
    linear = {f"{name}.weight" for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    for key in sorted(linear):
        weight = state[key]
        scale = weight.abs().max() / 448.0  # float8_e4m3fn's largest finite value
        state[key] = (weight / scale).to(torch.float8_e4m3fn)
        state[key[: -len("weight")] + "scale_weight"] = scale.reshape(()).to(torch.float32)
    state["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return state


#: Official Wan 2.2 diffusion-model file names -> builders of their tiny stand-ins (for the server tests).
WAN22_FILES = {
    "wan2.2_ti2v_5B_fp16.safetensors": tiny_wan22_5b_state_dict,
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": lambda: tiny_wan22_expert_state_dict("high"),
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": lambda: tiny_wan22_expert_state_dict("low"),
}


#: A HunyuanVideo (text to video) that ComfyUI's detection loads as ``HunyuanVideo``: detection sets the heads to the
#: width / 128 and the rope axes to [16, 56, 56], so the width is 128 (one head); one double and one single block;
#: the text 128 wide and the pooled CLIP-L output 768 wide, as the real one.
TINY_HUNYUAN_VIDEO = {"image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768,
                      "context_in_dim": 128, "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 1, "depth": 1,
                      "depth_single_blocks": 1, "axes_dim": [16, 56, 56], "theta": 256, "patch_size": [1, 2, 2],
                      "qkv_bias": True, "guidance_embed": True, "byt5": False, "meanflow": False}
def tiny_hunyuan_video_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of :data:`TINY_HUNYUAN_VIDEO`, under the names ComfyUI's detection reads."""
    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    torch.manual_seed(seed)
    module = HunyuanVideo(**TINY_HUNYUAN_VIDEO, operations=comfy.ops.manual_cast)
    # Fan-in scaled weights, unit norms, zero biases: activations keep their scale through the blocks, so that the
    # text (and an edit of it) moves the sampled latent by more than the 8-bit frames the server tests compare.
    state = {}
    for name, tensor in module.state_dict().items():
        if tensor.ndim > 1:
            state[name] = torch.randn(tensor.shape) / tensor[0].numel() ** 0.5
        elif name.endswith("bias"):
            state[name] = torch.zeros(tensor.shape)
        else:
            state[name] = torch.ones(tensor.shape)
    return state


def tiny_hunyuan_video_text(seed: int = 0):
    """What ComfyUI's HunyuanVideo text encoder hands the model, in shape: each prompt's own tokens (no padding, no
    mask), 128 wide, and a 768-wide pooled output (CLIP-L's). A stand-in (``FamilyText`` over a
    :class:`LookupTextEncoder`, whose rows are the same for a word in any prompt, as a trained encoder's nearly are):
    the pinned ComfyUI lacks the Llama tokenizer's ``tokenizer.json``, so its HunyuanVideo encoder cannot run here."""
    return FamilyText(LookupTextEncoder(tiny_wan_clip(seed), rows=64, width=TINY_HUNYUAN_VIDEO["vec_in_dim"]), None,
                      TINY_HUNYUAN_VIDEO["context_in_dim"], TINY_HUNYUAN_VIDEO["vec_in_dim"], False)


class _MeanPooledText(FamilyText):
    def encode_from_tokens_scheduled(self, tokens):
        (cond, _extras), = self.inner.encode_from_tokens_scheduled(tokens)
        used = int(cond[0].abs().sum(-1).gt(0).sum())
        return [[cond[:, :used, :self.width].clone(), {"pooled_output": cond[:, :used, :self.pooled].mean(1)}]]


def tiny_hunyuan_video_mean_pooled_text(seed: int = 0):
    """:func:`tiny_hunyuan_video_text` with a pooled output that summarises the prompt (the mean of its token rows), as
    CLIP-L's end-token state does: the stock stand-in pools the first token, which is 'a' on both sides of a pair."""
    stock = tiny_hunyuan_video_text(seed)
    return _MeanPooledText(stock.inner, None, stock.width, stock.pooled, False)


#: The official HunyuanVideo diffusion-model file name -> the builder of its tiny stand-in (for the server tests).
HUNYUAN_VIDEO_FILES = {"hunyuan_video_t2v_720p_bf16.safetensors": tiny_hunyuan_video_state_dict}


#: The width of :func:`tiny_cosmos1_state_dict`. ComfyUI's detection gives every Cosmos 1.0 of a width other than 7B's
#: 4096 the 14B's 36 blocks and 40 heads: at 160 wide a head has 4 features, the fewest its rope takes (3, at 120
#: wide, cannot be split in halves; 2 leaves its spatial axes no frequencies and divides by zero).
TINY_COSMOS1_WIDTH = 160


def tiny_cosmos1_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of a Cosmos 1.0 text-to-world model (16 latent channels, which ComfyUI detects as ``CosmosT2V``)
    :data:`TINY_COSMOS1_WIDTH` wide, under the names ComfyUI's detection reads; the shapes are those of the model the
    detection configures from them (43 M parameters, 1024-wide text as oldt5_xxl gives it)."""
    import comfy.model_detection
    import comfy.ops
    from comfy.ldm.cosmos.model import GeneralDIT

    width = TINY_COSMOS1_WIDTH
    # what the detection reads: the first block's self-attention query and the patch embedding (16 channels, the
    # padding mask's 1, times the 2 x 2 patch)
    probe = {"blocks.block0.blocks.0.block.attn.to_q.0.weight": torch.empty(width, width),
             "x_embedder.proj.1.weight": torch.empty(width, (16 + 1) * 4)}
    config = comfy.model_detection.detect_unet_config(probe, "")
    config.pop("image_model")
    with torch.device("meta"):  # only the names and shapes: the values are drawn below
        module = GeneralDIT(**config, operations=comfy.ops.manual_cast)
    torch.manual_seed(seed)
    return _random_state(module)


#: A T5 at the narrowest that runs; the tokenizer, the point of ``tiny_t5_clip``, is the real one.
TINY_T5 = {"d_ff": 32, "d_kv": 8, "d_model": 64, "num_heads": 2, "num_layers": 1, "vocab_size": 32128}
#: The ComfyUI text-encoder module of each T5 family: (its tokenizer class, its text-encoder builder).
T5_FAMILIES = {"ltxv": ("lt", "LTXVT5Tokenizer", "ltxv_te"), "mochi": ("genmo", "MochiT5Tokenizer", "mochi_te"),
               "cosmos": ("cosmos", "CosmosT5Tokenizer", "te")}


def tiny_t5_clip(family: str, seed: int = 0):
    """A comfy.sd.CLIP built from ``family``'s own ComfyUI classes (``T5_FAMILIES``, as its model config's
    ``clip_target`` names them): the T5 tokenizer files in ComfyUI's source (comfy/text_encoders/t5_tokenizer: 32,100
    pieces, unknown 2, no byte fallback, so a Chinese character or an emoji reads as the unknown token) and a tiny
    T5 (``TINY_T5``, random weights)."""
    import importlib

    import comfy.sd
    import comfy.supported_models_base

    module_name, tokenizer, encoder = T5_FAMILIES[family]
    module = importlib.import_module(f"comfy.text_encoders.{module_name}")
    target = comfy.supported_models_base.ClipTarget(getattr(module, tokenizer), getattr(module, encoder)())
    clip = comfy.sd.CLIP(target, model_options={"t5xxl_model_config": TINY_T5, "dtype": torch.float32})
    torch.manual_seed(seed)
    clip.cond_stage_model.load_state_dict({name: torch.randn(t.shape) * 0.05
                                           for name, t in clip.cond_stage_model.state_dict().items()}, strict=True)
    return clip


def load_tiny_wan(seed: int = 0, model_options: dict | None = None, state: dict | None = None):
    """A ModelPatcher around a tiny Wan (2.1 unless ``state`` is another builder's), loaded through ComfyUI's own
    detection, as UNETLoader loads a file."""
    import comfy.sd

    state = tiny_wan_state_dict(seed) if state is None else state
    patcher = comfy.sd.load_diffusion_model_state_dict(state, model_options=model_options or {})
    if patcher is None:
        raise RuntimeError("ComfyUI did not detect the tiny Wan state dict")
    return patcher


#: UNETLoader's weight_dtype options -> the model_options it passes ComfyUI's loader.
WEIGHT_DTYPES = {"bf16": {"dtype": torch.bfloat16}, "fp8_e4m3fn": {"dtype": torch.float8_e4m3fn},
                 "fp8_e5m2": {"dtype": torch.float8_e5m2},
                 "fp8_e4m3fn_fast": {"dtype": torch.float8_e4m3fn, "fp8_optimizations": True}}


def load_tiny_wan_as(weights: str):
    """A tiny Wan loaded as UNETLoader loads it with weight_dtype ``weights`` (a key of ``WEIGHT_DTYPES``), or for
    "scaled fp8 file" the tiny scaled-fp8 Wan 2.2 expert, as the official ``*_fp8_scaled`` files load."""
    if weights == "scaled fp8 file":
        return load_tiny_wan(state=tiny_wan22_expert_state_dict("high"))
    return load_tiny_wan(model_options=dict(WEIGHT_DTYPES[weights]))

class LookupTextEncoder:
    """What Pair Encoder calls of a CLIP (``tokenize``, ``encode_from_tokens_scheduled``), with the real tokenizer
    and, in place of the UMT5 transformer, a table: each token's row is drawn by NumPy from its id (PCG64 and the
    ziggurat normal give the same bits on every machine); rows after the end token (2 for the pile-T5 tokenizer) are
    zeros.

    Why: ComfyUI runs the text encoder in float32, whose last bits differ by CPU kernel (AVX2 against AVX-512). On
    the tiny models a concept's difference is 0.4 % of the text embedding's norm, so those bits move the Unlearning
    Check's figures: by up to 0.017 between two machines through the contrastive solve before it was made exact
    (2026-12-01), by 2e-4 since; a recording compared at 1e-5 needs less, and a lookup has no arithmetic to round.
    """

    def __init__(self, clip, rows: int = 512, width: int = 4096, end: int = 2):
        self.clip, self.rows, self.width, self.end = clip, rows, width, end
        self._table: dict[int, torch.Tensor] = {}

    def tokenize(self, text: str):
        return self.clip.tokenize(text)

    def _row(self, token: int) -> torch.Tensor:
        import numpy as np

        if token not in self._table:
            self._table[token] = torch.from_numpy(np.random.default_rng(token).standard_normal(self.width)
                                                  .astype(np.float32))
        return self._table[token]

    def encode_from_tokens_scheduled(self, tokens):
        (ids,) = [[int(t[0]) for t in batch] for batch in next(iter(tokens.values()))]
        out = torch.zeros(1, self.rows, self.width)
        for row, token in enumerate(ids[:self.rows]):
            out[0, row] = self._row(token)
            if token == self.end:
                break
        return [[out, {"pooled_output": None}]]


def with_text_lora(model, scale: float = 0.05, seed: int = 7):
    """A clone of a tiny Wan with a rank-2 LoRA (``LoRAAdapter``, as ComfyUI's LoRA loader adds it) on every
    block's text-side ``cross_attn.k`` and ``cross_attn.v``: the layers the pack's default edit changes."""
    from comfy.weight_adapter import LoRAAdapter

    generator = torch.Generator().manual_seed(seed)
    diffusion = model.model.diffusion_model
    patches = {}
    for index in range(len(diffusion.blocks)):
        for name in ("k", "v"):
            out, width = diffusion.blocks[index].cross_attn.get_submodule(name).weight.shape
            up = torch.randn(out, 2, generator=generator) * scale
            down = torch.randn(2, width, generator=generator)
            patches[f"diffusion_model.blocks.{index}.cross_attn.{name}.weight"] = LoRAAdapter(
                set(), (up, down, None, None, None, None))
    clone = model.clone()
    assert set(clone.add_patches(patches, 1.0)) == set(patches)
    return clone


def tiny_wan_gguf_twins(layers: list[str], qtype: str, seed: int = 0):
    """Two tiny Wans: one whose ``layers`` hold GGUF-packed weights (``qtype``), and its float twin, whose same layers
    hold the decoded values. Every other weight is equal."""
    packed, twin = load_tiny_wan(seed), load_tiny_wan(seed)
    for layer in layers:
        module = packed.model.diffusion_model.get_submodule(layer)
        module.weight = torch.nn.Parameter(packed_like_gguf(module.weight, qtype), requires_grad=False)
        twin.model.diffusion_model.get_submodule(layer).weight.data.copy_(decoded_gguf(module.weight))
    return packed, twin
