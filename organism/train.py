"""Train the organism on CPU with a fixed seed and a wall-clock budget; writes weights and metrics.

    python -m organism.train --minutes 18

Writes ``organism/weights/organism.safetensors`` (EMA weights, config in the metadata) and
``organism/weights/training.json``. Caption embeddings are computed once for a bank of captions,
so the budget goes to the DiT; clips are rendered fresh every step (random positions).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .dit import DiTConfig, VideoDiT
from .text import TextEncoder
from .world import caption, random_scene, render

WEIGHTS = Path(__file__).resolve().parent / "weights"
log = logging.getLogger("organism.train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=18.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--captions", type=int, default=12000)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--text-noise", type=float, default=0.3,
                        help="Gaussian noise on the text tokens, in units of their per-dimension spread: smooths the "
                             "map from MiniLM's space so that unseen synonyms land on the value of their neighbours")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--patch", type=int, nargs=3, default=list(DiTConfig.patch), metavar=("T", "H", "W"))
    parser.add_argument("--dim", type=int, default=DiTConfig.dim)
    parser.add_argument("--depth", type=int, default=DiTConfig.depth)
    parser.add_argument("--init", type=Path, help="continue from these (EMA) weights with a fresh optimiser")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng, np_rng = random.Random(args.seed), np.random.default_rng(args.seed)

    encoder = TextEncoder()
    scenes = [random_scene(rng) for _ in range(args.captions)]
    captions = [caption(s, rng) for s in scenes]
    start = time.time()
    bank_tokens, bank_mask = encoder.encode(captions + [""])
    log.info("encoded %d captions in %.1fs", len(captions), time.time() - start)
    empty_tokens, empty_mask = bank_tokens[-1], bank_mask[-1]
    spread = bank_tokens[bank_mask].std(0)

    config = DiTConfig(patch=tuple(args.patch), dim=args.dim, depth=args.depth)
    model = VideoDiT(config)
    if args.init:
        model.load_state_dict(load_file(str(args.init)))
    ema = VideoDiT(config)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    began = time.time()
    deadline = began + args.minutes * 60
    step, losses = 0, []
    while time.time() < deadline:
        index = np_rng.integers(0, len(captions), args.batch)
        clips = torch.from_numpy(np.stack([render(scenes[i], np_rng) for i in index])) * 2 - 1
        text, mask = bank_tokens[index].clone(), bank_mask[index].clone()
        drop = torch.from_numpy(np_rng.random(args.batch) < 0.1)
        text = text + args.text_noise * spread * torch.randn_like(text) * mask[..., None]
        text[drop], mask[drop] = empty_tokens, empty_mask
        t = torch.rand(args.batch)
        noise = torch.randn_like(clips)
        tt = t[:, None, None, None, None]
        noisy = (1 - tt) * clips + tt * noise
        loss = torch.nn.functional.mse_loss(model(noisy, t, text, mask), clips)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        # Warm-up, then a cosine over the wall-clock budget: the last minutes anneal instead of bouncing.
        progress = min(1.0, (time.time() - began) / (deadline - began))
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
            log.info("step %d loss %.4f (%.0fs left)", step, float(np.mean(losses[-100:])), deadline - time.time())
            if step % 1000 == 0:
                _save(ema, config, args, step, losses)
    _save(ema, config, args, step, losses)


def _save(model, config, args, step, losses) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    # float16 on disk halves the committed file; the model loads it into float32 parameters.
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(config.as_dict()), "steps": str(step), "seed": str(args.seed)}
    save_file(state, str(args.out / "organism.safetensors"), metadata=meta)
    (args.out / "training.json").write_text(json.dumps({
        "config": config.as_dict(), "steps": step, "batch": args.batch, "seed": args.seed, "minutes": args.minutes,
        "captions": args.captions, "lr": args.lr, "text_noise": args.text_noise, "init": str(args.init) if args.init else None, "final_loss": float(np.mean(losses[-200:])) if losses else None,
        "loss_curve": [float(np.mean(losses[i:i + 100])) for i in range(0, len(losses), 100)],
    }, indent=1))


if __name__ == "__main__":
    main()
