"""Recording what named sub-modules of any ``torch.nn.Module`` consume or produce.

The weight edit of the method acts on the *input* of a linear layer (``W' = W (I - d d^T)``), so
by default the recorder captures inputs, through forward pre-hooks. Every captured tensor is
pooled over its token axes (a float64 mean over all axes but the first, the batch, and the last,
the features), giving one row per batch element and forward call. Token-level samples can be kept
as well, but only under an explicit budget, because a video transformer produces tens of
thousands of tokens per forward.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch

from .devices import cpu_float64, token_mean_float64

CAPTURE_MODES = ("input", "output")


class ScopedHooks:
    """Base of the context managers that attach to a model: ``_install()`` attaches on entry, ``remove()`` detaches on
    every exit, also when ``_install`` fails halfway, so nothing is ever left attached to the user's model."""

    def _install(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            self._install()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class ActivationRecorder(ScopedHooks):
    """Context manager that records pooled activations of named sub-modules.

    Args:
        module: the model to hook; ``names`` are looked up with ``module.get_submodule``.
        names: dotted sub-module names, e.g. ``"blocks.3.cross_attn.k"``.
        capture: ``"input"`` records the first positional argument of each sub-module's forward
            (what a linear layer multiplies by its weight), ``"output"`` records its return value.
        token_budget: when > 0, also keep up to this many token rows per layer, drawn uniformly
            (reservoir sampling with a seeded generator, so the sample is deterministic). Needed
            only for token-level statistics; 0 keeps memory at O(rows x d).
        seed: seed of the token sampler.
        batch_dim: the batch's axis in every recorded tensor: 0 for ``[batch, tokens..., d]``; -2 for a model that
            runs its blocks token-major, ``[tokens..., batch, d]`` (Cosmos 1.0: ``(T H W B D)`` video and ``(M B D)``
            text), which would otherwise be pooled over the batch and read as one row per token. Moved first before
            pooling, so rows and token masks are the batch's and the tokens' either way.

    Example::

        with ActivationRecorder(model, ["blocks.0.ffn.0"]) as rec:
            model(x)
        rows = rec.take()["blocks.0.ffn.0"]   # [batch, d] float64
    """

    def __init__(
        self,
        module: torch.nn.Module,
        names: Sequence[str],
        *,
        capture: str = "input",
        token_budget: int = 0,
        seed: int = 0,
        batch_dim: int = 0,
    ):
        if capture not in CAPTURE_MODES:
            raise ValueError(f"capture must be one of {CAPTURE_MODES}, got {capture!r}")
        if token_budget < 0:
            raise ValueError(f"token_budget must be >= 0, got {token_budget}")
        names = list(dict.fromkeys(names))
        if not names:
            raise ValueError("no layer names given: pass the dotted names of the sub-modules to record")
        self._modules = {name: _lookup(module, name) for name in names}
        self.names = names
        self.capture = capture
        self.token_budget = token_budget
        self.batch_dim = batch_dim
        self._generator = torch.Generator().manual_seed(seed)
        self._handles: list = []
        self._rows: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        self._tokens: dict[str, torch.Tensor] = {}
        self._tokens_seen: dict[str, int] = {name: 0 for name in names}
        self._token_masks: dict[str, torch.Tensor] = {}
        self._mask_cursor: dict[str, int] = {}

    def _install(self) -> None:
        for name, sub in self._modules.items():
            if self.capture == "input":
                handle = sub.register_forward_pre_hook(self._make_pre_hook(name))
            else:
                handle = sub.register_forward_hook(self._make_hook(name))
            self._handles.append(handle)

    def remove(self) -> None:
        """Remove every hook; safe to call more than once."""
        while self._handles:
            self._handles.pop().remove()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def set_token_mask(self, mask: torch.Tensor | None, layers: Sequence[str]) -> None:
        """Pool only the tokens where ``mask`` ``[batch, tokens]`` is True, on ``layers`` (until changed).

        For layers that read a padded text context: a mean over every row lets the padding rows dilute a
        prompt pair's difference and add a "content minus padding" direction, which is not the concept.
        ``None`` pools every token again. A masked layer's input must have ``[batch, tokens, d]`` matching the mask,
        or be a part of the batch: a host that runs the prompts one model call at a time (they cannot share one, e.g.
        text contexts of different lengths) gives each call's rows the next rows of the mask, in order and wrapping
        around (one round per timestep), and a call may hold fewer tokens than the mask when the tokens cut off are
        padding (False).
        """
        unknown = [name for name in layers if name not in self._modules]
        if unknown:
            raise ValueError(f"set_token_mask: {unknown} are not recorded by this recorder (recorded: {self.names})")
        for name in layers:
            if mask is None:
                self._token_masks.pop(name, None)
            else:
                if mask.ndim != 2 or not mask.any(-1).all():
                    raise ValueError(f"token mask must be [batch, tokens] with at least one True per row, got "
                                     f"{tuple(mask.shape)}")
                self._token_masks[name] = mask.detach().bool().cpu()
            self._mask_cursor[name] = 0

    def _make_pre_hook(self, name: str):
        def hook(_module, args):
            if not args or not isinstance(args[0], torch.Tensor):
                raise TypeError(f"{name}: expected a tensor as first positional input, got {type(args[0]) if args else 'nothing'}")
            self._record(name, args[0])

        return hook

    def _make_hook(self, name: str):
        def hook(_module, _args, output):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"{name}: expected a tensor output, got {type(tensor).__name__}")
            self._record(name, tensor)

        return hook

    def _record(self, name: str, tensor: torch.Tensor) -> None:
        x = tensor.detach()
        if x.ndim == 1:
            x = x[None]
        elif self.batch_dim:
            x = x.movedim(self.batch_dim, 0)  # a view: [tokens..., batch, d] -> [batch, tokens..., d]
        features = x.shape[-1]
        tokens = x.reshape(x.shape[0], -1, features)  # [batch, tokens, d]
        mask = self._token_masks.get(name)
        if mask is None:
            self._rows[name].append(token_mean_float64(tokens))
        else:
            mask = self._mask_for_call(name, mask, tokens.shape[0], tokens.shape[1])
            weight = mask.to(torch.float64)[..., None]
            self._rows[name].append((cpu_float64(tokens) * weight).sum(1) / weight.sum(1))
        if self.token_budget:
            self._sample_tokens(name, tokens.reshape(-1, features))

    def _mask_for_call(self, name: str, mask: torch.Tensor, batch: int, tokens: int) -> torch.Tensor:
        """The rows of ``mask`` for a call of ``batch`` rows of ``tokens`` tokens: all of it, or the next ``batch`` rows
        (see :meth:`set_token_mask`)."""
        if mask.shape == (batch, tokens):
            return mask
        start = self._mask_cursor.get(name, 0)
        rows = mask[start:start + batch]
        if rows.shape[0] != batch or rows.shape[1] < tokens or rows[:, tokens:].any():
            raise ValueError(f"{name}: token mask {tuple(mask.shape)} does not match the input's [batch, tokens] "
                             f"{(batch, tokens)} (nor the next rows of it from row {start}): set the mask of this "
                             f"forward's prompts, or, if this layer's input rows are not the prompt's tokens, give it "
                             f"none (set_token_mask(None, [{name!r}]))")
        self._mask_cursor[name] = (start + batch) % mask.shape[0]
        return rows[:, :tokens]

    def _sample_tokens(self, name: str, flat: torch.Tensor) -> None:
        """Reservoir sampling (Algorithm R, vectorised per call) of token rows ``[t, d]``."""
        budget = self.token_budget
        stored = self._tokens.get(name)
        seen = self._tokens_seen[name]
        count = flat.shape[0]
        if stored is None:
            stored = torch.empty(0, flat.shape[1], dtype=torch.float64)
        room = max(0, budget - stored.shape[0])
        if room:
            stored = torch.cat([stored, cpu_float64(flat[:room])])
        rest = flat[room:]
        if rest.shape[0]:
            # Token j of the rest is the (seen + room + j + 1)-th ever: keep it with prob budget / that.
            position = seen + room + torch.arange(1, rest.shape[0] + 1, dtype=torch.float64)
            slot = (torch.rand(rest.shape[0], generator=self._generator, dtype=torch.float64) * position).long()
            keep = slot < budget
            if keep.any():
                stored = stored.clone()
                stored[slot[keep]] = cpu_float64(rest[keep.to(rest.device)])
        self._tokens[name] = stored
        self._tokens_seen[name] = seen + count

    def take(self) -> dict[str, torch.Tensor]:
        """Pooled rows per layer, float64 ``[rows, d]`` in call order; clears them."""
        out = {}
        for name, rows in self._rows.items():
            if not rows:
                raise ValueError(
                    f"layer {name!r} recorded nothing: the model's forward never called it "
                    "(is it the right module, and did a forward run inside the recorder?)"
                )
            out[name] = torch.cat(rows)
            self._rows[name] = []
        return out

    def take_tokens(self) -> dict[str, torch.Tensor]:
        """Sampled token rows per layer, float64 ``[t, d]``; clears them. Needs ``token_budget > 0``."""
        if not self.token_budget:
            raise ValueError("token rows were not kept: create the recorder with token_budget > 0")
        out = dict(self._tokens)
        self._tokens = {}
        self._tokens_seen = {name: 0 for name in self.names}
        return out


def _lookup(module: torch.nn.Module, name: str) -> torch.nn.Module:
    try:
        return module.get_submodule(name)
    except AttributeError:
        known = [n for n, _ in module.named_modules() if n]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; close matches: {close}" if close else f"; the model has e.g. {known[:5]}"
        raise ValueError(f"no sub-module named {name!r} in {type(module).__name__}{hint}") from None
