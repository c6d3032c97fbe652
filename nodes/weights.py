"""The weights of a MODEL's layers as stored and as ComfyUI computes them from its patches (pure reads: nothing is
patched here). Clones share one module; what a loaded clone baked into it, ComfyUI keeps in the clones' shared
``backup``."""

from __future__ import annotations

import torch

import comfy.lora

from .adapters import DIFFUSION_PREFIX
from .packed_weights import is_packed, is_quantised_tensor, unpacked_weight


def stored_weight(model, layer: str, parameter: str = "weight") -> torch.Tensor:
    """The layer's weight (or other ``parameter``, such as its bias) as loaded from the file, whatever clone of the
    model is loaded now.

    Clones share one module; loading a patched clone bakes its patches into that module's weight and keeps
    the original in the clones' shared ``backup`` (as ``ModelPatcher.get_key_patches`` reads it). A module that
    records the dtype its model is loaded in (``weight_comfy_model_dtype``: a newer ComfyUI's dynamic VRAM) gives
    its weight in that dtype.
    """
    module = model.model.diffusion_model.get_submodule(layer)
    backup = model.backup.get(f"{DIFFUSION_PREFIX}{layer}.{parameter}")
    value = backup.weight if backup is not None else getattr(module, parameter)
    dtype = _recorded_dtype(module, parameter)
    if dtype is not None and value is not None and value.dtype != dtype and not is_quantised_tensor(value):
        value = value.to(dtype)
    return value


def _recorded_dtype(module, parameter: str) -> torch.dtype | None:
    """The dtype a newer ComfyUI's dynamic VRAM loading (on by default on NVIDIA) records for a layer's
    ``parameter`` (``weight_dtype`` fp8, say): it keeps the file's tensor in the module and casts it to this as it
    moves it to the GPU, and the layer computes with the cast values, which ComfyUI 0.3.64 holds in the module
    itself. None where nothing is recorded."""
    return getattr(module, f"{parameter}_comfy_model_dtype", None)


def loaded_dtype(module, parameter: str = "weight") -> torch.dtype:
    """The dtype a layer's ``parameter`` is computed from: the recorded one (:func:`_recorded_dtype`), else the one
    the module holds it in."""
    return _recorded_dtype(module, parameter) or getattr(module, parameter).dtype


def stored_values(model, layer: str) -> torch.Tensor:
    """:func:`stored_weight` as numbers to compute with: a weight ComfyUI-GGUF keeps packed is decoded (float32, on
    the CPU; see ``nodes.packed_weights``), any other is returned as stored."""
    weight = stored_weight(model, layer)
    return unpacked_weight(weight) if is_packed(weight) else weight


def baked_weight(model, layer: str, device=None) -> torch.Tensor:
    """The weight ComfyUI bakes from ``model``'s patches on ``layer`` before rounding it to the stored dtype: the
    stored weight in float32 (on ``device``, else where it is stored), a scaled-fp8 checkpoint's scale applied,
    ``comfy.lora.calculate_weight`` over the patch list."""
    convert = getattr(model.model.diffusion_model.get_submodule(layer), "convert_weight", None)
    return _baked(model, f"{DIFFUSION_PREFIX}{layer}.weight", stored_values(model, layer), device, convert)


def baked_bias(model, layer: str, device=None) -> torch.Tensor:
    """The bias ComfyUI bakes from ``model``'s patches on ``layer`` before rounding it to the stored dtype, float32."""
    return _baked(model, f"{DIFFUSION_PREFIX}{layer}.bias", stored_weight(model, layer, "bias"), device)


def _baked(model, key: str, stored: torch.Tensor, device, convert=None) -> torch.Tensor:
    """``stored`` as float32 (a copy, on ``device`` or where it is), converted, and patched as ``key`` in ``model``."""
    stored = stored.detach()
    value = stored.to(stored.device if device is None else device, torch.float32, copy=True)
    if convert is not None:
        value = convert(value, inplace=True)
    patches = model.patches.get(key)
    return comfy.lora.calculate_weight(patches, value, key) if patches else value


def row_scale(module, device) -> torch.Tensor | None:
    """A scaled-fp8 layer's ``scale_weight`` as a float32 factor for its ``[out, in]`` weight (scalar, or one per output
    row as ``[out, 1]``); None for a layer without one."""
    scale = getattr(module, "scale_weight", None)
    if scale is None:
        return None
    scale = scale.detach().to(device, torch.float32)
    return scale.reshape(-1, 1) if scale.numel() > 1 else scale
