"""Apply Unlearning and Export as LoRA: a refusal vector turned into weight patches on a clone.

Every edited linear layer gets a rank-c LoRA patch ``W' = W + up @ down`` (``comfy.weight_adapter``
``LoRAAdapter``) and, for the affine target, a ``("diff", ...)`` patch on its bias. The input MODEL is
never modified: ComfyUI applies patches to a clone when it loads it, and the file on disk is never
touched.
"""

from __future__ import annotations

import torch

from comfy.weight_adapter import LoRAAdapter

from ..core.edit import EDIT_TARGETS, LowRankEdit, project_edit
from ..core.refusal import RefusalBasis
from .adapters import DIFFUSION_PREFIX, adapter_for, resolve_group

#: Apply Unlearning's layer choice that keeps every layer stored in the vector.
ALL_IN_VECTOR = "all in vector"
#: Weights ComfyUI re-quantises after baking a patch: re-quantising W' left 4.3-4.5 % of |W d| on a tiny fp8
#: Wan (vs. 1e-7 in fp32), so these layers get a weight wrapper applied at compute dtype instead.
QUANTISED_DTYPES = {torch.float8_e4m3fn, torch.float8_e5m2}


class RemoveSubspace:
    """Weight wrapper ``W -> W - strength (W U) U^T`` applied at compute dtype on every forward.

    Used for fp8 / scaled-fp8 layers: the edit is never re-quantised, so the direction is removed to
    the compute dtype's precision. It is linear in W, so a checkpoint's weight scale commutes with it.
    """

    def __init__(self, subspace: torch.Tensor, strength: float):
        self.subspace = subspace  # [in, c], orthonormal
        self.strength = float(strength)

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        u = self.subspace.to(device=weight.device, dtype=weight.dtype)
        return weight - self.strength * (weight @ u) @ u.T


def dequantized_weight(module) -> torch.Tensor:
    """The layer's weight in float32, with a scaled-fp8 checkpoint's ``scale_weight`` applied."""
    weight = module.weight.detach().to("cpu", torch.float32)
    scale = getattr(module, "scale_weight", None)
    if scale is not None:
        weight = weight * scale.detach().to("cpu", torch.float32)
    return weight


def select_layers(model, basis: RefusalBasis, group: str, block_start: int, block_end: int) -> list[str]:
    """Layers of ``basis`` to edit in ``model``; errors name both sides when nothing matches."""
    adapter = adapter_for(model)
    if basis.model_family and basis.model_family != adapter.family:
        raise ValueError(f"this refusal vector was measured on a {basis.model_family!r} model "
                         f"({basis.concept or 'unnamed concept'}), but the MODEL is {adapter.family!r}; "
                         "compute a vector on this model")
    diffusion = model.model.diffusion_model
    if group == ALL_IN_VECTOR:
        wanted = set(adapter.layer_names(diffusion, "all", block_start, block_end))
    else:
        wanted = set(adapter.layer_names(diffusion, resolve_group(adapter, group), block_start, block_end))
    layers = [layer for layer in basis.layers if layer in wanted]
    if not layers:
        raise ValueError(f"no layer of the refusal vector ({basis.layers[:4]}{'...' if len(basis.layers) > 4 else ''}) "
                         f"is in the chosen layers of this {adapter.family} model (group {group!r}, blocks "
                         f"{block_start}..{block_end}); widen the block range or choose '{ALL_IN_VECTOR}'")
    for layer in layers:
        module = _module(diffusion, layer, adapter.family)
        width = module.weight.shape[1]
        if width != basis.dims[layer]:
            raise ValueError(f"layer {layer!r} reads {width} features in this model but the refusal vector was "
                             f"measured with {basis.dims[layer]}: it belongs to a different model size")
    return layers


def _module(diffusion, layer: str, family: str):
    try:
        return diffusion.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"layer {layer!r} of the refusal vector does not exist in this {family} model") from None


def layer_edits(model, basis: RefusalBasis, layers: list[str], strength: float, target: str) -> dict[str, LowRankEdit]:
    """The closed-form edit of every layer, keyed by layer name."""
    if target not in EDIT_TARGETS:
        raise ValueError(f"target must be one of {EDIT_TARGETS}, got {target!r}")
    diffusion = model.model.diffusion_model
    edits = {}
    for layer in layers:
        module = diffusion.get_submodule(layer)
        mu = basis.target(layer) if target == "safe_mean" else None
        if mu is not None and getattr(module, "bias", None) is None:
            raise ValueError(f"layer {layer!r} has no bias, so target 'safe_mean' cannot be applied; use target 'zero'")
        edits[layer] = project_edit(dequantized_weight(module), basis.subspace(layer), strength, target=mu)
    return edits


def apply_unlearning(model, basis: RefusalBasis, *, strength: float = 1.0, enabled: bool = True,
                     group: str = ALL_IN_VECTOR, block_start: int = 0, block_end: int = -1,
                     target: str = "safe_mean"):
    """A clone of ``model`` with the concept edited out. Returns ``(clone, edited_layers)``."""
    clone = model.clone()
    if not enabled:
        return clone, []
    layers = select_layers(model, basis, group, block_start, block_end)
    edits = layer_edits(model, basis, layers, strength, target)
    patches = {}
    diffusion = model.model.diffusion_model
    for layer, edit in edits.items():
        key = f"{DIFFUSION_PREFIX}{layer}.weight"
        if diffusion.get_submodule(layer).weight.dtype in QUANTISED_DTYPES:
            clone.add_weight_wrapper(key, RemoveSubspace(basis.subspace(layer), strength))
        else:
            patches[key] = LoRAAdapter(set(), (edit.up, edit.down, None, None, None, None))
        if edit.bias_delta is not None:
            patches[f"{DIFFUSION_PREFIX}{layer}.bias"] = ("diff", (edit.bias_delta,))
    accepted = set(clone.add_patches(patches, strength_patch=1.0))
    refused = sorted(set(patches) - accepted)
    if refused:
        raise ValueError(f"ComfyUI refused patches for {refused[:4]}: these weights are not in the model's state dict")
    return clone, layers


def lora_state_dict(model, basis: RefusalBasis, *, strength: float = 1.0, group: str = ALL_IN_VECTOR,
                    block_start: int = 0, block_end: int = -1, target: str = "safe_mean") -> dict[str, torch.Tensor]:
    """The same edit as a standard LoRA file: ``<key>.lora_up.weight``, ``.lora_down.weight``, ``.alpha``
    (alpha = rank, so scale 1) and ``.diff_b`` for bias changes, keyed as ``diffusion_model.<layer>``,
    the generic format ComfyUI's LoRA loader maps for any model."""
    layers = select_layers(model, basis, group, block_start, block_end)
    tensors = {}
    for layer, edit in layer_edits(model, basis, layers, strength, target).items():
        key = f"{DIFFUSION_PREFIX}{layer}"
        tensors[f"{key}.lora_up.weight"] = edit.up.contiguous()
        tensors[f"{key}.lora_down.weight"] = edit.down.contiguous()
        tensors[f"{key}.alpha"] = torch.tensor(float(edit.rank))
        if edit.bias_delta is not None:
            tensors[f"{key}.diff_b"] = edit.bias_delta.contiguous()
    return tensors
