"""Stacking ComfyUI conditionings so both sides of a pair run in one batched forward."""

from __future__ import annotations

import copy

import torch


def stack_conditionings(conditionings) -> list:
    """One CONDITIONING whose batch row i is ``conditionings[i]`` (each a single-entry CONDITIONING).

    Token lengths must agree (Wan pads its T5 context to 512 tokens); tensor extras with a batch
    axis (``pooled_output``, a CLIP-vision output's hidden states) are concatenated, identical
    non-tensor extras are kept.
    """
    entries = []
    for index, cond in enumerate(conditionings):
        if len(cond) != 1:
            raise ValueError(f"conditioning {index} has {len(cond)} entries; Pair Encoder makes one per prompt")
        entries.append(cond[0])
    lengths = {entry[0].shape[1] for entry in entries}
    if len(lengths) != 1:
        raise ValueError(f"prompts encode to different token lengths {sorted(lengths)}; "
                         "this text encoder does not pad, shorten the longest prompts")
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
