"""Node-level performance on the real ComfyUI host (a benchmark, not a test; ratios in one process).

1. Sampling with the patched model vs. the base model (same seed, steps, size): the edit is folded
   into the weights, so the ratio should be 1 (target <= 1.02).
2. Collect Activations + fit for 5 pairs vs. one generation at the same size and steps (target <= 1).
3. Apply Unlearning on a 40-block, 5120-wide Wan (the 14B layout): seconds and peak memory. The
   model is built on the meta device except the layers the edit reads, which hold random bf16
   weights (a full 14B model does not fit this machine's memory; the edit touches only those).

    python bench/nodes_perf.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "host"))


def setup_host():
    from comfy_host import find_comfyui

    comfy = find_comfyui()
    if comfy is None:
        raise SystemExit("no ComfyUI found ($COMFYUI_PATH, ../.., ~/ComfyUI): this benchmark needs the host")
    sys.path.insert(0, str(comfy))
    from comfy.cli_args import args

    args.cpu = True
    import importlib.util

    spec = importlib.util.spec_from_file_location("comfyui_video_unlearning", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_video_unlearning"] = module
    spec.loader.exec_module(module)


def medium_wan():
    """A Wan 2.1 with dim 256 and 4 blocks, loaded through ComfyUI's detection."""
    import torch

    import comfy.ops
    import comfy.sd
    from comfy.ldm.wan.model import WanModel

    torch.manual_seed(0)
    net = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, freq_dim=256, window_size=(-1, -1), qk_norm=True,
                   cross_attn_norm=True, eps=1e-6, operations=comfy.ops.manual_cast, dim=256, ffn_dim=1024, num_layers=4,
                   num_heads=2, in_dim=16, out_dim=16, text_dim=4096)
    state = {k: torch.randn(v.shape) * (0.02 if v.ndim > 1 else 0.1) for k, v in net.state_dict().items()}
    return comfy.sd.load_diffusion_model_state_dict(state)


def timed(fn, repeats, cpu_times=None):
    """Wall-clock seconds per call; with ``cpu_times`` also appends this process's CPU seconds per call,
    which other jobs on a shared machine disturb far less than the wall clock."""
    times = []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - cpu_start)
    return times


def sampling_and_collection(repeats: int) -> dict:
    import torch

    import comfy.model_management
    import nodes as comfy_nodes
    import tiny_models
    from comfyui_video_unlearning.nodes import definitions as d

    with torch.inference_mode():
        model, clip = medium_wan(), tiny_models.tiny_wan_clip()
        positive = clip.encode_from_tokens_scheduled(clip.tokenize("a Rolex watch on a table"))
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        latent = {"samples": torch.zeros(1, 16, 3, 16, 16)}  # 9 frames of 128 x 128
        steps = 8
        lines = (ROOT / "workflows" / "pairs" / "trademark_rolex.txt").read_text().splitlines()
        pairs = "\n".join([line for line in lines if "|" in line and not line.startswith("#")][:5])  # the paper's 5
        encoded = d.PairEncoder.execute(clip, pairs, "a dog in a park\na red car\na tree\na bowl of soup", "Rolex")[0]

        def generate(m):
            return comfy_nodes.common_ksampler(m, 3, steps, 5.0, "euler", "simple", positive, negative, latent)

        def collect_and_fit(layers, timesteps):
            acts = d.CollectActivations.execute(model, encoded, 128, 128, 9, timesteps, 0, layers, 0, -1, latent=latent)[0]
            return d.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]

        basis = collect_and_fit("all", "4")
        patched = d.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "safe_mean")[0]
        generate(model), generate(patched)  # warm up both (loading, patching)
        base_times, patched_times, base_cpu, patched_cpu, switch_to_patched = [], [], [], [], []
        for _ in range(repeats):  # interleaved, so drifting machine load hits both alike
            # Switching models re-bakes (or restores) the patched weights once per switch, not per step:
            # timed apart, so the ratio is the sampling itself.
            comfy.model_management.load_models_gpu([model])
            base_times += timed(lambda: generate(model), 1, base_cpu)
            switch_to_patched += timed(lambda: comfy.model_management.load_models_gpu([patched]), 1)
            patched_times += timed(lambda: generate(patched), 1, patched_cpu)
        text_side = timed(lambda: collect_and_fit("default", "4"), repeats)
        video_side = timed(lambda: collect_and_fit("all", "4"), repeats)
    one_generation = statistics.median(base_times)
    return {
        "size": "128x128x9 frames, 4-block dim-256 Wan, 8 steps, cfg 5",
        "generation_seconds": one_generation,
        "sampling_ratio_patched_over_base": statistics.median(patched_times) / one_generation,
        "sampling_cpu_time_ratio_patched_over_base": statistics.median(patched_cpu) / statistics.median(base_cpu),
        "switch_base_to_patched_seconds": statistics.median(switch_to_patched),
        "collect_fit_text_side_seconds": statistics.median(text_side),
        "collect_fit_text_side_over_generation": statistics.median(text_side) / one_generation,
        "collect_fit_all_layers_4_timesteps_seconds": statistics.median(video_side),
        "collect_fit_all_layers_4_timesteps_over_generation": statistics.median(video_side) / one_generation,
    }


