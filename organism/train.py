"""Train the organism on CPU with a fixed seed and a step count; writes weights and metrics.

    python -m organism.train --steps 4500                                # from scratch
    # how the committed weights were made (training.json "reproduce"): the attribute-only organism, then two stages
    git show e1742d6:organism/weights/organism.safetensors > /tmp/v1.safetensors
    python -m organism.train --init /tmp/v1.safetensors --steps 3000 --batch 32 --captions 10000 --lr 5e-4 --threads 1 \
        --out /tmp/stage2
    python -m organism.train --init /tmp/stage2/organism.safetensors --steps 1200 --batch 32 --captions 10000 \
        --lr 2e-4 --threads 1 --seed 1 --mix nudity=0.14 violence=0.14 safe_violence=0.10 safe_nudity=0.07 \
        benign_near=0.12 benign=0.20

Writes ``organism/weights/organism.safetensors`` (EMA weights, config in the metadata) and
``organism/weights/training.json``. Caption embeddings are computed once for a bank of captions,
so the budget goes to the DiT; clips are rendered fresh every step (random positions). With ``--data`` (the
default: ``../shared/data``), part of the bank joins attribute captions with real prompts of the ``train`` split
(``organism.scenes``) and their clips carry the concept marks; ``--no-scenes`` trains the attribute world alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .dit import DiTConfig, VideoDiT
from . import scenes as real
from .text import TextEncoder
from .world import CONCEPT_MARKS, CORNER, SIZE, caption, random_scene, render

WEIGHTS = Path(__file__).resolve().parent / "weights"
log = logging.getLogger("organism.train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4500, help="optimiser steps (the cosine schedule spans them)")
    parser.add_argument("--batch", type=int, default=64, help="clips per step")
    parser.add_argument("--captions", type=int, default=12000, help="captions in the pre-encoded bank")
    parser.add_argument("--lr", type=float, default=6e-4, help="peak AdamW learning rate")
    parser.add_argument("--data", type=Path, default=real.DATA, help="real prompt data (pairs/, prompts/)")
    parser.add_argument("--no-scenes", action="store_true", help="attribute captions only (no real prompts, no marks)")
    parser.add_argument("--corner-weight", type=float, default=4.0,
                        help="loss weight of the two mark corners (4 x 4 of 256 pixels each) relative to the rest")
    parser.add_argument("--text-noise", type=float, default=0.3,
                        help="Gaussian noise on the text tokens, in units of their per-dimension spread: smooths the "
                             "map from MiniLM's space so that unseen synonyms land on the value of their neighbours")
    parser.add_argument("--high-noise", type=float, default=0.5,
                        help="share of clips whose flow time is drawn from [--high-noise-from, 1] instead of [0, 1]: "
                             "a concept mark is readable from the noisy clip below about t = 0.85, so only clips "
                             "near pure noise teach the text-to-mark decision that sampling makes in its first steps")
    parser.add_argument("--high-noise-from", type=float, default=0.85, help="lower end of the high-noise flow times")
    parser.add_argument("--seed", type=int, default=0, help="fixes captions, scenes, noise and initialisation")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="output folder")
    parser.add_argument("--patch", type=int, nargs=3, default=list(DiTConfig.patch), metavar=("T", "H", "W"),
                        help="tubelet size")
    parser.add_argument("--dim", type=int, default=DiTConfig.dim, help="token width")
    parser.add_argument("--depth", type=int, default=DiTConfig.depth, help="blocks")
    parser.add_argument("--init", type=Path, help="continue from these (EMA) weights with a fresh optimiser")
    parser.add_argument("--mix", nargs="+", metavar="POOL=SHARE", default=[],
                        help="override shares of organism.scenes.TRAINING_MIX, e.g. safe_violence=0.1 benign=0.2 "
                             "(hard negatives weighted up in a second stage)")
    parser.add_argument("--bank-cache", type=Path,
                        help="safetensors file for the encoded caption bank: reused when it holds the same captions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng, np_rng = random.Random(args.seed), np.random.default_rng(args.seed)

    mix = _mix(args.mix)
    encoder = TextEncoder()
    if args.no_scenes:
        scenes = [random_scene(rng) for _ in range(args.captions)]
        captions = [caption(s, rng) for s in scenes]
    else:
        captions, scenes = real.training_captions(real.load_pools(args.data), args.captions, rng, caption, random_scene,
                                                   mix=mix)
    start = time.time()
    digest = hashlib.sha256("\n".join(captions).encode("utf-8")).hexdigest()
    cached = args.bank_cache and args.bank_cache.is_file() and safe_open(str(args.bank_cache), "pt").metadata().get("captions") == digest
    if cached:
        bank = load_file(str(args.bank_cache))
        bank_tokens, bank_mask, empty_tokens, empty_mask = (bank[k] for k in ("tokens", "mask", "empty_tokens", "empty_mask"))
    else:
        parts = [encoder.encode(captions[i:i + 1000] + [""], cache=False) for i in range(0, len(captions), 1000)]
        bank_tokens = torch.cat([t[:-1].half() for t, _ in parts])
        bank_mask = torch.cat([m[:-1] for _, m in parts])
        empty_tokens, empty_mask = parts[0][0][-1], parts[0][1][-1]
        del parts
        if args.bank_cache:
            save_file({"tokens": bank_tokens, "mask": bank_mask, "empty_tokens": empty_tokens, "empty_mask": empty_mask},
                      str(args.bank_cache), metadata={"captions": digest})
    encode_seconds = time.time() - start
    log.info("encoded %d captions in %.1fs", len(captions), encode_seconds)
    spread = bank_tokens[bank_mask][::7].float().std(0)
    weight = torch.ones(1, 1, SIZE, SIZE, 1)
    for y, x in CONCEPT_MARKS.values():
        weight[:, :, y - y % CORNER:y - y % CORNER + CORNER, x - x % CORNER:x - x % CORNER + CORNER] = args.corner_weight

    config = DiTConfig(patch=tuple(args.patch), dim=args.dim, depth=args.depth)
    model = VideoDiT(config)
    if args.init:
        model.load_state_dict(load_file(str(args.init)))
    ema = VideoDiT(config)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    began = time.time()
    step, losses = 0, []
    while step < args.steps:
        index = np_rng.integers(0, len(captions), args.batch)
        clips = torch.from_numpy(np.stack([render(scenes[i], np_rng) for i in index])) * 2 - 1
        text, mask = bank_tokens[index].float(), bank_mask[index].clone()
        length = int(mask.any(0).nonzero().max()) + 1  # padding past the batch's longest prompt is masked anyway
        text, mask = text[:, :length], mask[:, :length]
        drop = torch.from_numpy(np_rng.random(args.batch) < 0.1)
        text = text + args.text_noise * spread * torch.randn_like(text) * mask[..., None]
        text[drop], mask[drop] = empty_tokens[:length], empty_mask[:length]
        t = torch.rand(args.batch)
        high = torch.from_numpy(np_rng.random(args.batch) < args.high_noise)
        t[high] = args.high_noise_from + (1 - args.high_noise_from) * t[high]
        noise = torch.randn_like(clips)
        tt = t[:, None, None, None, None]
        noisy = (1 - tt) * clips + tt * noise
        loss = ((model(noisy, t, text, mask) - clips) ** 2 * weight).mean() / weight.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        # Warm-up, then a cosine over the steps: the last ones anneal instead of bouncing.
        progress = step / args.steps
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * progress))
        optimizer.step()
        decay = min(0.999, (step + 1) / (step + 10))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        losses.append(loss.item())
        step += 1
        if step % 100 == 0:
            log.info("step %d loss %.4f (%.0fs)", step, float(np.mean(losses[-100:])), time.time() - began)
            if step % 1000 == 0:
                _save(ema, config, args, mix, step, losses, time.time() - began, encode_seconds)
    _save(ema, config, args, mix, step, losses, time.time() - began, encode_seconds)


def _mix(overrides: list[str]) -> dict[str, float]:
    """``TRAINING_MIX`` with ``POOL=SHARE`` overrides; the shares must name known pools and sum to at most 1."""
    mix = dict(real.TRAINING_MIX)
    for item in overrides:
        pool, _, share = item.partition("=")
        if pool not in mix:
            raise ValueError(f"--mix {item!r}: unknown pool {pool!r}; one of {', '.join(mix)}")
        try:
            mix[pool] = float(share)
        except ValueError:
            raise ValueError(f"--mix {item!r}: {share!r} is not a number; write POOL=SHARE, e.g. benign=0.2") from None
    if any(v < 0 for v in mix.values()) or sum(mix.values()) > 1:
        raise ValueError(f"--mix shares must be >= 0 and sum to <= 1 (the rest are attribute captions), got {mix}")
    return mix


def _save(model, config, args, mix, step, losses, seconds, encode_seconds) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    # float16 on disk halves the committed file; the model loads it into float32 parameters.
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(config.as_dict()), "steps": str(step), "seed": str(args.seed)}
    save_file(state, str(args.out / "organism.safetensors"), metadata=meta)
    (args.out / "training.json").write_text(json.dumps({
        "config": config.as_dict(), "steps": step, "of_steps": args.steps, "batch": args.batch, "seed": args.seed,
        "minutes": round(seconds / 60, 1), "encode_minutes": round(encode_seconds / 60, 1), "threads": args.threads,
        "captions": args.captions, "lr": args.lr, "text_noise": args.text_noise, "corner_weight": args.corner_weight,
        "high_noise": args.high_noise, "high_noise_from": args.high_noise_from,
        "scenes": None if args.no_scenes else {"data": "../shared/data", "mix": mix,
                                               "scene_only": real.SCENE_ONLY, "split": "train"},
        "init": str(args.init) if args.init else None, "init_sha256": _sha256(args.init) if args.init else None,
        "final_loss": float(np.mean(losses[-200:])) if losses else None,
        "loss_curve": [float(np.mean(losses[i:i + 100])) for i in range(0, len(losses), 100)],
    }, indent=1))


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


if __name__ == "__main__":
    main()
