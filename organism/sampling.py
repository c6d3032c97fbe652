"""Flow-matching sampling for the organism: Euler steps from noise (t = 1) to data (t = 0) with CFG.

Convention: ``x_t = (1 - t) x0 + t noise``; the model predicts ``x0``, so the velocity is ``(x_t - x0) / t``. Clips live in
[-1, 1] inside the model and [0, 1] outside.
"""

from __future__ import annotations

import torch

from .dit import VideoDiT
from .text import TextEncoder


#: Classifier-free guidance of every generation the benches make (``generate``'s default).
GUIDANCE = 4.0


@torch.no_grad()
def generate(model: VideoDiT, encoder: TextEncoder, prompts: list[str], *, seeds: list[int], steps: int = 16,
             guidance: float = GUIDANCE, negative: str | list[str] = "") -> torch.Tensor:
    """Clips ``[b, frames, size, size, 3]`` in [0, 1]; ``seeds[i]`` fixes prompt i's noise."""
    config = model.config
    noise = torch.stack([torch.randn(config.frames, config.size, config.size, 3,
                                     generator=torch.Generator().manual_seed(s)) for s in seeds])
    negatives = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
    text, mask = encoder.encode(list(prompts) + negatives)
    x = noise
    times = torch.linspace(1.0, 0.0, steps + 1)
    for i in range(steps):
        t, t_next = times[i], times[i + 1]
        both = torch.cat([x, x])
        clean = model(both, torch.full((both.shape[0],), float(t)), text, mask)
        cond, uncond = clean.chunk(2)
        guided = uncond + guidance * (cond - uncond)  # CFG on x0 == CFG on the velocity at fixed (x, t)
        x = x + (t_next - t) * (x - guided) / t
    return ((x.clamp(-1, 1) + 1) / 2)