def apply_on_14b_layout() -> dict:
    """Runs in its own interpreter so that the peak resident memory is its own."""
    import torch

    import comfy.model_patcher
    import comfy.supported_models
    from comfyui_video_unlearning.core.refusal import RefusalFitter
    from comfyui_video_unlearning.nodes.patching import apply_unlearning

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    unet = {"image_model": "wan2.1", "model_type": "t2v", "dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40,
            "in_dim": 16, "out_dim": 16, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
            "cross_attn_norm": True, "eps": 1e-6}
    config = comfy.supported_models.WAN21_T2V(unet)
    config.set_inference_dtype(torch.bfloat16, None)
    model = config.get_model({}, device="meta")
    layers = [f"blocks.{i}.cross_attn.{p}" for i in range(40) for p in ("k", "v")]
    generator = torch.Generator().manual_seed(0)
    for name in layers:  # only what the edit reads is materialised
        module = model.diffusion_model.get_submodule(name)
        module.weight = torch.nn.Parameter(torch.randn(module.weight.shape, generator=generator).to(torch.bfloat16) * 0.02,
                                           requires_grad=False)
        module.bias = torch.nn.Parameter(torch.zeros(module.bias.shape, dtype=torch.bfloat16), requires_grad=False)
    cpu = torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
    fitter = RefusalFitter()
    for name in layers:
        safe = torch.randn(10, 5120, generator=generator)
        fitter.update(name, safe + 0.1 * torch.randn(5120, generator=generator), safe)
    basis = fitter.fit(rank=4, model_family="wan")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.inference_mode():
        patched, edited = apply_unlearning(patcher, basis, strength=1.0, target="safe_mean")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    weights_mb = sum(model.diffusion_model.get_submodule(n).weight.numel() * 2 for n in layers) / 2**20
    patch_mb = sum(p[0][1].weights[0].numel() * 4 + p[0][1].weights[1].numel() * 4 for k, p in patched.patches.items()
                   if k.endswith(".weight")) / 2**20
    return {"layers_edited": len(edited), "apply_seconds": seconds, "edited_weights_bf16_mb": weights_mb,
            "patch_tensors_mb": patch_mb, "apply_peak_rss_increase_mb": (peak - before) / 1024,
            "process_peak_rss_mb": peak / 1024, "baseline_rss_mb": baseline / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "bench_nodes_perf.json")
    parser.add_argument("--skip-apply", action="store_true", help="skip the 14B-layout Apply Unlearning measurement")
    args = parser.parse_args()
    setup_host()
    sampling = sampling_and_collection(args.repeats)
    if args.skip_apply:
        print(json.dumps(sampling, indent=1))
        return
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import json, nodes_perf; nodes_perf.setup_host(); "
            "print(json.dumps(nodes_perf.apply_on_14b_layout()))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    apply = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"generation ({sampling['size']}): {sampling['generation_seconds']:.2f}s")
    print(f"sampling time patched / base (wall clock):             {sampling['sampling_ratio_patched_over_base']:.3f}")
    print(f"sampling time patched / base (process CPU time):       {sampling['sampling_cpu_time_ratio_patched_over_base']:.3f}")
    print(f"switching base -> patched (re-bakes the edited layers): {sampling['switch_base_to_patched_seconds']:.3f}s once")
    print(f"collect + fit, 5 pairs, text-side layers / generation:  {sampling['collect_fit_text_side_over_generation']:.3f}")
    print(f"collect + fit, 5 pairs, all layers x 4 steps / gen.:    {sampling['collect_fit_all_layers_4_timesteps_over_generation']:.3f}")
    print(f"Apply Unlearning, 40 blocks x 5120 (k+v, {apply['layers_edited']} layers): {apply['apply_seconds']:.1f}s, "
          f"peak RSS +{apply['apply_peak_rss_increase_mb']:.0f} MB over {apply['edited_weights_bf16_mb']:.0f} MB of edited weights; "
          f"patches {apply['patch_tensors_mb']:.1f} MB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"sampling": sampling, "apply_14b_layout": apply}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
