"""Quantised layers as a newer ComfyUI (about 0.8 on) holds them: a comfy-kitchen ``QuantizedTensor`` per weight.

ComfyUI 0.3.64, the host these tests run, holds an official ``*_fp8_scaled`` file's layers as fp8 weights with a
``scale_weight``. Later versions convert them on loading: the weight becomes a ``QuantizedTensor`` (fp8 elements and
their scale inside, ``.dtype`` the compute dtype), ``scale_weight`` is gone, ``convert_weight`` dequantises for a
patch and ``set_weight`` re-quantises the patched weight with a new scale; weight wrappers get the dequantised weight,
and with none the layer may multiply in fp8 (quantising its input) where the GPU can. :class:`KitchenLinear` is that
layer, written from reading Comfy-Org/ComfyUI's ``comfy/ops.py`` (``mixed_precision_ops``, ``cast_bias_weight``) at
0271a46, over comfy-kitchen's own tensor; it is swapped into the tiny scaled-fp8 Wan 2.2 expert, which 0.3.64's own
model management then loads and patches (its ``patch_weight_to_device`` calls the same ``convert_weight`` and
``set_weight``). A newer ComfyUI itself is not run here.
"""

from __future__ import annotations

import pytest
import torch

from tests.host.test_nodes_inprocess import encoded, nodes  # noqa: F401  (the same fixtures: the nodes, the pairs)

pytestmark = pytest.mark.usefixtures("inference_mode")
kitchen = pytest.importorskip("comfy_kitchen.tensor", reason="comfy-kitchen (a requirement of ComfyUI 0.8 and later) "
                              "is not installed: pip install comfy-kitchen")
LAYOUT = "TensorCoreFP8Layout"


class KitchenLinear(torch.nn.Module):
    """A scaled-fp8 linear layer as a newer ComfyUI holds it (see the module docstring). ``fp8_compute``: the layer
    multiplies in fp8 when nothing wraps it, as on a GPU with fp8 compute (each input rounded to fp8 with its own
    scale); ``products`` counts those."""

    comfy_cast_weights = True
    fp8_compute = False
    products = 0

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias.float(), requires_grad=False)
        self.weight_function, self.bias_function = [], []
        self.layout_type = LAYOUT
        self._full_precision_mm = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quantised_product = (self.fp8_compute and not self.weight_function and not self.bias_function
                             and not self._full_precision_mm and not getattr(self, "comfy_force_cast_weights", False))
        weight = self.weight.to(x.dtype).dequantize()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if quantised_product:
            type(self).products += 1
            x = kitchen.QuantizedTensor.from_float(x, LAYOUT).dequantize()
        for function in self.weight_function:
            weight = function(weight)
        for function in self.bias_function:
            bias = function(bias)
        return torch.nn.functional.linear(x, weight, bias)

    def convert_weight(self, weight, inplace=False, **kwargs):
        return weight.dequantize() if isinstance(weight, kitchen.QuantizedTensor) else weight

    def set_weight(self, weight, inplace_update=False, seed=None, return_weight=False, **kwargs):
        """Re-quantise with a recalculated scale and stochastic rounding (ComfyUI's own quant_ops layout does both)."""
        import comfy.float

        scale = (weight.abs().max().float() / torch.finfo(torch.float8_e4m3fn).max).reshape(())
        elements = comfy.float.stochastic_rounding(weight / scale, torch.float8_e4m3fn, seed=seed)
        params = kitchen.fp8.TensorCoreFP8Layout.Params(scale=scale, orig_dtype=self.weight.dtype,
                                                         orig_shape=tuple(elements.shape))
        quantised = kitchen.QuantizedTensor(elements, LAYOUT, params)
        if return_weight:
            return quantised
        self.weight = torch.nn.Parameter(quantised, requires_grad=False)


@pytest.fixture
def newer_model_management(monkeypatch):
    """ComfyUI's ``ModelPatcher.load`` as a newer one does it: each load first sets every module's
    ``comfy_force_cast_weights`` to the patcher's ``force_cast_weights`` (False unless a node asks)."""
    import comfy.model_patcher

    load = comfy.model_patcher.ModelPatcher.load

    def resetting_load(self, *args, **kwargs):
        for module in self.model.modules():
            module.comfy_force_cast_weights = getattr(self, "force_cast_weights", False)
        return load(self, *args, **kwargs)

    monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "load", resetting_load)


