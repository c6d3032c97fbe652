"""The Unlearning Check's cost against one generation on the real-size models, counted in FLOPs (a benchmark).

A CPU here can run the families only at toy sizes (``bench/family_check_perf.py``), where a 64x64x1 check latent
and a 128x128x9 generation are about the same amount of work and per-call overheads weigh. What a user runs is a
real model at the shipped workflows' size. So this records the model calls the check really makes (the node's code
on the medium model of each family, ``bench/family_check_perf.py``'s setup, as the shipped workflows run it: 5
validation pairs, 12 benign prompts, the sampler's negative prompt, 9 strengths, one timestep at 64x64x1), the calls
one generation step makes, and replays every call's tensor shapes on the family's real configuration built on the
meta device (no weights, no arithmetic), under ``torch.utils.flop_counter.FlopCounterMode``. A generation is 30
steps at 832x480x33 frames (the Wan 2.1 workflow's KSampler and latent), cfg > 1 (two rows per step).

Real configurations (``REAL``): Wan 2.1 14B and 1.3B (ComfyUI's detection of the released files), HunyuanVideo
13B, LTX-Video 2B (0.9.x), Mochi 1 preview 10B (detection's constants), Cosmos Predict2 2B, Cosmos 1.0 7B and 14B
(what ComfyUI's detection configures for the released widths, 4096 and 5120).

    python bench/family_check_flops.py [--families wan hunyuan_video ltxv mochi cosmos_predict2 cosmos1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import nodes_perf  # noqa: E402  (setup_host)
from family_check_perf import FAMILIES, Prepared  # noqa: E402
from host_models import tiny_wan_clip, zero_padded  # noqa: E402

_WAN = {"image_model": "wan2.1", "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
        "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16, "out_dim": 16, "text_len": 512, "text_dim": 4096,
        "model_type": "t2v"}
#: Cosmos 1.0 as ComfyUI's detection configures every release (model_detection.py); the text is 1024 wide.
_COSMOS1 = {"image_model": "cosmos", "max_img_h": 240, "max_img_w": 240, "max_frames": 128, "in_channels": 16,
            "out_channels": 16, "patch_spatial": 2, "patch_temporal": 1, "block_config": "FA-CA-MLP",
            "concat_padding_mask": True, "pos_emb_cls": "rope3d", "pos_emb_learnable": False,
            "pos_emb_interpolation": "crop", "block_x_format": "THWBD", "affline_emb_norm": True,
            "use_adaln_lora": True, "adaln_lora_dim": 256, "extra_per_block_abs_pos_emb": True,
            "extra_per_block_abs_pos_emb_type": "learnable"}
#: family -> [(label, ComfyUI model config class, unet config)] of the released models.
REAL = {
    "wan": [("Wan 2.1 14B", "WAN21_T2V", {**_WAN, "dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40}),
            ("Wan 2.1 1.3B", "WAN21_T2V", {**_WAN, "dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30})],
    "hunyuan_video": [("HunyuanVideo 13B", "HunyuanVideo", {
        "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768,
        "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 20,
        "depth_single_blocks": 40, "axes_dim": [16, 56, 56], "theta": 256, "patch_size": [1, 2, 2], "qkv_bias": True,
        "guidance_embed": True, "byt5": False, "meanflow": False})],
    "ltxv": [("LTX-Video 2B", "LTXV", {"image_model": "ltxv", "num_layers": 28, "attention_head_dim": 64,
                                      "num_attention_heads": 32, "cross_attention_dim": 2048, "caption_channels": 4096,
                                      "in_channels": 128, "out_channels": 128})],
    "mochi": [("Mochi 1 preview 10B", "GenmoMochi", {
        "image_model": "mochi_preview", "depth": 48, "patch_size": 2, "num_heads": 24, "hidden_size_x": 3072,
        "hidden_size_y": 1536, "mlp_ratio_x": 4.0, "mlp_ratio_y": 4.0, "learn_sigma": False, "in_channels": 12,
        "qk_norm": True, "qkv_bias": False, "out_bias": True, "attn_drop": 0.0, "patch_embed_bias": True,
        "posenc_preserve_area": True, "timestep_mlp_bias": True, "attend_to_padding": False,
        "timestep_scale": 1000.0, "use_t5": True, "t5_feat_dim": 4096, "t5_token_length": 256,
        "rope_theta": 10000.0})],
    "cosmos_predict2": [("Cosmos Predict2 2B", "CosmosT2IPredict2", {
        "image_model": "cosmos_predict2", "max_img_h": 240, "max_img_w": 240, "max_frames": 128, "in_channels": 16,
        "out_channels": 16, "patch_spatial": 2, "patch_temporal": 1, "model_channels": 2048,
        "concat_padding_mask": True, "crossattn_emb_channels": 1024, "pos_emb_cls": "rope3d",
        "pos_emb_learnable": True, "pos_emb_interpolation": "crop", "min_fps": 1, "max_fps": 30,
        "use_adaln_lora": True, "adaln_lora_dim": 256, "num_blocks": 28, "num_heads": 16})],
    "cosmos1": [("Cosmos 1.0 7B", "CosmosT2V", {
        **_COSMOS1, "model_channels": 4096, "num_blocks": 28, "num_heads": 32, "rope_h_extrapolation_ratio": 1.0,
        "rope_w_extrapolation_ratio": 1.0, "rope_t_extrapolation_ratio": 2.0}),
                ("Cosmos 1.0 14B", "CosmosT2V", {
        **_COSMOS1, "model_channels": 5120, "num_blocks": 36, "num_heads": 40, "rope_h_extrapolation_ratio": 2.0,
        "rope_w_extrapolation_ratio": 2.0, "rope_t_extrapolation_ratio": 2.0, "extra_h_extrapolation_ratio": 2.0,
        "extra_w_extrapolation_ratio": 2.0, "extra_t_extrapolation_ratio": 2.0})],
}
GENERATION = {"width": 832, "height": 480, "length": 33, "steps": 30, "rows_per_step": 2}


class CallLog:
    """The diffusion model's calls (args and kwargs) while recording, through a forward pre-hook."""

    def __init__(self, module):
        self.calls, self.recording = [], False
        module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs):
        if self.recording:
            self.calls.append((args, dict(kwargs)))


