"""Apply Unlearning's edit on fp8 weights, which ComfyUI re-quantises when it bakes a patch into them.

An fp8 layer gets the edit as a patch like any other (so Save Model writes it), plus weight wrappers that ComfyUI runs
at compute dtype in every forward: :class:`RemoveSubspace` restores the exact action on the removed subspace and, where
a patch moves an fp8 bias (target safe_mean), :class:`ExactBias` adds back what rounding took from it. Both follow the
float32 weight of the MODEL's own patch list: an ``ON_LOAD`` callback (:func:`refresh_fp8_edits`) recomputes them for
a MODEL whose patches differ (a LoRA or a merge after Apply) and keeps them after the layer's ``LowVramPatch``.
"""

from __future__ import annotations

import weakref

import torch

from comfy.model_patcher import LowVramPatch
from comfy.patcher_extension import CallbacksMP

from .adapters import DIFFUSION_PREFIX
from .packed_weights import is_quantised_tensor
from .weights import baked_bias, baked_weight, loaded_dtype, row_scale

#: Weights ComfyUI re-quantises after baking a patch: re-quantising W' left 4.3-4.5 % of |W d| on a tiny fp8
#: Wan (vs. 1e-7 in fp32), so these layers also get weight wrappers applied at compute dtype.
QUANTISED_DTYPES = {torch.float8_e4m3fn, torch.float8_e5m2}
#: Key of the ON_LOAD callback that keeps fp8 edits exact under the patches a MODEL carries (:func:`refresh_fp8_edits`).
FP8_REFRESH = "video_unlearning_fp8_edits"


def requantised_when_baked(module, parameter: str = "weight") -> bool:
    """Whether ComfyUI rounds a patch baked into this layer's ``parameter`` back to a quantised format: fp8 weights
    (held in fp8, or recorded as loaded in fp8 by a newer ComfyUI's dynamic VRAM, which casts them on the way to the
    GPU), and the ``QuantizedTensor`` a newer ComfyUI holds a quantised layer as (``nodes.packed_weights``), which
    reports its compute dtype and re-quantises with a new scale."""
    return loaded_dtype(module, parameter) in QUANTISED_DTYPES or is_quantised_tensor(getattr(module, parameter))


class _ExactWrapper:
    """A wrapper computed from a patch list (``patches``, the entries) for a module held by weak reference."""

    functions = "weight_function"  # the module's list of such functions ComfyUI runs in its forward

    def __init__(self, module, patches):
        self.module = weakref.ref(module)
        self.patches = tuple(patches)

    def computed_for(self, module, patches) -> bool:
        """Whether this was computed for ``module`` from this patch list (ComfyUI's clones share the entries, not the
        lists). A newer ComfyUI also clones a MODEL over another copy of its model (``clone(model_override=...)``, for
        conditioning with hooks under dynamic VRAM), with this wrapper in it: there it read another model's layer."""
        return (self.module() is module and len(patches) == len(self.patches)
                and all(a is b for a, b in zip(patches, self.patches)))


