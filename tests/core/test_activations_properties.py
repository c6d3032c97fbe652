"""Properties of core.activations that test_activations.py leaves open (found by mutation testing: each test here
fails on a small change of core/activations.py that every earlier test let pass)."""

import torch

from core.activations import ActivationRecorder


def _inclusion(tokens, budget, calls, seeds=300):
    """How often each of ``tokens`` token rows (row t holds t) is in the recorder's sample, over ``seeds`` seeds, the
    rows fed in ``calls`` forward calls of consecutive tokens."""
    layer = torch.nn.Sequential(torch.nn.Identity())
    counts = torch.zeros(tokens)
    rows = torch.arange(tokens, dtype=torch.float32)[:, None].repeat(1, 2)  # [tokens, 2]
    for seed in range(seeds):
        with ActivationRecorder(layer, ["0"], token_budget=budget, seed=seed) as recorder:
            for part in rows.tensor_split(calls):
                layer(part[None])  # [1, t, 2]
        kept = recorder.take_tokens()["0"][:, 0].long()
        assert kept.shape == (budget,) and len(set(kept.tolist())) == budget
        counts[kept] += 1
    return counts / seeds


def test_the_token_sample_is_uniform_over_every_token_seen():
    """Reservoir sampling: each of 40 tokens is kept with probability budget / 40 = 0.2, the first ones that filled
    the reservoir and the last ones alike, whether they came in one call or in calls that fill it part-way."""
    for calls in (1, 3):
        share = _inclusion(40, 8, calls)
        assert share.min() > 0.1 and share.max() < 0.3, (calls, share)