def meta_like(value):
    """Tensors as meta tensors of the same shape and dtype; transformer_options dropped (hooks, patches); the rest
    as is."""
    import torch

    if isinstance(value, torch.Tensor):
        return torch.zeros(value.shape, dtype=value.dtype, device="meta")
    if isinstance(value, (list, tuple)):
        return type(value)(meta_like(v) for v in value)
    return value


def call_flops(model, args, kwargs) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    kwargs = {k: meta_like(v) for k, v in kwargs.items() if k not in ("transformer_options", "control")}
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(*meta_like(args), **kwargs)
    return counter.get_total_flops()


def with_latent(args, kwargs, shape):
    """The call with its latent ``x`` (the first argument) of ``shape`` (batch kept)."""
    import torch

    x = args[0]
    return (torch.zeros((x.shape[0], *shape[1:]), dtype=x.dtype),) + tuple(args[1:]), kwargs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "bench_family_check_flops.json")
    args = parser.parse_args()
    nodes_perf.setup_host()
    from comfy.cli_args import args as comfy_args

    comfy_args.use_pytorch_cross_attention = True  # ComfyUI's CPU default (sub-quadratic) asks the device for memory

    import torch

    import comfy.supported_models
    import nodes as comfy_nodes
    from comfyui_video_unlearning.nodes.collect import empty_latent

    report = {"generation": GENERATION, "check": "64x64x1, 5 validation pairs, 12 benign prompts, the negative "
              "prompt, 9 strengths, one timestep", "models": {}}
    with torch.inference_mode():
        clip = zero_padded(tiny_wan_clip())
        for family in args.families:
            prepared = Prepared(family, clip)
            model = prepared.model
            log = CallLog(model.model.diffusion_model)
            log.recording = True
            prepared.check()
            check_calls, log.calls = log.calls, []
            latent = {"samples": empty_latent(model, 64, 64, 9)}
            comfy_nodes.common_ksampler(model, 3, 1, 5.0, "euler", "simple", prepared.positive, prepared.negative,
                                        latent)
            step_calls, log.recording = log.calls, False
            big = empty_latent(model, GENERATION["width"], GENERATION["height"], GENERATION["length"]).shape
            for label, config_class, unet in REAL[family]:
                real = getattr(comfy.supported_models, config_class)(dict(unet)).get_model({}, device="meta")
                diffusion = real.diffusion_model
                params = sum(p.numel() for p in diffusion.parameters())
                check = sum(call_flops(diffusion, a, k) for a, k in check_calls)
                step = sum(call_flops(diffusion, *with_latent(a, k, big)) for a, k in step_calls)
                rows = sum(a[0].shape[0] for a, _ in step_calls)
                generation = step * GENERATION["steps"] * GENERATION["rows_per_step"] / rows
                report["models"][label] = {
                    "family": family, "parameters": params, "check_model_calls": len(check_calls),
                    "check_rows": sum(a[0].shape[0] for a, _ in check_calls), "check_tflop": check / 1e12,
                    "generation_tflop": generation / 1e12, "check_over_generation": check / generation}
                print(f"{label} ({params / 1e9:.1f}B parameters): check {check / 1e12:.1f} TFLOP in "
                      f"{len(check_calls)} model calls; one generation {generation / 1e15:.2f} PFLOP; ratio "
                      f"{check / generation:.4f}")
                del real, diffusion
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
