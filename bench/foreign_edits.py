"""Other methods' edits of the organism, for benches that must read edits the pack did not make (a library module of
``bench/``, not a benchmark).

Unlearning Audit (``core.audit``) reads any edit of a model against its original. These are edits of three kinds it
has to read, each with a knob that grades it:

- :func:`uce_edit`: Unified Concept Editing (Gandikota et al., WACV 2024), the closed-form editor of cross-attention
  that erases a concept by sending its text tokens' keys and values to an anchor's, while preserving other prompts'.
  Written from the paper's update (with its published defaults, ``lamb = 0.1``, ``preserve_scale = max(0.1,
  1 / preserved prompts)``), for a bidirectional text encoder: every token of the concept prompt is sent to its
  aligned token of the anchor prompt (:func:`align_tokens`), since MiniLM's tokens all carry the prompt's context.
- :func:`ablation_finetune`: a fine-tune in the manner of Concept Ablation (Kumari et al., ICCV 2023): the edited
  model's prediction for the concept prompt is trained toward the frozen original's for the anchor prompt, on noised
  clips that the original draws for the anchor, with the same loss on neutral prompts toward themselves to preserve
  them. Adam on the cross-attention ``k`` / ``v`` (or on every weight), for a number of steps.
- :func:`weight_noise`: damage that is no unlearning at all: Gaussian noise on every attention and FFN weight of the
  blocks, in units of each weight's own standard deviation. The concept stays; attributes suffer.

Every function returns a new model and leaves the one it is given untouched. Anchors are the safe sides of the
estimation pairs the pack's own edit is fitted from, so every method sees the same data.
"""

from __future__ import annotations

import copy
import difflib
import random
from collections.abc import Sequence

import torch

from organism.dit import VideoDiT
from organism.text import MAX_TOKENS, TextEncoder

#: UCE's published defaults (its ``train-scripts/train_erase.py``).
UCE_LAMBDA = 0.1
UCE_MIN_PRESERVE_SCALE = 0.1


