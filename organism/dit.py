"""A tiny video diffusion transformer (flow matching) whose layer names mirror Wan's.

Video ``[b, frames, h, w, 3]`` -> tubelet patches ``(8, 4, 4)`` (every frame of a 4 x 4 window in one token,
as ViViT's tubelets: the frames of a token cannot disagree) -> tokens ``[b, n, dim]``. The network predicts
the clean clip; a patch (384 values) is wider than a token, so predicting the noise-laden velocity directly
would squeeze the noise through the token width. Sampling turns the prediction into a velocity. Each block: adaLN-
modulated self-attention (``self_attn.q/k/v/o``), cross-attention to the projected text
(``cross_attn.q/k/v/o``; ``k`` and ``v`` read the text, as in Wan), and an adaLN-modulated FFN
(``ffn.0``, ``ffn.2``). ``text_embedding`` projects the 384-d MiniLM tokens to ``dim``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass(frozen=True)
class DiTConfig:
    frames: int = 8
    size: int = 16
    patch: tuple = (8, 4, 4)
    dim: int = 192
    depth: int = 4
    heads: int = 4
    text_dim: int = 384

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, context, mask=None):
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (self.q(x), self.k(context), self.v(context)))
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.o(rearrange(out, "b h n d -> b n (h d)"))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim, elementwise_affine=False) for _ in range(3))
        self.self_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x, time, context, mask):
        s1, c1, g1, s2, c2, g2 = self.modulation(time)[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + c1) + s1
        x = x + (1 + g1) * self.self_attn(h, h)
        x = x + self.cross_attn(self.norm3(x), context, mask)
        return x + (1 + g2) * self.ffn(self.norm2(x) * (1 + c2) + s2)


class VideoDiT(nn.Module):
    def __init__(self, config: DiTConfig = DiTConfig()):
        super().__init__()
        self.config = config
        pt, ph, pw = config.patch
        self.tokens = (config.frames // pt) * (config.size // ph) * (config.size // pw)
        patch_dim = 3 * pt * ph * pw
        self.patch_embedding = nn.Linear(patch_dim, config.dim)
        self.position = nn.Parameter(torch.randn(1, self.tokens, config.dim) * 0.02)
        self.text_embedding = nn.Sequential(nn.Linear(config.text_dim, config.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(config.dim, config.dim))
        self.time_embedding = nn.Sequential(nn.Linear(256, config.dim), nn.SiLU(), nn.Linear(config.dim, config.dim))
        self.blocks = nn.ModuleList(Block(config.dim, config.heads) for _ in range(config.depth))
        self.head_norm = nn.LayerNorm(config.dim, elementwise_affine=False)
        # A tubelet holds more values than a token has dimensions: an MLP head, not a linear map, draws it.
        self.head = nn.Sequential(nn.Linear(config.dim, 4 * config.dim), nn.GELU(approximate="tanh"),
                                  nn.Linear(4 * config.dim, patch_dim))
        nn.init.zeros_(self.head[2].weight)
        nn.init.zeros_(self.head[2].bias)

    def forward(self, video, t, text, mask):
        """Predicted clean clip for ``video [b, f, h, w, 3]`` at flow time ``t [b]`` given text tokens ``[b, l, 384]``."""
        pt, ph, pw = self.config.patch
        x = rearrange(video, "b (f pt) (h ph) (w pw) c -> b (f h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)
        x = self.patch_embedding(x) + self.position
        time = self.time_embedding(_timestep_features(t))
        context = self.text_embedding(text)
        # A fully padded (empty) prompt would mask every key: let it attend to its padding instead.
        mask = mask | ~mask.any(-1, keepdim=True)
        for block in self.blocks:
            x = block(x, time, context, mask)
        out = self.head(self.head_norm(x))
        f, s = self.config.frames // pt, self.config.size // ph
        return rearrange(out, "b (f h w) (pt ph pw c) -> b (f pt) (h ph) (w pw) c", f=f, h=s, w=s, pt=pt, ph=ph, pw=pw)


def _timestep_features(t: torch.Tensor) -> torch.Tensor:
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    angles = (t.float()[:, None] * 1000) * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)
