"""fp8 edits under a newer ComfyUI's model management: dynamic VRAM loading and clones over another model.

A newer ComfyUI (on NVIDIA, by default since about May 2026) loads a model through ``ModelPatcherDynamic``: its
modules keep the file's tensors and record the dtype the model is loaded in (``weight_comfy_model_dtype``; a
``weight_dtype`` fp8 load of a bf16 file keeps bf16 there), a layer's patch becomes its ``weight_lowvram_function``
(``bias_lowvram_function``), run in the forward at compute dtype before the weight wrappers, and the patched value is
re-quantised and written back to the copy the GPU keeps, which later forwards use without the patch. It also clones
a MODEL over another copy of its model (``clone(model_override=...)``) for conditioning with hooks. Found by reading
Comfy-Org/ComfyUI (``model_patcher.py`` 08d0e51: ``ModelPatcherDynamic.load``; ``ops.py`` 0271a46:
``resolve_cast_module_with_vbar``); :func:`dynamic_load` and :func:`dynamic_forward` are those steps as that code takes
them for one layer, over ComfyUI 0.3.64's own ``LowVramPatch``. A newer ComfyUI itself is not run here.
"""

from __future__ import annotations

import pytest
import torch

from tests.host.test_nodes_inprocess import encoded, nodes  # noqa: F401  (the same fixtures: the nodes, the pairs)

pytestmark = pytest.mark.usefixtures("inference_mode")
FP8 = torch.float8_e4m3fn


def dynamic_load(patcher) -> None:
    """What ``ModelPatcherDynamic.load`` leaves on each patched or wrapped parameter (``setup_param``), then its
    ``ON_LOAD`` callbacks; nothing is baked into the modules."""
    from comfy.model_patcher import LowVramPatch
    from comfy.patcher_extension import CallbacksMP

    diffusion = patcher.model.diffusion_model
    for key in set(patcher.patches) | set(patcher.weight_wrapper_patches):
        layer, parameter = key[len("diffusion_model."):].rsplit(".", 1)
        module = diffusion.get_submodule(layer)
        lowvram = LowVramPatch(key, patcher.patches) if key in patcher.patches else None
        setattr(module, f"{parameter}_lowvram_function", lowvram)
        setattr(module, f"{parameter}_function", list(patcher.weight_wrapper_patches.get(key, [])))
    for callback in patcher.get_all_callbacks(CallbacksMP.ON_LOAD):
        callback(patcher, torch.device("cpu"), 0, False, False)


def dynamic_forward(module, parameter: str, seed_key: str, written_back: bool) -> torch.Tensor:
    """The ``parameter`` a forward computes with (float32): the module's tensor cast to the model's dtype, the patch
    (the first forward), then the wrappers; ``written_back``: a later forward, which reads the patched value as it was
    re-quantised (stochastic rounding seeded by the layer's name) and skips the patch."""
    import comfy.float
    from comfy.model_patcher import string_to_seed  # comfy.utils.string_to_seed in a newer ComfyUI

    stored = getattr(module, parameter)
    model_dtype = getattr(module, f"{parameter}_comfy_model_dtype", None) or stored.dtype
    value = getattr(module, f"{parameter}_lowvram_function")(stored.to(model_dtype).float())
    if written_back:
        value = comfy.float.stochastic_rounding(value, model_dtype, seed=string_to_seed(seed_key)).float()
    for function in getattr(module, f"{parameter}_function"):
        value = function(value)
    return value


def loaded_as(tiny, kind: str):
    """The tiny Wan as dynamic VRAM holds it: "fp8 file" (the module holds fp8, as the file does) or "weight_dtype fp8"
    (a float file loaded with weight_dtype fp8_e4m3fn: the module keeps the file's values and records fp8)."""
    if kind == "fp8 file":
        return tiny.load_tiny_wan_as("fp8_e4m3fn")
    model = tiny.load_tiny_wan()
    for module in model.model.diffusion_model.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight_comfy_model_dtype = module.bias_comfy_model_dtype = FP8
    return model