def as_newer_comfyui_holds_it(model, compute_dtype=torch.float32):
    """``model`` (the tiny scaled-fp8 Wan 2.2 expert) with every scaled-fp8 layer a :class:`KitchenLinear`."""
    diffusion = model.model.diffusion_model
    for name, module in list(diffusion.named_modules()):
        scale = getattr(module, "scale_weight", None)
        if scale is None:
            continue
        params = kitchen.fp8.TensorCoreFP8Layout.Params(
            scale=scale.detach().float().reshape(()), orig_dtype=compute_dtype, orig_shape=tuple(module.weight.shape))
        weight = kitchen.QuantizedTensor(module.weight.detach().clone(), LAYOUT, params)
        parent, _, child = name.rpartition(".")
        setattr(diffusion.get_submodule(parent) if parent else diffusion, child, KitchenLinear(weight, module.bias))
    return model


def file_weight(module) -> torch.Tensor:
    """A 0.3.64 scaled-fp8 layer's values as the file gives them: fp8 elements times their scale, float32."""
    return module.weight.float() * module.scale_weight.float()


def running_weight(module) -> torch.Tensor:
    """The weight a :class:`KitchenLinear` multiplies with in a float32 forward (dequantised, then the wrappers)."""
    weight = module.weight.to(torch.float32).dequantize()
    for function in module.weight_function:
        weight = function(weight)
    return weight


@pytest.fixture
def quantised(nodes, encoded, tiny):  # noqa: F811
    """``(0.3.64 model, newer model, vector)``: the tiny expert as each ComfyUI holds it, and a vector of the newer."""
    original = tiny.load_tiny_wan_as("scaled fp8 file")
    newer = as_newer_comfyui_holds_it(tiny.load_tiny_wan_as("scaled fp8 file"))
    activations = nodes.CollectActivations.execute(newer, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    return original, newer, nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]


def test_the_edit_on_a_quantised_layer_runs_exact_where_baking_it_keeps_some_of_the_direction(nodes, quantised,
                                                                                              tmp_path):
    """Read as a plain tensor, a ``QuantizedTensor`` looked like a float32 layer: the edit was baked and re-quantised,
    and 3.2-4.2 % of |W U| stayed at run time (no wrapper on 0 of 4 layers), where the fp8 route keeps 1e-7. It now
    takes the fp8 route: the baked weight still keeps that much (it is what Save Model writes), the running one
    nothing; Export counts the layers for its fp8 note."""
    import comfy.model_management as mm
    from comfyui_video_unlearning.nodes.patching import export_lora

    original, newer, vector = quantised
    reference = {layer: file_weight(original.model.diffusion_model.get_submodule(layer)) for layer in vector.layers}
    edited = nodes.ApplyUnlearning.execute(newer, vector, 1.0, True, "all in vector", 0, -1, "zero")[0]
    mm.load_models_gpu([edited])
    try:
        for layer in vector.layers:
            module, u = edited.model.diffusion_model.get_submodule(layer), vector.subspace(layer)
            reach = float((reference[layer] @ u).norm())
            baked = float((module.weight.to(torch.float32).dequantize() @ u).norm()) / reach
            running = float((running_weight(module) @ u).norm()) / reach
            assert 0.01 < baked < 0.08, (layer, baked)  # re-quantised with a new scale: a LoRA's share
            assert running < 1e-5, (layer, running, baked)
    finally:
        mm.unload_all_models()
    metadata = export_lora(newer, vector, str(tmp_path / "edit.safetensors"), strength=1.0, target="zero")
    assert metadata["video_unlearning_fp8_layers"] == str(len(vector.layers))


def test_a_quantised_layer_is_read_as_its_values_and_fingerprinted_as_its_file(nodes, quantised, tiny):
    """The values are the file's fp8 elements times their scale, exactly; the fingerprint is the one ComfyUI 0.3.64
    gives the same file, in any compute dtype. It was another one per dtype (a ``QuantizedTensor`` sampled through
    ``.to(float32)`` is dequantised to its compute dtype first), so a vector saved before an upgrade was refused
    as "measured on other weights", and one computed on a bf16 machine on an fp16 one."""
    from comfyui_video_unlearning.nodes.patching import weights_fingerprint
    from comfyui_video_unlearning.nodes.weights import stored_values

    original, newer, vector = quantised
    for layer in vector.layers:
        expected = file_weight(original.model.diffusion_model.get_submodule(layer))
        torch.testing.assert_close(stored_values(newer, layer), expected, atol=0, rtol=0)
    fingerprint = weights_fingerprint(original, vector.layers)
    assert vector.model_fingerprint == fingerprint
    for dtype in (torch.bfloat16, torch.float16):
        other = as_newer_comfyui_holds_it(tiny.load_tiny_wan_as("scaled fp8 file"), compute_dtype=dtype)
        assert weights_fingerprint(other, vector.layers) == fingerprint, dtype
        for layer in vector.layers:  # float32 values, not the compute dtype's rounding of them
            expected = file_weight(original.model.diffusion_model.get_submodule(layer))
            torch.testing.assert_close(stored_values(other, layer), expected, atol=0, rtol=0)