def align_tokens(unsafe: Sequence[int], safe: Sequence[int]) -> list[int]:
    """For every token of the unsafe prompt (token ids, ``[CLS]`` and ``[SEP]`` included), the index of its
    counterpart in the safe prompt: tokens both share map to each other; tokens only the unsafe prompt has (the
    concept's words) map to the safe token that takes their place, the next shared one ("the Nexo emblem" -> "the
    emblem": "Nexo" -> "emblem"); a replaced run maps proportionally onto its replacement."""
    if not unsafe or not safe:
        raise ValueError(f"align_tokens needs tokens on both sides, got {len(unsafe)} and {len(safe)}")
    aligned = []
    for tag, i0, i1, j0, j1 in difflib.SequenceMatcher(None, list(unsafe), list(safe), autojunk=False).get_opcodes():
        if tag == "equal":
            aligned += range(j0, j1)
        elif tag == "replace":
            aligned += [j0 + (i - i0) * (j1 - j0) // (i1 - i0) for i in range(i0, i1)]
        elif tag == "delete":
            aligned += [min(j0, len(safe) - 1)] * (i1 - i0)
    return aligned


def _token_ids(encoder: TextEncoder, prompt: str) -> list[int]:
    return encoder.tokenizer(prompt, truncation=True, max_length=MAX_TOKENS)["input_ids"]


@torch.no_grad()
def _contexts(model: VideoDiT, encoder: TextEncoder, prompts: list[str]) -> list[torch.Tensor]:
    """What every block's ``cross_attn.k`` / ``v`` read for each prompt: ``text_embedding`` of its real tokens,
    ``[tokens, dim]`` each, float64."""
    tokens, mask = encoder.encode(prompts)
    context = model.text_embedding(tokens).double()
    return [context[i][mask[i]] for i in range(len(prompts))]


@torch.no_grad()
def uce_edit(model: VideoDiT, encoder: TextEncoder, pairs, preserve: Sequence[str], *, erase_scale: float = 1.0,
             preserve_scale: float | None = None, lamb: float = UCE_LAMBDA, projections: Sequence[str] = ("k", "v"),
             ) -> VideoDiT:
    """UCE on every block's ``cross_attn.<projection>``: ``W' = (lamb W + erase_scale sum_e W c*_e c_e^T +
    preserve_scale sum_p W c_p c_p^T) (lamb I + erase_scale sum_e c_e c_e^T + preserve_scale sum_p c_p c_p^T)^-1``,
    where ``c_e`` runs over the unsafe prompts' tokens, ``c*_e`` over their aligned safe tokens, ``c_p`` over the
    tokens of the ``preserve`` prompts and of the anchors (the safe sides). ``preserve_scale=None``: UCE's default,
    ``max(0.1, 1 / len(preserved prompts))``; 0 preserves nothing but ``lamb W``."""
    if not pairs:
        raise ValueError("uce_edit needs at least one (unsafe, safe) pair")
    unsafe, safe = [p.unsafe for p in pairs], [p.safe for p in pairs]
    kept = list(dict.fromkeys([*preserve, *safe]))
    if preserve_scale is None:
        preserve_scale = max(UCE_MIN_PRESERVE_SCALE, 1.0 / len(kept))
    erase_in, anchor_in = [], []
    for u, s, cu, cs in zip(unsafe, safe, _contexts(model, encoder, unsafe), _contexts(model, encoder, safe)):
        to = align_tokens(_token_ids(encoder, u)[:len(cu)], _token_ids(encoder, s)[:len(cs)])
        erase_in.append(cu)
        anchor_in.append(cs[to])
    c_e, c_star, c_p = torch.cat(erase_in), torch.cat(anchor_in), torch.cat(_contexts(model, encoder, kept))
    eye = torch.eye(c_e.shape[1], dtype=torch.float64)
    inverse = torch.linalg.inv(lamb * eye + erase_scale * c_e.T @ c_e + preserve_scale * c_p.T @ c_p)
    edited = copy.deepcopy(model)
    for block in edited.blocks:
        for name in projections:
            layer = getattr(block.cross_attn, name)
            w = layer.weight.double()
            numerator = lamb * w + erase_scale * (w @ c_star.T) @ c_e + preserve_scale * (w @ c_p.T) @ c_p
            layer.weight.copy_((numerator @ inverse).to(layer.weight.dtype))
    return edited


def ablation_finetune(model: VideoDiT, encoder: TextEncoder, pairs, preserve: Sequence[str], *, steps: int,
                      lr: float = 3e-4, train: str = "cross_kv", batch: int = 8, anchor_steps: int = 16,
                      seed: int = 0) -> VideoDiT:
    """Concept-Ablation-style fine-tune: ``|f(x_t, unsafe) - f0(x_t, safe)|^2 + |f(x_t, p) - f0(x_t, p)|^2`` over
    batches of pairs and ``preserve`` prompts, ``x_t = (1 - t) x0 + t noise`` with ``x0`` the clip the original
    ``f0`` draws for the anchor (or the preserved prompt) and ``t`` uniform in [0.02, 1]. ``train``: ``"cross_kv"``
    (every block's ``cross_attn.k`` and ``v``) or ``"all"``."""
    from organism.sampling import generate

    if steps < 1:
        raise ValueError(f"ablation_finetune needs steps >= 1, got {steps}")
    if train not in ("cross_kv", "all"):
        raise ValueError(f"train must be 'cross_kv' or 'all', got {train!r}")
    unsafe, safe = [p.unsafe for p in pairs], [p.safe for p in pairs]
    anchors = list(safe) + list(preserve)
    with torch.no_grad():
        clips = generate(model, encoder, anchors, seeds=[10_000 + i for i in range(len(anchors))],
                         steps=anchor_steps) * 2 - 1
    conditions = [(u, s, clips[i]) for i, (u, s) in enumerate(zip(unsafe, safe))]
    conditions += [(p, p, clips[len(safe) + i]) for i, p in enumerate(preserve)]
    edited = copy.deepcopy(model)
    for parameter in edited.parameters():
        parameter.requires_grad_(train == "all")
    if train == "cross_kv":
        for block in edited.blocks:
            for layer in (block.cross_attn.k, block.cross_attn.v):
                layer.weight.requires_grad_(True)
                layer.bias.requires_grad_(True)
    optimizer = torch.optim.Adam([p for p in edited.parameters() if p.requires_grad], lr=lr)
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    with torch.enable_grad():  # a caller's no_grad would leave nothing to train
        for _ in range(steps):
            chosen = [conditions[rng.randrange(len(conditions))] for _ in range(batch)]
            x0 = torch.stack([c[2] for c in chosen])
            t = torch.rand(batch, generator=generator) * 0.98 + 0.02
            noise = torch.randn(x0.shape, generator=generator)
            noisy = (1 - t)[:, None, None, None, None] * x0 + t[:, None, None, None, None] * noise
            text, mask = encoder.encode([c[0] for c in chosen])
            with torch.no_grad():
                anchor_text, anchor_mask = encoder.encode([c[1] for c in chosen])
                target = model(noisy, t, anchor_text, anchor_mask)
            loss = (edited(noisy, t, text, mask) - target).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for parameter in edited.parameters():
        parameter.requires_grad_(False)
    return edited.eval()


@torch.no_grad()
def weight_noise(model: VideoDiT, scale: float, seed: int = 0) -> VideoDiT:
    """Every attention and FFN weight of the blocks plus ``scale`` x its own standard deviation x N(0, 1) (seeded;
    the adaLN ``modulation``, which no method here edits, is left alone)."""
    if scale < 0:
        raise ValueError(f"weight_noise needs scale >= 0, got {scale}")
    edited, generator = copy.deepcopy(model), torch.Generator().manual_seed(seed)
    for name, module in edited.blocks.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("modulation"):
            w = module.weight
            w.add_(scale * w.std() * torch.randn(w.shape, generator=generator))
    return edited