class RemoveSubspace(_ExactWrapper):
    """Weight wrapper ``W -> W - (W U - A) U^T`` applied on every forward, for fp8 layers: it sets the layer's action
    on the subspace U ``[in, c]`` to ``A`` ``[out, c]``, the action of the weight ComfyUI bakes from the MODEL's patch
    list before it rounds it to fp8 (in the stored weight's units: a scaled-fp8 checkpoint's scale is applied after
    the wrappers), whatever weight it is handed. ``patches`` are the patch entries ``A`` was computed from.

    An fp8 layer also gets the edit as a patch, which ComfyUI bakes into the fp8 weight (on loading, and when Save
    Model writes the MODEL to a file) and re-quantises: that leaves 3-5 % of the direction, as a LoRA does. The
    wrapper restores the exact action on U from the baked weight; a saved model (ComfyUI writes no wrappers) still
    carries the baked edit. Until 2026-12-06 the wrapper alone carried the edit, and a saved fp8 model kept all of
    the concept. The correction is computed in float32 and the result rounded once to the dtype the wrapper is
    handed (bf16 on a GPU: computed in bf16 it kept 3.4-4.5e-3 of the direction; now 3.1-4.3e-3, bf16's rounding
    of the weight).
    A node that adds patches after Apply (a LoRA loader, a model merge) changes the baked weight: when a MODEL is
    loaded, :func:`refresh_fp8_edits` recomputes ``A`` from its patch list, so the wrapper keeps what the patches
    make of U, as on a bf16 model and in a saved file (it pinned the action from before the LoRA until 2026-12-06).
    Chained Apply Unlearning nodes keep one wrapper per layer, over all their subspaces (:func:`fp8_wrapper`).
    """

    def __init__(self, module, subspace: torch.Tensor, action: torch.Tensor, patches):
        super().__init__(module, patches)
        self.subspace = subspace  # [in, c], orthonormal
        self.action = action  # [out, c]

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        if self._before_lowvram_patch():
            # The patches are still to be added (at compute precision) to the stored weight handed here, whose action
            # on U is the stored one: pinning A now would add the edit twice (measured: the direction negated, -1.0
            # of it kept at strength 1), so the layer gets the patches alone this forward.
            return weight
        u = self.subspace.to(device=weight.device, dtype=torch.float32)
        # One float32 copy of the weight, corrected in place. Written as W - (W U - A) U^T it made two more float32
        # temporaries of the weight's size, in every forward and outside what ComfyUI reserves for one: a call on a
        # 5120 x 5120 layer of Wan 14B peaked at 303 MB, now 152 MB (bench/fp8_wrapper_cost.py).
        edited = weight.to(torch.float32, copy=True)
        edited.addmm_(edited @ u - self.action.to(device=weight.device, dtype=torch.float32), u.T, alpha=-1.0)
        if weight.dtype in QUANTISED_DTYPES:
            # ComfyUI's fp8 matrix multiplication (fp8_e4m3fn_fast, or a scaled-fp8 file on a GPU with fp8 compute)
            # hands the wrapper the fp8 weight itself and multiplies with what it returns: there is no fp8 arithmetic
            # (sampling failed with '"mul_cpu_reduced_float" not implemented for Float8_e4m3fn'), so W' is rounded
            # back to the nearest fp8 value, within the format's range.
            limit = torch.finfo(weight.dtype).max
            edited = edited.clamp_(-limit, limit)
        return edited.to(weight.dtype)

    def _before_lowvram_patch(self) -> bool:
        """Whether the layer's patches come after this wrapper in its forward: ComfyUI's ``partially_unload`` (a model
        pushed partly off the GPU for the VAE or the text encoder) restores the stored weight and appends a
        ``LowVramPatch`` after the wrappers, until the next load (:func:`refresh_fp8_edits` restores the order)."""
        functions = getattr(self.module(), self.functions, ())
        for index, function in enumerate(functions):
            if function is self:
                return any(isinstance(later, LowVramPatch) for later in functions[index + 1:])
        return False

    def recomputed(self, patcher, module, layer: str, patches, device) -> RemoveSubspace:
        action = exact_action(patcher, layer, self.subspace, device=device)
        return RemoveSubspace(module, self.subspace, action, patches)


