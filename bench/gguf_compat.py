"""The pack on GGUF models (a benchmark, not a test): the real ComfyUI-GGUF end to end, and the cost at real size.

ComfyUI-GGUF (city96/ComfyUI-GGUF) is on no registry, so CI cannot install it; ``tests/host/test_gguf_weights.py``
runs the pack's weight reads on GGUF blocks held as ComfyUI-GGUF holds them. This script runs the real pack, from a
checkout you point it at (``--comfyui-gguf PATH`` or ``$COMFYUI_GGUF_PATH``; nothing of it is copied here):

1. Per block format: a small Wan 2.1 (``host_models.medium_wan``: dim 256, 4 blocks) written as a GGUF file (2-D weights in the format, the rest F32, as its converter
   does), loaded by its ``UnetLoaderGGUF``, against a float twin whose every weight is the file's decoded value.
   Figures: the refusal vector (Collect Activations + Low-Rank Refusal Vector) on the GGUF model against the twin's;
   what survives of the removed direction, |W' d| / |W d|, in ComfyUI-GGUF's own forward after Apply Unlearning, with
   the model loaded whole and partially (lowvram, forced); a short generation, GGUF-edited against twin-edited; the
   change a second Apply makes; Unlearning Check's table, GGUF against twin.
2. ``--real-size``: Apply Unlearning on the 80 text-side k/v layers of the Wan 14B layout (5120 wide), bf16 weights
   against Q8_0 and Q4_0 blocks (built on the meta device but for those layers, as ``bench/nodes_perf.py``); seconds
   in one process, and the seconds to decode one layer.

    python bench/gguf_compat.py --comfyui-gguf ~/ComfyUI/custom_nodes/ComfyUI-GGUF [--real-size]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from nodes_perf import NEUTRAL, rolex_pairs, setup_host  # noqa: E402

HELD_OUT = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5))
BENIGN = "a cat on a sofa\na boat on a lake\na bird in the sky\na train at a station\nsnow in a forest"


def import_comfyui_gguf(path: Path):
    spec = importlib.util.spec_from_file_location("ComfyUI_GGUF", path / "__init__.py",
                                                  submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["ComfyUI_GGUF"] = module
    spec.loader.exec_module(module)
    return sys.modules["ComfyUI_GGUF.nodes"]


def write_gguf(state: dict, path: str, qtype: str) -> None:
    """``state`` as a GGUF file with architecture "wan": 2-D weights whose rows split into blocks in ``qtype``, the
    rest F32; tensors of more than 4 dimensions stored flat with ComfyUI-GGUF's ``orig_shape`` key."""
    import gguf

    writer = gguf.GGUFWriter(path=None, arch="wan")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, tensor in state.items():
        data = tensor.float().numpy()
        kind = gguf.GGMLQuantizationType.F32
        if data.ndim == 2 and data.shape[-1] % 32 == 0 and data.size >= 1024:
            kind = getattr(gguf.GGMLQuantizationType, qtype)
        if data.ndim > 4:
            writer.add_array(f"comfy.gguf.orig_shape.{key}", tuple(int(d) for d in data.shape))
            data = data.reshape(data.shape[0], -1)
        writer.add_tensor(key, gguf.quants.quantize(data, kind), raw_dtype=kind)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@contextlib.contextmanager
def partial_loading():
    """ComfyUI's partial loading (lowvram: weights cast and patched per forward), which the CPU never chooses."""
    import comfy.model_management as mm

    original = mm.LoadedModel.model_load
    mm.LoadedModel.model_load = lambda self, lowvram_model_memory=0, force_patch_weights=False: original(
        self, 0.1, force_patch_weights)
    mm.unload_all_models()
    try:
        yield
    finally:
        mm.LoadedModel.model_load = original
        mm.unload_all_models()


def surviving_direction(model, twin, basis) -> float:
    """Largest |W' d| / |W d| over the edited layers, W' as the MODEL's own forward computes with it."""
    import torch

    import comfy.model_management as mm

    mm.load_models_gpu([model])
    worst = 0.0
    for layer in basis.layers:
        module = model.model.diffusion_model.get_submodule(layer)
        d = basis.subspace(layer)[:, 0]
        x = torch.randn(3, 1, d.shape[0], generator=torch.Generator().manual_seed(0))
        change = (module(x + 3 * d) - module(x)).norm() / 3
        worst = max(worst, float(change / (twin.model.diffusion_model.get_submodule(layer).weight @ d).norm()))
    mm.unload_all_models()
    return worst


