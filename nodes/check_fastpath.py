"""Wan's zero-padded text context collapsed to one key, inside the Unlearning Check only (issue 13).

ComfyUI pads Wan's T5 context to 512 rows with exact zeros (``comfy/text_encoders/wan.py``: ``min_length=512``,
``zero_out_masked=True``). From the longest prompt's length L on, every row of every prompt in the batch is the same
zero row, and everything between the context and the cross-attention's softmax is row-wise (``text_embedding``,
``cross_attn.k``/``.v``, ``norm_k``, the check's edit hooks), so those rows stay identical up to the attention. There,
n identical keys with identical values weigh exactly as one copy whose logit is raised by log(n) (``exp(s + log n) =
n exp(s)``). So the first L + 1 rows carry everything: the check's text side (the bulk of a strength's forward on a
small latent: 22 prompts x 512 rows through k, v, ``norm_k``, the hooks and the attention) shrinks to 22 x (L + 1).

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
from collections.abc import Callable, Mapping

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


class PaddedTextCollapse(ScopedHooks):
    """Context manager: on a known Wan, the text context's zero padding tail reaches the cross-attention as one row.

    A forward pre-hook on ``text_embedding`` hands it the context's first L + 1 rows (the same tensor for the same
    context, so ``core.check.ReplayCache`` still recognises it by identity); each block's cross-attention, given that
    short context, attends with log(number of padding rows) added to the last key's logit, through the module's own
    ``q``/``k``/``v``/``norm_q``/``norm_k``/``o`` (so edit hooks, replay caches and recorders on them still apply).
    A context without a zero tail of at least 2 rows passes unchanged.

    Args:
        diffusion: the diffusion model (``model.model.diffusion_model``).
        transformer_options: the model's ``model_options["transformer_options"]`` (block replacements and attention
            overrides turn the collapse off).
        enabled: False runs everything as ComfyUI does (the reference the exactness test compares against).

    ``on_context(mask)``, when set, is called at every forward with the token mask ``[batch, rows]`` of the text rows
    the cross-attention layers read in that forward (``nodes.collect.prompt_token_mask``'s rule, on the rows kept), so
    a recorder pooling those layers' inputs over the prompts' tokens pools the same rows as without the collapse.
    """

    def __init__(self, diffusion: torch.nn.Module, transformer_options: Mapping | None = None, *, enabled: bool = True):
        self.reason = why_not(diffusion, transformer_options) if enabled else "turned off for this check"
        self.on_context: Callable[[torch.Tensor], None] | None = None
        self.collapsed = 0  # text_embedding calls given a collapsed context
        self.passed = 0  # ... given the context unchanged (no zero tail)
        self.expanded = 0  # cross-attention calls that had to rebuild the full context (see _collapsing)
        self.rows: set[tuple[int, int]] = set()  # (rows kept, rows in the context)
        self._diffusion = diffusion
        self._handles: list = []
        self._patched: list[torch.nn.Module] = []
        self._contexts: dict[int, tuple] = {}  # id(context) -> (weakref, version, mask, short or None)
        self._padding: dict[int, tuple] = {}  # id(tensor) -> (weakref, rows its last row stands for)

    @property
    def applies(self) -> bool:
        """True while installed on a model it knows."""
        return bool(self._handles)

    def describe(self) -> str:
        """One line for the check's table: whether the padded text was collapsed, and if not, why."""
        if self.reason is not None:
            return f"no ({self.reason})"
        if not self.collapsed:
            return "no (no text context had a zero padding tail of 2 rows or more)"
        kept = ", ".join(f"{k - 1} of {n}" for k, n in sorted(self.rows))
        done = f"text rows up to the longest prompt ({kept}) plus one row for the zero padding"
        if self.passed or self.expanded:
            return (f"partly ({self.collapsed} of {self.collapsed + self.passed} forwards; {self.expanded} "
                    f"cross-attention calls rebuilt the full context): {done}")
        return f"yes ({done})"

    def _install(self) -> None:
        if self.reason is not None:
            return
        text = self._diffusion.text_embedding
        self._handles.append(text.register_forward_pre_hook(self._shorten))
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
        self._contexts = {}
        self._padding = {}
        self.on_context = None

    def _shorten(self, _module, args):
        if len(args) != 1 or not isinstance(args[0], torch.Tensor) or args[0].ndim != 3:
            return None
        context = args[0]
        entry = self._contexts.get(id(context))
        if entry is None or entry[0]() is not context or entry[1] != _version(context):
            entry = self._split(context)
        _, _, mask, short = entry
        if self.on_context is not None:
            self.on_context(mask)
        if short is None:
            self.passed += 1
            return None
        self.collapsed += 1
        self.rows.add((short.shape[1], context.shape[1]))
        return (short,)

    def _split(self, context: torch.Tensor) -> tuple:
        """The context's entry: the prompts' token mask over the rows kept, and the short context (None: no tail)."""
        # One pass over the context (22 x 512 x 4096 floats in the default check), once per context tensor: the
        # check hands the model the same tensor at every strength (nodes.check.ApplyModelReplay).
        nonzero = context.detach().any(dim=-1)  # [batch, rows]
        mask = nonzero | ~nonzero.any(dim=-1, keepdim=True)  # prompt_token_mask's rule: an empty prompt keeps all
        used = nonzero.any(dim=0).nonzero()
        length = int(used[-1]) + 1 if used.numel() else 0  # rows from here on are zero in every prompt
        total = context.shape[1]
        short = None
        if total - length >= 2:
            short = context[:, :length + 1].contiguous()
            mask = mask[:, :length + 1]
            self._remember(self._padding, short, (weakref.ref(short), total - length))
        entry = (weakref.ref(context), _version(context), mask, short)
        self._remember(self._contexts, context, entry)
        return entry

    def _embedded(self, _module, args, output):
        padding = self._padding_of(args[0]) if args else None
        if padding is not None and isinstance(output, torch.Tensor):
            self._remember(self._padding, output, (weakref.ref(output), padding))

    def _padding_of(self, tensor) -> int | None:
        entry = self._padding.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    @staticmethod
    def _remember(table: dict, tensor: torch.Tensor, entry: tuple) -> None:
        # Entries hold weak references: a context the caller dropped (184 MB in the default check) is freed, and its
        # entry goes at the next insertion.
        for key in [key for key, value in table.items() if value[0]() is None]:
            del table[key]
        table[id(tensor)] = entry

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


def _version(tensor: torch.Tensor) -> int | None:
    """As ``core.check``: an inference-mode tensor has no version counter and is trusted not to be written to."""
    return None if tensor.is_inference() else tensor._version
