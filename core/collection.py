"""Measuring what the edited layers read, for every prompt pair: the half of Collect Activations that knows no host.

The host supplies two callables and this module does the rest, so that ComfyUI's nodes (``nodes/collect.py``,
through ComfyUI's sampling stack) and the organism (``organism/experiment.py``, a plain forward) measure alike:

- ``prepare(conditionings) -> (batch, token_mask)``: stack the conditionings of one batch's rows (in row
  order) into whatever ``forward`` takes; ``token_mask`` ``[rows, tokens]`` is True on the rows of the text
  context that hold a prompt token (``None``: pool every row).
- ``forward(batch, seeds, timesteps)``: run the model once per timestep, in order, on the whole batch, with row
  i noised by ``seeds[i]``.

This module plans the batches (both sides of a pair always share one forward and one noise seed), pools
text-side layers over the prompt's own tokens (:meth:`ActivationRecorder.set_token_mask`), records one
representative layer per *shared input* (layers that read one tensor, such as every Wan block's text-side
``cross_attn.k`` / ``cross_attn.v``, which read the projected text context), and feeds a
:class:`~core.refusal.RefusalFitter` that fits each input once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .activations import ActivationRecorder
from .refusal import RefusalFitter

#: A neutral prompt j is noised with ``seed + NEUTRAL_SEED_OFFSET + j``: its noise does not depend on how many
#: pairs there are (pair i uses ``seed + i`` on both sides).
NEUTRAL_SEED_OFFSET = 1000
ROLES = ("unsafe", "safe", "neutral")


@dataclass(frozen=True)
class Row:
    """One row of a batch: which prompt (``role`` ``"unsafe"`` / ``"safe"`` / ``"neutral"``, ``index``) and the
    seed of its noise."""

    role: str
    index: int
    seed: int


def plan_batches(pairs: int, neutral: int, *, max_rows: int, seed: int = 0) -> list[tuple[Row, ...]]:
    """Batches of at most ``max_rows`` rows: each pair's two sides together (same seed), then the neutral prompts.

    Args:
        pairs, neutral: how many prompt pairs and neutral prompts.
        max_rows: rows per forward; 2 runs one pair per forward (bounded memory for video-token layers), a
            large value measures many prompts at once (text-side layers on the smallest latent).
        seed: pair i is noised with ``seed + i``, neutral prompt j with ``seed + NEUTRAL_SEED_OFFSET + j``.
    """
    if max_rows < 2:
        raise ValueError(f"max_rows must be >= 2 (both sides of a pair share one forward), got {max_rows}")
    if pairs < 1:
        raise ValueError("no prompt pairs to measure: give at least one pair")
    groups = [(Row("unsafe", i, seed + i), Row("safe", i, seed + i)) for i in range(pairs)]
    groups += [(Row("neutral", j, seed + NEUTRAL_SEED_OFFSET + j),) for j in range(neutral)]
    batches: list[tuple[Row, ...]] = []
    current: tuple[Row, ...] = ()
    for group in groups:
        if current and len(current) + len(group) > max_rows:
            batches.append(current)
            current = ()
        current += group
    return batches + [current] if current else batches


def collect(
    module: torch.nn.Module,
    layers: Sequence[str],
    *,
    unsafe: Sequence[Any],
    safe: Sequence[Any],
    neutral: Sequence[Any] = (),
    prepare: Callable[[list[Any]], tuple[Any, torch.Tensor | None]],
    forward: Callable[[Any, list[int], Sequence[Any]], None],
    timesteps: Sequence[Any],
    seed: int = 0,
    max_rows: int = 2,
    text_layers: Sequence[str] = (),
    shared: Mapping[str, Sequence[str]] | None = None,
    fitter: RefusalFitter | None = None,
    batch_dim: int = 0,
) -> RefusalFitter:
    """Record the inputs of ``layers`` for both sides of every pair and for the neutral prompts; return the fitter.

    Args:
        module: the model whose sub-modules ``layers`` name (the recorder hooks it).
        layers: dotted names of the layers to edit, in the order the refusal vector lists them.
        unsafe, safe: per pair, what ``prepare`` turns into the model's conditioning (a ComfyUI CONDITIONING, a
            prompt string); ``unsafe[i]`` pairs with ``safe[i]``.
        neutral: the same for neutral prompts (their covariance is the contrast); may be empty.
        prepare, forward: the host's half, see the module docstring.
        timesteps: passed to ``forward`` as given (sigmas, flow times); one recorded row per row and timestep.
        seed, max_rows: see :func:`plan_batches`.
        text_layers: the layers among ``layers`` whose input is the text context, one row per prompt token; they
            are pooled over ``token_mask``'s True rows.
        shared: input name -> the layers that read that one tensor (``Adapter.shared_inputs``); one of them is
            recorded and the fitter fits the input once for all of them.
        fitter: add to this fitter instead of a new one.
        batch_dim: the batch's axis in the layers' inputs (``ActivationRecorder``; -2 for Cosmos 1.0's token-major
            layout).

    Rows reach the fitter pair-major (pair i at every timestep, then pair i + 1), whatever the batching.
    """
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise ValueError("no layers to record: pass the dotted names of the layers to edit")
    if len(unsafe) != len(safe):
        raise ValueError(f"{len(unsafe)} unsafe and {len(safe)} safe conditionings: give one of each per pair")
    timesteps = list(timesteps)
    if not timesteps:
        raise ValueError("no timesteps: give at least one")
    source_of: dict[str, str] = {}
    for source, readers in (shared or {}).items():
        for layer in readers:
            if layer in layers and source_of.setdefault(layer, source) != source:
                raise ValueError(f"layer {layer!r} is declared to read both {source_of[layer]!r} and {source!r}")
    fitter = fitter if fitter is not None else RefusalFitter()
    recorded: dict[str, str] = {}  # recorded layer -> the fitter's name for its input
    for layer in layers:
        source = source_of.get(layer, layer)
        fitter.share(source, [layer])  # fixes the layer order; shared layers name their common input
        if source not in recorded.values():
            recorded[layer] = source  # the first reader of a shared input represents it
    text = set(text_layers)
    masked = [layer for layer in recorded if layer in text]
    prompts = {"unsafe": list(unsafe), "safe": list(safe), "neutral": list(neutral)}
    batches = plan_batches(len(unsafe), len(neutral), max_rows=max_rows, seed=seed)

    with ActivationRecorder(module, list(recorded), batch_dim=batch_dim) as recorder:  # hooks removed on any exit
        for batch in batches:
            inputs, token_mask = prepare([prompts[row.role][row.index] for row in batch])
            recorder.set_token_mask(token_mask if masked else None, masked)
            forward(inputs, [row.seed for row in batch], timesteps)
            rows = recorder.take()
            for layer, values in rows.items():
                if values.shape[0] != len(timesteps) * len(batch):
                    raise ValueError(f"{layer!r} recorded {values.shape[0]} rows for a batch of {len(batch)} at "
                                     f"{len(timesteps)} timesteps: forward must run the model once per timestep on "
                                     "the whole batch (does something on the model answer calls without running "
                                     "its layers, such as a step cache like TeaCache? measure the model from before "
                                     "it)")
                per_row = values.reshape(len(timesteps), len(batch), -1).transpose(0, 1)  # [rows, timesteps, d]
                pick = {role: [k for k, row in enumerate(batch) if row.role == role] for role in ROLES}
                flat = lambda role: per_row[pick[role]].reshape(-1, values.shape[1])  # noqa: E731
                if pick["unsafe"]:
                    fitter.update(recorded[layer], flat("unsafe"), flat("safe"))
                if pick["neutral"]:
                    fitter.update_neutral(recorded[layer], flat("neutral"))
    return fitter
