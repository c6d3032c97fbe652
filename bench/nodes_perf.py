"""Node-level performance on the real ComfyUI host (a benchmark, not a test; ratios in one process).

1. Sampling with the patched model vs. the base model (same seed, steps, size): the edit is folded
   into the weights, so the ratio should be 1 (target <= 1.02).
2. Collect Activations + fit for 5 pairs vs. one generation at the same size and steps (target <= 1).
3. Apply Unlearning on a 40-block, 5120-wide Wan (the 14B layout, k+v: 80 layers): seconds (wall and CPU),
   peak memory, and precision |W' U| / |W U| on 8 of the layers, for the current route (W U computed where the
   weight lives, a chunk of rows at a time in float32) and the route before issue 11 (every edited weight
   copied whole to float32 on the CPU, product in float64); "exact" is W + up down in float64, "baked" the bf16
   weight ComfyUI's loader holds (calculate_weight, then stochastic rounding). The model is built on the meta
   device except the layers the edit reads, which hold random bf16 weights (a full 14B model does not fit this
   machine's memory; the edit touches only those).

    python bench/nodes_perf.py [--repeats 5] [--apply-only] [--skip-apply]
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from host_models import medium_wan, tiny_wan_clip  # noqa: E402,F401  (medium_wan: also used as nodes_perf.medium_wan)


#: The neutral prompts the host benches pass Pair Encoder beside the Rolex pairs.
NEUTRAL = "a dog in a park\na red car\na tree\na bowl of soup"


def rolex_pairs(count: int = 5) -> str:
    """The first ``count`` pairs of the shipped ``trademark_rolex.txt`` (5: the paper's minimum), as Pair Encoder's
    text."""
    lines = (ROOT / "workflows" / "pairs" / "trademark_rolex.txt").read_text().splitlines()
    return "\n".join([line for line in lines if "|" in line and not line.startswith("#")][:count])

def setup_host():
    from tools.comfyui_host import find_comfyui

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
    from comfyui_video_unlearning.nodes import definitions as d

    with torch.inference_mode():
        model, clip = medium_wan(), tiny_wan_clip()
        positive = clip.encode_from_tokens_scheduled(clip.tokenize("a Rolex watch on a table"))
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        latent = {"samples": torch.zeros(1, 16, 3, 16, 16)}  # 9 frames of 128 x 128
        steps = 8
        encoded = d.PairEncoder.execute(clip, rolex_pairs(), NEUTRAL, "Rolex")[0]

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


def wan_14b_layout():
    """The Wan 2.1 14B layout (40 blocks x 5120, bf16) built on the meta device except its 80 text-side k/v layers,
    which hold random bf16 weights and zero biases (only what the edit reads is materialised), and a fitter fed random
    pairs for those layers. Returns ``(model, layers, fitter)``; ``bench/gguf_compat.py`` uses it too."""
    import torch

    import comfy.supported_models
    from comfyui_video_unlearning.core.refusal import RefusalFitter

    unet = {"image_model": "wan2.1", "model_type": "t2v", "dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40,
            "in_dim": 16, "out_dim": 16, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
            "cross_attn_norm": True, "eps": 1e-6}
    config = comfy.supported_models.WAN21_T2V(unet)
    config.set_inference_dtype(torch.bfloat16, None)
    model = config.get_model({}, device="meta")
    layers = [f"blocks.{i}.cross_attn.{p}" for i in range(40) for p in ("k", "v")]
    generator = torch.Generator().manual_seed(0)
    for name in layers:
        module = model.diffusion_model.get_submodule(name)
        module.weight = torch.nn.Parameter(torch.randn(module.weight.shape, generator=generator).to(torch.bfloat16) * 0.02,
                                           requires_grad=False)
        module.bias = torch.nn.Parameter(torch.zeros(module.bias.shape, dtype=torch.bfloat16), requires_grad=False)
    fitter = RefusalFitter()
    for name in layers:
        safe = torch.randn(10, 5120, generator=generator)
        fitter.update(name, safe + 0.1 * torch.randn(5120, generator=generator), safe)
    return model, layers, fitter


def apply_on_14b_layout(old_route: bool = True) -> dict:
    """Runs in its own interpreter so that the peak resident memory is its own."""
    import torch

    import comfy.model_patcher
    from comfyui_video_unlearning.nodes.patching import apply_unlearning, weights_fingerprint

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model, layers, fitter = wan_14b_layout()
    cpu = torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
    # As from Collect Activations: the vector carries the weights' fingerprint, which Apply checks.
    basis = fitter.fit(rank=4, model_family="wan", model_fingerprint=weights_fingerprint(patcher, layers))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        patched, edited = apply_unlearning(patcher, basis, strength=1.0, target="safe_mean")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    weights_mb = sum(model.diffusion_model.get_submodule(n).weight.numel() * 2 for n in layers) / 2**20
    patch_mb = sum(p[0][1].weights[0].numel() * 4 + p[0][1].weights[1].numel() * 4 for k, p in patched.patches.items()
                   if k.endswith(".weight")) / 2**20
    sample = layers[::10]  # 8 layers for the precision figures
    result = {"layers_edited": len(edited), "apply_seconds": seconds, "apply_cpu_seconds": cpu_seconds,
              "edited_weights_bf16_mb": weights_mb, "patch_tensors_mb": patch_mb,
              "apply_peak_rss_increase_mb": (peak - before) / 1024, "process_peak_rss_mb": peak / 1024,
              "baseline_rss_mb": baseline / 1024, "threads": torch.get_num_threads(),
              "precision_layers": len(sample),
              "residual": _residuals(model, basis, sample, {k: patched.patches[k] for k in patched.patches})}
    if old_route:
        with torch.inference_mode():
            start, cpu_start = time.perf_counter(), time.process_time()
            old = {name: _old_route_edit(model, basis, name) for name in layers}
            result["old_route_seconds"] = time.perf_counter() - start
            result["old_route_cpu_seconds"] = time.process_time() - cpu_start
        result["old_route_residual"] = _residuals(model, basis, sample, {
            f"diffusion_model.{name}.weight": [(1.0, _lora(old[name]), 1.0, None, None)] for name in sample})
    return result


def _old_route_edit(model, basis, name):
    """The edit as Apply Unlearning computed it before issue 11: a float32 copy of W, the product in float64."""
    import torch

    from comfyui_video_unlearning.core.edit import project_edit

    weight = model.diffusion_model.get_submodule(name).weight.detach().to("cpu", torch.float32)
    return project_edit(weight, basis.subspace(name), 1.0, target=basis.target(name))


def _lora(edit):
    from comfy.weight_adapter import LoRAAdapter

    return LoRAAdapter(set(), (edit.up, edit.down, None, None, None, None))


def _residuals(model, basis, names, patches) -> dict:
    """Largest |W' U| / |W U| over ``names``: W' exact (float64 W + up down) and as ComfyUI's loader bakes it (bf16)."""
    import torch

    import comfy.float
    import comfy.lora
    from comfy.model_patcher import string_to_seed

    exact, baked = [], []
    for name in names:
        key = f"diffusion_model.{name}.weight"
        weight = model.diffusion_model.get_submodule(name).weight.detach()
        u = basis.subspace(name).double()
        reference = (weight.double() @ u).norm()
        adapter = patches[key][0][1]
        up, down = adapter.weights[0].double(), adapter.weights[1].double()
        exact.append(float((weight.double() @ u + up @ (down @ u)).norm() / reference))
        merged = comfy.lora.calculate_weight(patches[key], weight.to(torch.float32, copy=True), key)
        stored = comfy.float.stochastic_rounding(merged, weight.dtype, seed=string_to_seed(key))
        baked.append(float((stored.double() @ u).norm() / reference))
    return {"exact": max(exact), "baked_bf16": max(baked)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "bench_nodes_perf.json")
    parser.add_argument("--skip-apply", action="store_true", help="skip the 14B-layout Apply Unlearning measurement")
    parser.add_argument("--apply-only", action="store_true", help="only the 14B-layout Apply Unlearning measurement")
    parser.add_argument("--skip-old-route", action="store_true",
                        help="do not time the route before issue 11 (a float32 copy of every edited weight)")
    args = parser.parse_args()
    setup_host()
    out = {}
    if not args.apply_only:
        out["sampling"] = sampling = sampling_and_collection(args.repeats)
        print(f"generation ({sampling['size']}): {sampling['generation_seconds']:.2f}s")
        print(f"sampling time patched / base (wall clock):             {sampling['sampling_ratio_patched_over_base']:.3f}")
        print(f"sampling time patched / base (process CPU time):       {sampling['sampling_cpu_time_ratio_patched_over_base']:.3f}")
        print(f"switching base -> patched (re-bakes the edited layers): {sampling['switch_base_to_patched_seconds']:.3f}s once")
        print(f"collect + fit, 5 pairs, text-side layers / generation:  {sampling['collect_fit_text_side_over_generation']:.3f}")
        print(f"collect + fit, 5 pairs, all layers x 4 steps / gen.:    {sampling['collect_fit_all_layers_4_timesteps_over_generation']:.3f}")
    if not args.skip_apply:
        code = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import json, nodes_perf; nodes_perf.setup_host(); "
                f"print(json.dumps(nodes_perf.apply_on_14b_layout(old_route={not args.skip_old_route})))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out["apply_14b_layout"] = apply = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"Apply Unlearning, 40 blocks x 5120 (k+v, {apply['layers_edited']} layers, {apply['threads']} threads): "
              f"{apply['apply_seconds']:.2f}s wall, {apply['apply_cpu_seconds']:.2f}s CPU; peak RSS "
              f"+{apply['apply_peak_rss_increase_mb']:.0f} MB over {apply['edited_weights_bf16_mb']:.0f} MB of edited "
              f"weights; patches {apply['patch_tensors_mb']:.1f} MB")
        print(f"  |W' U| / |W U| (max of {apply['precision_layers']} layers): exact {apply['residual']['exact']:.2g}, "
              f"baked to bf16 {apply['residual']['baked_bf16']:.2g}")
        if "old_route_seconds" in apply:
            print(f"  route before issue 11 (float32 copy of each weight): {apply['old_route_seconds']:.2f}s wall, "
                  f"{apply['old_route_cpu_seconds']:.2f}s CPU; |W' U| / |W U| exact "
                  f"{apply['old_route_residual']['exact']:.2g}, baked to bf16 {apply['old_route_residual']['baked_bf16']:.2g}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(args.json.read_text()) if args.json.is_file() else {}  # a partial run keeps the other part
    args.json.write_text(json.dumps({**earlier, **out}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
