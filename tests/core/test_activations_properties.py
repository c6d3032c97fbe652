"""Properties of core.activations that test_activations.py leaves open (found by mutation testing: each test here
fails on a small change of core/activations.py that every earlier test let pass)."""

import pytest
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


def test_the_token_count_starts_again_after_take_tokens():
    """take_tokens() starts a new sample: 40 tokens after it are sampled as uniformly as the first 40 (kept with
    probability 0.2 each), not as if they came after the tokens already taken."""
    layer = torch.nn.Sequential(torch.nn.Identity())
    rows = torch.arange(40, dtype=torch.float32)[:, None].repeat(1, 2)
    counts = torch.zeros(40)
    for seed in range(300):
        with ActivationRecorder(layer, ["0"], token_budget=8, seed=seed) as recorder:
            layer(rows[None] + 100.0)
            recorder.take_tokens()
            layer(rows[None])
        counts[recorder.take_tokens()["0"][:, 0].long()] += 1
    share = counts / 300
    assert share.min() > 0.1 and share.max() < 0.3, share


def test_output_capture_records_the_first_element_of_a_tuple_output():
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x, -x

    model = torch.nn.Sequential(Pair())
    with ActivationRecorder(model, ["0"], capture="output") as recorder:
        model(torch.ones(2, 3))
    assert torch.equal(recorder.take()["0"], torch.ones(2, 3, dtype=torch.float64))


def test_a_negative_token_budget_and_a_mask_row_without_tokens_are_refused():
    model = torch.nn.Sequential(torch.nn.Identity())
    with pytest.raises(ValueError, match="token_budget must be >= 0, got -1"):
        ActivationRecorder(model, ["0"], token_budget=-1)
    recorder = ActivationRecorder(model, ["0"])
    with pytest.raises(ValueError, match="at least one True per row"):  # its mean would be 0 / 0
        recorder.set_token_mask(torch.tensor([[True, False], [False, False]]), ["0"])