def fp8_wrapper(model, layer: str, subspace: torch.Tensor, edited: torch.Tensor | None = None) -> list:
    """The weight wrappers of an fp8 ``layer`` of ``model`` (which carries this Apply's patch): its own, with its
    earlier :class:`RemoveSubspace` replaced by one over the earlier subspaces and ``subspace`` ``[in, c]``.
    ``edited`` is the weight its patches make, ``[out, in]`` float32 with a scaled checkpoint's scale applied, when
    the caller has it; it is computed otherwise.

    ComfyUI applies every patch before any wrapper, so a second wrapper would meet the first one's patch already
    overridden: two chained vectors left 1.7 % of the first concept where the chained edit (and the saved file) keep
    23 %.
    """
    key = f"{DIFFUSION_PREFIX}{layer}.weight"
    module = model.model.diffusion_model.get_submodule(layer)
    wrappers = model.weight_wrapper_patches.get(key, [])
    earlier = [w.subspace for w in wrappers if isinstance(w, RemoveSubspace)]
    span = torch.cat([*earlier, subspace.to(torch.float32)], dim=1)  # [in, c_all]
    left, singular, _ = torch.linalg.svd(span.double(), full_matrices=False)
    basis = left[:, singular > 1e-6 * singular.max()].to(torch.float32)  # orthonormal, repeated directions merged
    action = exact_action(model, layer, basis, edited)
    return ([w for w in wrappers if not isinstance(w, RemoveSubspace)]
            + [RemoveSubspace(module, basis, action, model.patches.get(key, ()))])


def exact_action(model, layer: str, basis: torch.Tensor, baked: torch.Tensor | None = None,
                 device=None) -> torch.Tensor:
    """``B U`` ``[out, c]`` on the CPU in the stored weight's units, ``B`` being the layer's weight as ComfyUI bakes it
    from ``model``'s patches before rounding (``baked``, when the caller has it: :func:`baked_weight`)."""
    module = model.model.diffusion_model.get_submodule(layer)
    if baked is None:
        baked = baked_weight(model, layer, device)
    action = baked @ basis.to(baked.device, torch.float32)
    scale = row_scale(module, action.device)
    return (action if scale is None else action / scale).cpu()


class ExactBias(_ExactWrapper):
    """Bias wrapper of an fp8 layer whose bias the MODEL's patches move (target safe_mean; a LoRA's ``diff_b``): adds
    to the bias it is handed what rounding to fp8 took from the float32 bias the patches make, ``value`` ``[out]``.
    ComfyUI holds an fp8 model's biases in fp8 and re-quantises the baked one: until 2026-12-06 11-12 % of the bias
    change was off on the tiny Wan (fp8_e4m3fn; scaled fp8 17-20 %, fp8_e5m2 27-28 %). A saved model holds the baked
    bias, re-quantised.

    The correction (``value`` less the baked bias) is read at load (:func:`refresh_fp8_edits`, which makes a new
    wrapper then), so changes that reach the bias later are kept: ComfyUI's hook LoRAs, baked when sampling starts,
    and other packs' bias wrappers. Where the layer's patch runs in the forward (``LowVramPatch``: at compute
    precision, nothing re-quantised) the bias passes through.

    A newer ComfyUI's dynamic VRAM loading runs the patch in the forward too (the layer's ``bias_lowvram_function``),
    before the wrappers, and then writes the re-quantised result back to the copy it keeps on the GPU, which later
    forwards use without the patch; the module keeps the file's bias. The correction read from the module there
    equalled the whole bias change, which every forward then got twice (found by reading its source). There the
    wrapper gives ``value`` itself, which the first forward is handed and later ones lost to rounding."""

    functions = "bias_function"

    def __init__(self, module, value: torch.Tensor, patches, correction: torch.Tensor | None = None):
        super().__init__(module, patches)
        self.value = value  # [out] float32
        self.correction = correction  # [out] float32; None until a load has baked the bias

    def __call__(self, bias: torch.Tensor) -> torch.Tensor:
        if self._patched_and_written_back():
            return self.value.to(device=bias.device, dtype=bias.dtype)
        if self.correction is None or self._patched_in_forward():
            return bias
        return bias + self.correction.to(device=bias.device, dtype=bias.dtype)

    def _patched_in_forward(self) -> bool:
        return any(isinstance(function, LowVramPatch) for function in getattr(self.module(), self.functions, ()))

    def _patched_and_written_back(self) -> bool:
        return getattr(self.module(), "bias_lowvram_function", None) is not None

    def recomputed(self, patcher, module, layer: str, patches, device) -> ExactBias:
        return ExactBias(module, baked_bias(patcher, layer, device).cpu(), patches)

    def settled(self) -> ExactBias:
        """This wrapper with the correction of the bias its module holds now, just loaded: baked (and re-quantised)
        unless the layer's patch runs in the forward."""
        module = self.module()
        if self._patched_in_forward() or self._patched_and_written_back():
            return ExactBias(module, self.value, self.patches)
        return ExactBias(module, self.value, self.patches, self.value - module.bias.detach().float().cpu())