def end_to_end(gguf_nodes, qtype: str, folder: str) -> dict:
    import torch

    import comfy.model_management as mm
    import comfy.sd
    import folder_paths
    import nodes as comfy_nodes
    from comfyui_video_unlearning.nodes import check, definitions as d
    from comfyui_video_unlearning.nodes.packed_weights import is_packed, unpacked_weight
    from host_models import medium_wan, tiny_wan_clip

    write_gguf(medium_wan().model.diffusion_model.state_dict(), os.path.join(folder, f"wan_{qtype}.gguf"), qtype)
    folder_paths.add_model_folder_path("diffusion_models", folder, is_default=True)
    model = gguf_nodes.UnetLoaderGGUF().load_unet(f"wan_{qtype}.gguf")[0]
    state = {name: unpacked_weight(p) if is_packed(p) else p.as_subclass(torch.Tensor).detach().float().clone()
             for name, p in model.model.diffusion_model.named_parameters()}
    twin = comfy.sd.load_diffusion_model_state_dict(state)
    clip = tiny_wan_clip()
    encoded = d.PairEncoder.execute(clip, rolex_pairs(), NEUTRAL, "Rolex")[0]
    collected = [d.CollectActivations.execute(m, encoded, 64, 64, 1, "2", 0, "default", 0, -1)[0]
                 for m in (model, twin)]
    vectors = [d.RefusalVectorNode.execute(c, "cpca", 4, 1.0)[0] for c in collected]
    result = {"vector_max_abs_difference": max(float((vectors[0].subspace(l) - vectors[1].subspace(l)).abs().max())
                                               for l in vectors[0].layers)}
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a Rolex watch on a table"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))

    def generate(m):
        latent = {"samples": torch.zeros(1, 16, 2, 8, 8)}
        return comfy_nodes.common_ksampler(m, 3, 3, 2.0, "euler", "simple", positive, negative, latent)[0]["samples"]

    for target in ("zero", "safe_mean"):
        edited, edited_twin = (d.ApplyUnlearning.execute(m, v, 1.0, True, "all in vector", 0, -1, target)[0]
                               for m, v in zip((model, twin), vectors))
        mm.unload_all_models()
        whole = surviving_direction(edited, twin, vectors[0])
        with partial_loading():
            partial = surviving_direction(edited, twin, vectors[0])
        ours, theirs = generate(edited), generate(edited_twin)
        twice = d.ApplyUnlearning.execute(edited, vectors[0], 1.0, True, "all in vector", 0, -1, target)[0]
        result[target] = {"surviving_whole_load": whole, "surviving_partial_load": partial,
                          "generation_vs_twin": float((ours - theirs).norm() / theirs.norm()),
                          "edit_moves_generation": float((ours - generate(model)).norm() / ours.norm()),
                          "second_apply_moves_generation": float((generate(twice) - ours).norm() / ours.norm())}
    validation = d.PairEncoder.execute(clip, HELD_OUT, BENIGN, "Rolex")[0]
    runs = [check.UnlearningCheck.execute(m, v, "0, 0.5, 1, 2", "default", 0, -1, "safe_mean", "none", 64, 64, 1,
                                          "0.1, 0.4", 0, validation_pairs=validation)
            for m, v in zip((model, twin), vectors)]
    summaries = [run.ui["video_unlearning_check"][0] for run in runs]
    result["check_recommended"] = [s["strength"] for s in summaries]
    result["check_removed_and_collateral"] = [(s["removed"], s["collateral"]) for s in summaries]
    return result


def real_size(qtypes: list[str]) -> dict:
    """Apply Unlearning on the 14B layout's 80 k/v layers: bf16 weights, then the same weights as GGUF blocks."""
    import torch

    import comfy.model_patcher
    from comfyui_video_unlearning.nodes.packed_weights import unpacked_weight
    from comfyui_video_unlearning.nodes.patching import apply_unlearning, weights_fingerprint
    from host_models import packed_like_gguf
    from nodes_perf import wan_14b_layout

    model, layers, fitter = wan_14b_layout()
    bf16 = {name: model.diffusion_model.get_submodule(name).weight.data for name in layers}
    cpu = torch.device("cpu")
    out = {}
    for kind in ["bf16", *qtypes]:
        for name in layers:
            weight = bf16[name] if kind == "bf16" else packed_like_gguf(bf16[name], kind)
            model.diffusion_model.get_submodule(name).weight = torch.nn.Parameter(weight, requires_grad=False)
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
        basis = fitter.fit(rank=4, model_family="wan", model_fingerprint=weights_fingerprint(patcher, layers))
        with torch.inference_mode():
            start = time.perf_counter()
            apply_unlearning(patcher, basis, strength=1.0, target="safe_mean")
            out[f"apply_seconds_{kind}"] = time.perf_counter() - start
            if kind != "bf16":
                start = time.perf_counter()
                unpacked_weight(model.diffusion_model.get_submodule(layers[0]).weight)
                out[f"decode_one_layer_seconds_{kind}"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui-gguf", default=os.environ.get("COMFYUI_GGUF_PATH"),
                        help="a checkout of city96/ComfyUI-GGUF (default $COMFYUI_GGUF_PATH)")
    parser.add_argument("--qtypes", nargs="+", default=["Q8_0", "Q4_0", "BF16"])
    parser.add_argument("--real-size", action="store_true", help="also time Apply on the Wan 14B layout's k/v layers")
    args = parser.parse_args()
    if not args.comfyui_gguf and not args.real_size:
        raise SystemExit("give --comfyui-gguf PATH (a checkout of city96/ComfyUI-GGUF) and/or --real-size")
    setup_host()
    import torch

    report = {"threads": torch.get_num_threads()}
    with torch.inference_mode():
        if args.comfyui_gguf:
            gguf_nodes = import_comfyui_gguf(Path(args.comfyui_gguf).expanduser())
            with tempfile.TemporaryDirectory() as folder:
                report["end_to_end"] = {qtype: end_to_end(gguf_nodes, qtype, folder) for qtype in args.qtypes}
        if args.real_size:
            report["real_size"] = real_size([q for q in args.qtypes if q != "BF16"])
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