@pytest.mark.usefixtures("newer_model_management")
def test_measuring_multiplies_quantised_layers_at_compute_dtype(nodes, encoded, tiny, monkeypatch):  # noqa: F811
    """Where a newer ComfyUI multiplies its quantised layers in fp8 (a GPU with fp8 compute), each input is rounded
    to fp8, and that rounding flips with the small differences the pack measures (the text embedding of every prompt
    passes through two such layers before the recorded k/v inputs). The pack measures at compute dtype, as it does
    for 0.3.64's ``fp8_linear``: the same activations as without fp8 products; sampling keeps them. Switched off
    through ``comfy_force_cast_weights`` alone, the layers multiplied in fp8 again from the load the measurement
    starts with (a newer ComfyUI resets it on every load)."""
    model = as_newer_comfyui_holds_it(tiny.load_tiny_wan_as("scaled fp8 file"))
    recorded = {}
    for fp8_compute in (False, True):
        monkeypatch.setattr(KitchenLinear, "fp8_compute", fp8_compute)
        activations = nodes.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
        recorded[fp8_compute] = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    for layer in recorded[False].layers:
        torch.testing.assert_close(recorded[True].subspace(layer), recorded[False].subspace(layer), atol=0, rtol=0)
    assert not any(m._full_precision_mm for m in model.model.diffusion_model.modules() if isinstance(m, KitchenLinear))
    monkeypatch.setattr(KitchenLinear, "products", 0)
    text_embedding = model.model.diffusion_model.text_embedding
    text_embedding(torch.zeros(1, 4, text_embedding[0].weight.shape[1]))
    assert KitchenLinear.products == 2  # outside the pack's measurement the layers multiply in fp8 again


@pytest.mark.usefixtures("newer_model_management")
def test_the_check_reads_quantised_layers_as_on_comfyui_0_3_64(nodes, tiny, clip, monkeypatch):  # noqa: F811
    """Unlearning Check on the same file held either way, and with the newer layers multiplying in fp8 where nothing
    wraps them: the same figures and the same recommended strength."""
    from comfyui_video_unlearning.nodes import check
    from tests.host.test_check_node import BENIGN, VALIDATION
    from tests.host.test_nodes_inprocess import NEUTRAL, PAIRS

    definitions = nodes
    encoded = definitions.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
    validation = definitions.PairEncoder.execute(clip, VALIDATION, BENIGN, "Rolex")[0]

    def summary(model):
        activations = definitions.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
        basis = definitions.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
        out = check.UnlearningCheck.execute(model, basis, "0, 0.5, 1, 2", "default", 0, -1, "safe_mean", "none",
                                            64, 64, 1, "0.1", 0, validation_pairs=validation)
        return out.ui["video_unlearning_check"][0]

    reference = summary(tiny.load_tiny_wan_as("scaled fp8 file"))
    figures = {}
    for fp8_compute in (False, True):
        monkeypatch.setattr(KitchenLinear, "fp8_compute", fp8_compute)
        figures[fp8_compute] = summary(as_newer_comfyui_holds_it(tiny.load_tiny_wan_as("scaled fp8 file")))
    assert figures[True] == figures[False]
    assert figures[False]["strength"] == reference["strength"]
    for name in ("removed", "collateral"):
        # 3.0e-5 apart: both hold the same weights bit for bit, but a layer's outputs differ in float32's last bit
        # (1-9e-7 of them: 0.3.64's layer adds its fp8-held bias in its own cast), and the check's figures are
        # ratios of differences 0.4 % of the outputs' size
        assert abs(figures[False][name] - reference[name]) < 1e-4, (name, figures[False][name], reference[name])
