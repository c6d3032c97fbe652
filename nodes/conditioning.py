"""Stacking ComfyUI conditionings so both sides of a pair run in one batched forward."""

from __future__ import annotations

import copy

import torch


def can_share_a_call(conditionings, *, batches_text_masks: bool) -> bool:
    """True when the prompts (single-entry CONDITIONINGs) can run in one model call with the same result as one call
    each: their text contexts have one length, and either none carries an ``attention_mask`` or the family's model
    reads a batch of masks (``Adapter.batches_text_masks``). HunyuanVideo's text encoder gives each prompt its own
    length, and its model takes a mask for one prompt only; Mochi crops a whole batch's text to one token count."""
    entries = [cond[0] for cond in conditionings]
    if len({entry[0].shape[1] for entry in entries}) != 1:
        return False
    masked = [entry[1].get("attention_mask") is not None for entry in entries]
    return not any(masked) or (all(masked) and batches_text_masks)


def prompt_token_mask(context: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[batch, tokens]``: True on the rows of a text context ``[batch, tokens, d]`` that hold a prompt token: the
    encoder's ``attention_mask`` where it gave one (T5 padding rows of LTX-Video and Mochi are not zeros), else the
    nonzero rows (ComfyUI zeroes the padding rows of Wan's T5 context). A row with no token left keeps every row."""
    if attention_mask is not None:
        mask = attention_mask.detach().reshape(context.shape[0], -1).ne(0).to(context.device)
        if mask.shape[1] != context.shape[1]:
            raise ValueError(f"attention_mask covers {mask.shape[1]} tokens but the text context has "
                             f"{context.shape[1]}: the conditioning was changed after encoding; encode it again")
    else:
        mask = context.detach().ne(0).any(dim=-1)  # no |context| copy: a 22-prompt Wan context is 184 MB
    return mask | ~mask.any(dim=-1, keepdim=True)


def row_token_masks(conditionings) -> torch.Tensor:
    """``[prompts, longest]``: each prompt's :func:`prompt_token_mask`, padded with False to the longest context
    (for prompts that run one model call each, ``ActivationRecorder.set_token_mask``)."""
    masks = [prompt_token_mask(cond[0][0], cond[0][1].get("attention_mask"))[0].cpu() for cond in conditionings]
    longest = max(mask.shape[0] for mask in masks)
    out = torch.zeros(len(masks), longest, dtype=torch.bool)
    for row, mask in enumerate(masks):
        out[row, :mask.shape[0]] = mask
    return out


def stack_conditionings(conditionings) -> list:
    """One CONDITIONING whose batch row i is ``conditionings[i]`` (each a single-entry CONDITIONING).

    Token lengths must agree (Wan pads its T5 context to 512 tokens; prompts that cannot share a call run one
    call each, see :func:`can_share_a_call`); tensor extras with a batch axis (``pooled_output``, an
    ``attention_mask``, a CLIP-vision output's hidden states) are concatenated, identical non-tensor extras are kept.
    """
    entries = []
    for index, cond in enumerate(conditionings):
        if len(cond) != 1:
            raise ValueError(f"conditioning {index} has {len(cond)} entries; Pair Encoder makes one per prompt")
        entries.append(cond[0])
    lengths = {entry[0].shape[1] for entry in entries}
    if len(lengths) != 1:
        raise ValueError(f"prompts encode to different token lengths {sorted(lengths)} and cannot be stacked into "
                         "one batch; run them one model call each (can_share_a_call)")
    tensor = torch.cat([entry[0] for entry in entries])
    extras = {}
    for key in entries[0][1]:
        values = [entry[1].get(key) for entry in entries]
        extras[key] = _stack_extra(key, values)
    return [[tensor, extras]]


def _stack_extra(key, values):
    first = values[0]
    if first is None:
        if any(v is not None for v in values):
            raise ValueError(f"conditioning extra {key!r} is set for some prompts only")
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(values)
    if hasattr(first, "penultimate_hidden_states"):  # a CLIP vision output: stack each of its tensors
        stacked = copy.copy(first)
        for attr, value in vars(first).items():
            if isinstance(value, torch.Tensor):
                setattr(stacked, attr, torch.cat([getattr(v, attr) for v in values]))
        return stacked
    if all(v == first for v in values):
        return first
    raise ValueError(f"conditioning extra {key!r} differs between prompts and cannot be batched")
