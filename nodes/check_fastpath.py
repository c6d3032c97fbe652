"""Wan's zero-padded text context collapsed to one key, inside the Unlearning Check only (issue 13).

ComfyUI pads Wan's T5 context to 512 rows with exact zeros (``comfy/text_encoders/wan.py``: ``min_length=512``,
``zero_out_masked=True``). From the longest prompt's length L on, every row of every prompt in the batch is the same
zero row, and everything between the context and the cross-attention's softmax is row-wise (``text_embedding``,
``cross_attn.k``/``.v``, ``norm_k``, the check's edit hooks), so those rows stay identical up to the attention. There,
n identical keys with identical values weigh exactly as one copy whose logit is raised by log(n) (``exp(s + log n) =
n exp(s)``). So the first L + 1 rows carry everything. The check cuts its contexts there before stacking them, so
neither it nor ComfyUI's batching copies the padding (22 x 512 x 4096 floats in the default check), ``text_embedding``
projects none of it, and the text side of every strength's forward (k, v, ``norm_k``, the hooks and the attention,
most of a forward on a small latent) runs on 22 x (L + 1) rows instead of 22 x 512.

Exact in maths, not bit for bit: sums over fewer terms round differently, so the check's figures move at float
rounding level (``tests/host/test_check_collapse.py`` states how far).

Applied only where all of the above is known to hold: ComfyUI's ``WanModel`` for text to video (no image embedding),
every block's cross-attention a ``WanT2VCrossAttention`` not wrapped by anyone else, no block replacement and no
attention override in the model's transformer options. Anything else (an image-to-video Wan, whose cross-attention
reads an image prefix; other families) runs as before, and :attr:`PaddedTextCollapse.reason` says why. Sampling and
Apply Unlearning never see any of this: it lives in a context manager the check enters and always leaves.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..core.activations import ScopedHooks


def why_not(diffusion: torch.nn.Module, transformer_options: Mapping | None = None) -> str | None:
    """Why the padded text of ``diffusion`` cannot be collapsed, or None when it can."""
    from comfy.ldm.wan.model import WanModel, WanT2VCrossAttention

    if type(diffusion) is not WanModel:
        return (f"{type(diffusion).__name__} is not ComfyUI's WanModel (the collapse is known to be exact only for "
                "its text-to-video cross-attention)")
    if diffusion.model_type != "t2v" or diffusion.img_emb is not None:
        return "an image-to-video Wan: its cross-attention also reads an image prefix of the context"
    attentions = [block.cross_attn for block in diffusion.blocks]
    other = [i for i, a in enumerate(attentions) if type(a) is not WanT2VCrossAttention]
    if other:
        return f"the cross-attention of blocks {other} is not WanT2VCrossAttention"
    wrapped = [i for i, a in enumerate(attentions) if "forward" in vars(a)]
    if wrapped:
        return f"the cross-attention of blocks {wrapped} already has its forward replaced by another extension"
    options = transformer_options or {}
    if options.get("patches_replace", {}).get("dit"):
        return "the model has block replacements (patches_replace), which may read the whole text context"
    if "optimized_attention_override" in options:
        return "the model has an attention override, which must see ComfyUI's own attention call"
    return None


@dataclass(frozen=True)
class Trimmed:
    """A row set cut for the collapse: ``rows`` (the CONDITIONINGs, each context cut to ``kept`` rows, the last a zero
    row), ``padding`` (the rows of the full context that last row stands for), ``total`` (the full context's rows) and
    ``mask`` ``[batch, kept]`` (the prompts' tokens among the rows kept, ``nodes.collect.prompt_token_mask``'s rule)."""

    rows: list
    kept: int
    padding: int
    total: int
    mask: torch.Tensor


class PaddedTextCollapse(ScopedHooks):
    """Context manager: on a known Wan, the check's text contexts reach the cross-attention cut after the longest
    prompt, plus one zero row that stands for all the padding.

    :meth:`trim` cuts a row set's contexts before they are stacked, so neither the check nor ComfyUI copies (or the
    model projects) the padding rows at all; a forward run inside :meth:`feeding` registers ``text_embedding``'s
    output as standing for the padding, and each block's cross-attention, given that context, attends with
    log(number of padding rows) added to the last key's logit, through the module's own ``q``/``k``/``v``/``norm_q``/
    ``norm_k``/``o`` (so edit hooks, replay caches and recorders on them still apply). Contexts without a zero tail of
    at least 2 rows are not cut.

    Args:
        diffusion: the diffusion model (``model.model.diffusion_model``).
        transformer_options: the model's ``model_options["transformer_options"]`` (block replacements and attention
            overrides turn the collapse off).
        enabled: False runs everything as ComfyUI does (the reference the exactness test compares against).
    """

    def __init__(self, diffusion: torch.nn.Module, transformer_options: Mapping | None = None, *, enabled: bool = True):
        self.reason = why_not(diffusion, transformer_options) if enabled else "turned off for this check"
        self.collapsed = 0  # text_embedding calls on a cut context
        self.passed = 0  # ... on a full one (no zero tail, or a row set the cut does not apply to)
        self.expanded = 0  # cross-attention calls that had to rebuild the full context (see _collapsing)
        self.rows: set[tuple[int, int]] = set()  # (rows kept, rows in the full context)
        self.alone = 0  # forwards whose rows could not share a model call (so nothing to collapse)
        self._diffusion = diffusion
        self._handles: list = []
        self._patched: list[torch.nn.Module] = []
        self._feeding: Trimmed | None = None
        self._padding: dict[int, tuple] = {}  # id(text_embedding output) -> (weakref, rows its last row stands for)

    @property
    def applies(self) -> bool:
        """True while installed on a model it knows."""
        return bool(self._handles)

    def describe(self) -> str:
        """One line for the check's table: whether the padded text was collapsed, and if not, why."""
        if self.reason is not None:
            return f"no ({self.reason})"
        if not self.collapsed and self.alone:
            return ("no (the rows ran one model call each: their text contexts differ in length, as when a prompt "
                    "is longer than the encoder's padding)")
        if not self.collapsed:
            return "no (no text context had a zero padding tail of 2 rows or more)"
        kept = ", ".join(f"{k - 1} of {n}" for k, n in sorted(self.rows))
        done = f"text rows up to the longest prompt ({kept}) plus one row for the zero padding"
        if self.passed or self.expanded:
            return (f"partly ({self.collapsed} of {self.collapsed + self.passed} forwards; {self.expanded} "
                    f"cross-attention calls rebuilt the full context): {done}")
        return f"yes ({done})"

    def trim(self, conditionings: Sequence) -> Trimmed | None:
        """``conditionings`` (single-entry CONDITIONINGs, one per row) with every text context cut after the longest
        prompt's last nonzero row plus one zero row, or None where that is not exact or gains nothing."""
        if any(len(cond) != 1 for cond in conditionings):
            return None  # stack_conditionings names this error
        contexts = [cond[0][0] for cond in conditionings]
        total = contexts[0].shape[1] if contexts[0].ndim == 3 else -1
        if any(c.ndim != 3 or c.shape[1] != total for c in contexts):
            return None  # ... and this one
        for cond in conditionings:
            for value in cond[0][1].values():
                if isinstance(value, torch.Tensor) and value.ndim >= 2 and value.shape[1] == total:
                    return None  # an extra along the tokens (an attention mask) would no longer line up
        # amax and amin, not a norm (squares of tiny values underflow) nor any() (several times slower here).
        nonzero = torch.cat([(c.amax(-1) != 0) | (c.amin(-1) != 0) for c in contexts]).cpu()  # [batch, total]
        used = nonzero.any(dim=0).nonzero()
        length = int(used[-1]) + 1 if used.numel() else 0  # rows from here on are zero in every prompt
        if total - length < 2:
            return None
        kept = length + 1
        mask = (nonzero | ~nonzero.any(dim=-1, keepdim=True))[:, :kept]  # an empty prompt keeps every row
        rows = [[[cond[0][0][:, :kept], cond[0][1]]] for cond in conditionings]
        return Trimmed(rows=rows, kept=kept, padding=total - length, total=total, mask=mask)

    @contextmanager
    def feeding(self, trimmed: Trimmed | None):
        """The model calls inside get ``trimmed``'s contexts (None: full ones)."""
        self._feeding = trimmed
        try:
            yield
        finally:
            self._feeding = None

    def _install(self) -> None:
        if self.reason is not None:
            return
        text = self._diffusion.text_embedding
        self._handles.append(text.register_forward_pre_hook(self._arriving))
        self._handles.append(text.register_forward_hook(self._embedded))
        for block in self._diffusion.blocks:
            attention = block.cross_attn
            attention.forward = self._collapsing(attention, attention.forward)
            self._patched.append(attention)

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()
        while self._patched:
            del self._patched.pop().forward  # the class's forward again
        self._padding = {}
        self._feeding = None

    def _arriving(self, _module, args):
        trimmed = self._feeding
        if trimmed is None:
            self.passed += 1
            return
        context = args[0] if args else None
        if not isinstance(context, torch.Tensor) or context.ndim != 3 or context.shape[1] != trimmed.kept:
            shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise RuntimeError(f"Unlearning Check: Wan's text_embedding got a context of shape {shape}, not the "
                               f"{trimmed.kept} rows the check cut it to: something between the check and the model "
                               "changes the text context (a conditioning or model patch); run the check on the model "
                               "without it")
        self.collapsed += 1
        self.rows.add((trimmed.kept, trimmed.total))

    def _embedded(self, _module, _args, output):
        if self._feeding is not None and isinstance(output, torch.Tensor):
            # Weak references: the check keeps what it replays, the rest is freed; dead entries go at the next one.
            for key in [key for key, (ref, _) in self._padding.items() if ref() is None]:
                del self._padding[key]
            self._padding[id(output)] = (weakref.ref(output), self._feeding.padding)

    def _padding_of(self, tensor) -> int | None:
        entry = self._padding.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def _collapsing(self, attention: torch.nn.Module, forward):
        def collapsing(x, context, transformer_options={}, **kwargs):  # noqa: B006 (ComfyUI's own signature)
            padding = self._padding_of(context)
            if padding is None:
                return forward(x, context, transformer_options=transformer_options, **kwargs)
            if "optimized_attention_override" in transformer_options:
                # An override added during sampling must see ComfyUI's attention call on the whole context: the
                # padding rows rebuilt (identical to what text_embedding gives them), exact but not faster.
                self.expanded += 1
                full = torch.cat([context, context[:, -1:].expand(-1, padding - 1, -1)], dim=1)
                return forward(x, full, transformer_options=transformer_options, **kwargs)
            return collapsed_cross_attention(attention, x, context, padding)

        return collapsing


def collapsed_cross_attention(attention: torch.nn.Module, x: torch.Tensor, context: torch.Tensor,
                              padding: int) -> torch.Tensor:
    """``WanT2VCrossAttention.forward(x, full)`` where ``full`` is ``context`` with its last row repeated to ``padding``
    rows, computed on ``context`` alone: the last key's logit raised by log(padding)."""
    q = attention.norm_q(attention.q(x))
    k = attention.norm_k(attention.k(context))
    v = attention.v(context)
    batch, heads, dtype = q.shape[0], attention.num_heads, q.dtype
    # The bias log(n) has to keep its precision: rounded to bfloat16 it would weigh the padding up to ~2 % off.
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    q, k, v = (t.to(work).reshape(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    bias = torch.zeros(1, 1, 1, k.shape[2], dtype=work, device=q.device)
    bias[..., -1] = math.log(padding)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return attention.o(out.transpose(1, 2).reshape(batch, -1, heads * out.shape[-1]).to(dtype))