@pytest.mark.parametrize("kind", ["fp8 file", "weight_dtype fp8"])
def test_an_fp8_edit_under_dynamic_vram_runs_exact_in_the_first_forward_and_the_later_ones(nodes, encoded, tiny,
                                                                                             kind):
    """Target safe_mean on fp8 layers loaded by dynamic VRAM. An fp8 file's bias got its change twice (the bias
    wrapper's correction, read from the module that keeps the unpatched bias, equalled the change: 1.0 of it off).
    A float file loaded as fp8 looked like a float32 layer: no wrapper, the direction kept at the rounding of its
    re-quantised weight, the bias change rounded, and a fingerprint of the file's float values where ComfyUI 0.3.64
    fingerprints the fp8 ones. Now both run the exact edit, first forward and later ones, and fingerprint as on
    0.3.64."""
    import comfy.lora
    from comfyui_video_unlearning.nodes.fp8_edits import ExactBias, RemoveSubspace
    from comfyui_video_unlearning.nodes.patching import weights_fingerprint

    model = loaded_as(tiny, kind)
    activations = nodes.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    vector = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    assert vector.model_fingerprint == weights_fingerprint(tiny.load_tiny_wan_as("fp8_e4m3fn"), vector.layers)
    edited = nodes.ApplyUnlearning.execute(model, vector, 1.0, True, "all in vector", 0, -1, "safe_mean")[0]
    for layer in vector.layers:
        wrappers = [*edited.weight_wrapper_patches.get(f"diffusion_model.{layer}.weight", []),
                    *edited.weight_wrapper_patches.get(f"diffusion_model.{layer}.bias", [])]
        assert {type(w) for w in wrappers} == {RemoveSubspace, ExactBias}, (layer, wrappers)
    dynamic_load(edited)
    for layer in vector.layers:
        module, u = edited.model.diffusion_model.get_submodule(layer), vector.subspace(layer)
        reach = float((module.weight.to(FP8).float() @ u).norm())
        key = f"diffusion_model.{layer}.bias"
        exact_bias = comfy.lora.calculate_weight(edited.patches[key], module.bias.to(FP8).float(), key)
        change = float(edited.patches[key][-1][1][1][0].norm())  # the ("diff", (delta,)) patch Apply added
        for written_back in (False, True):
            kept = float((dynamic_forward(module, "weight", layer, written_back) @ u).norm()) / reach
            bias_off = float((dynamic_forward(module, "bias", layer, written_back) - exact_bias).norm()) / change
            assert kept < 1e-5 and bias_off < 1e-5, (layer, written_back, kept, bias_off)


def test_wrappers_cloned_over_another_copy_of_the_model_follow_its_layers(nodes, encoded, tiny):
    """A MODEL cloned over another copy of its model (a newer ComfyUI's ``clone(model_override=...)``, made here by
    putting the other copy into a clone) carries the fp8 wrappers made for the first copy's layers. Loaded, the bias
    wrapper read its correction from the first copy's bias, unbaked: the second copy's layers got the bias change
    twice. Each wrapper is now made again for the layers of the model that loads."""
    import comfy.lora
    import comfy.model_management as mm
    import comfy.ops

    model = tiny.load_tiny_wan_as("fp8_e4m3fn")
    activations = nodes.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    vector = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    edited = nodes.ApplyUnlearning.execute(model, vector, 1.0, True, "all in vector", 0, -1, "safe_mean")[0]
    other = edited.clone()
    other.model = tiny.load_tiny_wan_as("fp8_e4m3fn").model
    stored = {layer: other.model.diffusion_model.get_submodule(layer).bias.float().clone() for layer in vector.layers}
    mm.load_models_gpu([other])
    try:
        for layer in vector.layers:
            key, module = f"diffusion_model.{layer}.bias", other.model.diffusion_model.get_submodule(layer)
            _, running = comfy.ops.cast_bias_weight(module, torch.zeros(1, 1, module.weight.shape[1]))
            reference = comfy.lora.calculate_weight(other.patches[key], stored[layer].clone(), key)
            change = other.patches[key][-1][1][1][0]
            assert float((running.float() - reference).norm() / change.norm()) < 1e-6, layer
            for wrapper in other.weight_wrapper_patches[f"diffusion_model.{layer}.weight"]:
                assert wrapper.module() is module, layer
    finally:
        mm.unload_all_models()