def add_fp8_edit(clone, layer: str, subspace: torch.Tensor, strength: float, wu: torch.Tensor,
                 earlier: torch.Tensor | None, edit) -> None:
    """The wrappers of an fp8 ``layer`` of ``clone``, which carries this Apply's patches: :class:`RemoveSubspace` for
    ``edit`` (``up @ down``), computed from ``wu`` (W U, ``[out, c]``) and ``earlier`` (the weight the MODEL made
    before this Apply, float32, None where it neither patched nor wrapped the layer); :class:`ExactBias` where a patch
    moves an fp8 bias (target safe_mean, or an earlier ``diff_b``); and the ``ON_LOAD`` callback."""
    key, module = f"{DIFFUSION_PREFIX}{layer}.weight", clone.model.diffusion_model.get_submodule(layer)
    if earlier is None:  # the first edit's action is (1 - strength) W U: no whole float32 copy of W
        scale = row_scale(module, "cpu")
        action = (1.0 - strength) * (wu if scale is None else wu / scale)
        clone.weight_wrapper_patches[key] = [RemoveSubspace(module, subspace, action, clone.patches[key])]
    else:  # W - strength (W U) U^T, every earlier edit included
        clone.weight_wrapper_patches[key] = fp8_wrapper(clone, layer, subspace, earlier.cpu() + edit.up @ edit.down)
    bias_key = f"{DIFFUSION_PREFIX}{layer}.bias"
    if bias_key in clone.patches and requantised_when_baked(module, "bias"):
        others = [w for w in clone.weight_wrapper_patches.get(bias_key, []) if not isinstance(w, ExactBias)]
        exact = ExactBias(module, baked_bias(clone, layer).cpu(), clone.patches[bias_key])
        clone.weight_wrapper_patches[bias_key] = [*others, exact]
    if not clone.get_callbacks(CallbacksMP.ON_LOAD, FP8_REFRESH):
        clone.add_callback_with_key(CallbacksMP.ON_LOAD, FP8_REFRESH, refresh_fp8_edits)


def refresh_fp8_edits(patcher, device_to=None, *_) -> None:
    """ComfyUI ``ON_LOAD`` callback of a MODEL with fp8 edits: each wrapper of this module computed from another patch
    list (a LoRA loader or a model merge after Apply Unlearning) is recomputed from this one, and runs after the
    layer's ``LowVramPatch`` where ``partially_unload`` had put it before (ComfyUI's own order)."""
    diffusion = patcher.model.diffusion_model
    for key, wrappers in list(patcher.weight_wrapper_patches.items()):
        ours = [wrapper for wrapper in wrappers if isinstance(wrapper, _ExactWrapper)]
        if not ours:
            continue
        layer = key[len(DIFFUSION_PREFIX):].rsplit(".", 1)[0]
        module = diffusion.get_submodule(layer)
        patches = patcher.patches.get(key, ())
        fresh = {id(wrapper): wrapper.recomputed(patcher, module, layer, patches, device_to)
                 for wrapper in ours if not wrapper.computed_for(module, patches)}
        for wrapper in ours:
            if isinstance(wrapper, ExactBias):  # its correction depends on how this load left the bias
                fresh[id(wrapper)] = fresh.get(id(wrapper), wrapper).settled()
        if fresh:
            patcher.weight_wrapper_patches[key] = [fresh.get(id(wrapper), wrapper) for wrapper in wrappers]
        attribute = ours[0].functions
        functions = [fresh.get(id(function), function) for function in getattr(module, attribute, ())]
        setattr(module, attribute, [f for f in functions if isinstance(f, LowVramPatch)]
                + [f for f in functions if not isinstance(f, LowVramPatch)])
