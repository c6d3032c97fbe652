"""Synthetic paired activations with a planted concept, shared nuisance and an optional confound."""

import torch


def unit(generator, dim):
    v = torch.randn(dim, generator=generator, dtype=torch.float64)
    return v / v.norm()


def planted(dim=256, pairs=10, neutral=40, *, nuisance_rank=8, nuisance_scale=5.0, confound=0.0,
            confound_neutral_scale=6.0, noise=0.05, seed=0):
    """Returns ``(concept [d], confound [d], unsafe [n, d], safe [n, d], neutral [m, d])``.

    Both sides of a pair share a prompt-specific base and a strong low-rank nuisance; the unsafe side
    adds the concept with a pair-specific strength and, when ``confound`` > 0, a confound direction
    that rides along with it and also varies strongly among neutral prompts.
    """
    g = torch.Generator().manual_seed(seed)
    concept, conf = unit(g, dim), unit(g, dim)
    nuisance = torch.linalg.qr(torch.randn(dim, nuisance_rank, generator=g, dtype=torch.float64))[0]

    def prompts(count):
        base = torch.randn(count, dim, generator=g, dtype=torch.float64) * 0.3
        return base + nuisance_scale * torch.randn(count, nuisance_rank, generator=g, dtype=torch.float64) @ nuisance.T

    shared = prompts(pairs)
    strength = 1.0 + 0.5 * torch.rand(pairs, 1, generator=g, dtype=torch.float64)
    safe = shared + noise * torch.randn(pairs, dim, generator=g, dtype=torch.float64)
    unsafe = (shared + strength * (concept + confound * conf)
              + noise * torch.randn(pairs, dim, generator=g, dtype=torch.float64))
    neutral_x = prompts(neutral) + confound_neutral_scale * torch.randn(neutral, 1, generator=g, dtype=torch.float64) * conf
    return concept, conf, unsafe, safe, neutral_x
