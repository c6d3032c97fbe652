"""The check's forward hooks: an edit applied to a model's outputs without touching its weights, and a cache that
replays, across strengths, what the edit does not change.

:class:`EditHooks` makes each edited layer's output ``y - strength (W U)(U^T (x - mu))`` (``W [out, in]``, ``U [in,
c]``, ``x [..., in]``), the same maths as the weight patch Apply Unlearning folds in (``core.edit.project_edit``);
:class:`ReplayCache` replays the outputs of modules whose input repeats. Nothing here imports comfy.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

import torch

from .activations import ScopedHooks
from .devices import cpu_float64, to_device
from .edit import EDIT_TARGETS
from .basis import RefusalBasis

class EditHooks(ScopedHooks):
    """Context manager: the input-side edit of ``basis`` on ``layers`` of ``module`` as forward hooks.

    Each hooked layer's output becomes ``y - strength (W U)(U^T (x - mu))``, which is exactly what the weight
    edit ``W' = W - strength (W U) U^T``, ``b' = b + strength (W U) U^T mu`` gives (``core.edit.project_edit``)
    without touching the weights. ``strength`` can be changed between forwards; at 0 the hooks return early.
    ``calls`` counts each layer's forwards, so a caller can tell a forward that never ran a layer.

    Args:
        module: the model; ``layers`` are looked up with ``get_submodule``.
        basis: the refusal basis (its :meth:`RefusalBasis.subspace` and :meth:`RefusalBasis.target`).
        layers: the layers to edit (default: all of the basis's).
        weights: ``{layer: W [out, in]}`` to use instead of the modules' own ``weight`` (e.g. dequantised).
        target: ``"safe_mean"`` (mu = the safe prompts' mean) or ``"zero"`` (mu = 0), as in Apply Unlearning.
    """

    def __init__(self, module: torch.nn.Module, basis: RefusalBasis, layers: Sequence[str] | None = None, *,
                 weights: Mapping[str, torch.Tensor] | None = None, target: str = "safe_mean"):
        if target not in EDIT_TARGETS:
            raise ValueError(f"target must be one of {EDIT_TARGETS}, got {target!r}")
        self.layers = list(layers or basis.layers)
        self.strength = 0.0
        self._module = module
        self._handles: list = []
        self._parts: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        for layer in self.layers:
            weight = _weight(module, layer, weights)
            u = basis.subspace(layer).to(torch.float64)  # [in, c]
            if weight.shape[1] != u.shape[0]:
                raise ValueError(f"layer {layer!r} reads {weight.shape[1]} features but the refusal vector has "
                                 f"{u.shape[0]}: it was measured on a different model")
            mu = basis.target(layer).to(torch.float64) if target == "safe_mean" else None
            self._parts[layer] = (u, weight @ u, None if mu is None else u.T @ mu)  # U, W U [out, c], U^T mu [c]
        self._cast: dict = {}
        self._last: dict = {}
        self.calls = dict.fromkeys(self.layers, 0)

    def _install(self) -> None:
        for layer in self.layers:
            self._handles.append(self._module.get_submodule(layer).register_forward_hook(self._hook(layer)))

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()
        self._last = {}

    def _hook(self, layer: str):
        def hook(_module, args, output):
            self.calls[layer] += 1
            if self.strength == 0.0:
                return None
            x = args[0]
            key = (layer, x.device, x.dtype)
            if key not in self._cast:
                u, wu, shift = self._parts[layer]
                self._cast[key] = (to_device(u, x.device, x.dtype), to_device(wu.T, x.device, x.dtype),
                                   None if shift is None else to_device(shift, x.device, x.dtype))
            u, wu_t, shift = self._cast[key]
            last = self._last.get(layer)
            if last is not None and last[0]() is x and last[1] == _version(x):
                coords = last[2]  # the same input tensor, not written to since, as the last call (a replayed context)
            else:
                coords = x @ u  # U^T x  [..., c]
                if shift is not None:
                    coords = coords - shift
                # Only the small coordinates are kept, not the output-sized change (about 9 GB on the GPU for Wan 14B
                # I2V's edited layers), and the input by a weak reference: the cache holds no tensor of its size alive.
                self._last[layer] = (weakref.ref(x), _version(x), coords)
            change = coords @ wu_t  # (W U)(U^T (x - mu)) [..., out], independent of the strength
            # ``change * strength`` written into the product, then the difference too: the same two roundings as
            # ``output - strength * change`` with one new tensor per call instead of three (22 x 512 text rows per
            # layer and strength in the nodes' check). Not where autograd records (out= is not differentiable) or the
            # product's type or shape differs from the output's.
            reuse = (change.dtype == output.dtype and change.shape == output.shape
                     and not (torch.is_grad_enabled() and (output.requires_grad or change.requires_grad)))
            if not reuse:
                return output - change * self.strength
            return torch.sub(output, torch.mul(change, self.strength, out=change), out=change)

        return hook


class ReplayCache(ScopedHooks):
    """Context manager: modules whose output depends only on their first input replay it when that input repeats.

    Across the check's strengths most of a forward is the same: the text path of a cross-attention DiT (Wan's
    ``text_embedding``, 512 rows of 4096 features per prompt) and the *unedited* output ``W x + b`` of edited layers
    whose input the edit does not change (text-side k/v). Their outputs are kept for an input seen before and
    replayed, which leaves a forward per strength little more than the video tokens' path; :class:`EditHooks` still
    adds the edit to a replayed output. An input is recognised as seen before when it is the same tensor as then
    (and, outside inference mode, not written to since: its version counter), or an output this cache replayed, or
    else has equal values to a clone of it (to the tensor itself for an inference-mode tensor, see ``_version``).
    Only for modules whose output is a function of their first positional input (a call with more arguments is never
    replayed) and that never write into their input or output in place (a replayed output is the same tensor every
    time). Comparing values costs one pass over the input, far less than the
    matrix product it saves; the identity test (the nodes hand the model the same context tensor at every strength,
    ``nodes.check.ApplyModelReplay``) costs nothing.
    ``max_bytes`` caps what is kept (inputs and outputs); past it, modules compute as usual.
    """

    def __init__(self, module: torch.nn.Module, names: Sequence[str], *, max_bytes: int = 2 << 30):
        self.names = list(dict.fromkeys(names))
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self._module = module
        self._patched: list[torch.nn.Module] = []
        self._entries: dict[str, list] = {name: [] for name in self.names}
        self._outputs: dict[int, torch.Tensor] = {}

    def _install(self) -> None:
        for name in self.names:
            sub = self._module.get_submodule(name)
            if "forward" in vars(sub):
                continue  # already wrapped (by another cache): leave it
            sub.forward = self._wrap(name, sub.forward)
            self._patched.append(sub)

    def remove(self) -> None:
        while self._patched:
            del self._patched.pop().forward  # the class's forward again
        self._entries = {name: [] for name in self.names}
        self._outputs = {}
        self.bytes = 0

    def _wrap(self, name: str, forward):
        def replaying(*args, **kwargs):
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or len(args) > 1 or kwargs:
                return forward(*args, **kwargs)
            for stored_input, source, ours, output in self._entries[name]:
                # An output this cache replayed, fed on to the next module (text_embedding -> k/v), is recognised by
                # identity; so is the very tensor first seen, unless written to since (its version counter moved);
                # any other input by equal values against a clone.
                if ours is not None:
                    if ours is x:
                        self.hits += 1
                        return output
                elif source[0] is x and source[1] == _version(x):
                    self.hits += 1
                    return output
                elif (stored_input.shape == x.shape and stored_input.dtype == x.dtype
                      and stored_input.device == x.device and torch.equal(stored_input, x)):
                    self.hits += 1
                    return output
            output = forward(x)
            if not isinstance(output, torch.Tensor):
                return output
            ours = id(x) in self._outputs and self._outputs[id(x)] is x
            # Values are compared against a clone, which no later write into ``x`` reaches; an inference tensor
            # (no version counter) is trusted not to be written to, as for the identity test, and kept as it is.
            clone = not ours and not x.is_inference()
            size = output.numel() * output.element_size() + (0 if ours else (1 + clone) * x.numel() * x.element_size())
            if self.bytes + size <= self.max_bytes:
                output = output.detach()
                stored = (x.detach().clone() if clone else x) if not ours else None
                self._entries[name].append((stored, None if ours else (x, _version(x)), x if ours else None, output))
                self._outputs[id(output)] = output
                self.bytes += size
            return output

        return replaying


def _version(x: torch.Tensor) -> int | None:
    """``x``'s version counter (bumped by every in-place write), or None for an inference-mode tensor, which has none:
    such a tensor is trusted not to be written to (the check's callers never write into the inputs they pass; the
    nodes' context is a tensor only ComfyUI's batching made, and ComfyUI runs nodes in inference mode)."""
    return None if x.is_inference() else x._version


def _weight(module, layer: str, weights) -> torch.Tensor:
    if weights is not None and layer in weights:
        weight = weights[layer]
    else:
        weight = module.get_submodule(layer).weight
    return cpu_float64(weight)
