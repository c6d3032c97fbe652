import pytest
import torch

from core.activations import ActivationRecorder


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(4, 6)
        self.second = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


def test_records_pooled_inputs_in_float64_and_removes_hooks():
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(2, 5, 4)  # [batch, tokens, d]
    with ActivationRecorder(model, ["first", "second"]) as rec:
        model(x)
        model(x[:1])
    rows = rec.take()
    assert rows["first"].dtype == torch.float64
    assert rows["first"].shape == (3, 4)
    torch.testing.assert_close(rows["first"][:2], x.double().mean(1))
    hidden = torch.relu(model.first(x))
    torch.testing.assert_close(rows["second"][:2], hidden.double().mean(1))
    assert not model.first._forward_pre_hooks and not model.second._forward_pre_hooks


def test_output_capture():
    model = Tiny()
    x = torch.randn(3, 4)
    with ActivationRecorder(model, ["first"], capture="output") as rec:
        model(x)
    torch.testing.assert_close(rec.take()["first"], model.first(x).double())


def test_hooks_removed_on_exception():
    model = Tiny()
    with pytest.raises(RuntimeError):
        with ActivationRecorder(model, ["first"]):
            model(torch.randn(2, 5))  # wrong width
    assert not model.first._forward_pre_hooks


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="close matches.*first"):
        ActivationRecorder(Tiny(), ["frist"])


def test_take_without_forward_is_an_error():
    with ActivationRecorder(Tiny(), ["first"]) as rec:
        pass
    with pytest.raises(ValueError, match="recorded nothing"):
        rec.take()


def test_token_budget_is_respected_and_deterministic():
    model = Tiny()
    x = torch.randn(2, 50, 4)
    samples = []
    for _ in range(2):
        with ActivationRecorder(model, ["first"], token_budget=16, seed=3) as rec:
            model(x)
            model(x)
        samples.append(rec.take_tokens()["first"])
    assert samples[0].shape == (16, 4)
    assert torch.equal(samples[0], samples[1])
    flat = x.reshape(-1, 4).double()
    assert all((flat == row).all(1).any() for row in samples[0])
    with ActivationRecorder(model, ["first"]) as rec:
        model(x)
    with pytest.raises(ValueError, match="token_budget"):
        rec.take_tokens()


def test_token_mask_pools_only_real_tokens_and_names_mismatches():
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(2, 5, 4)
    x[0, 3:] = 0.0  # padding rows of a shorter prompt
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    with ActivationRecorder(model, ["first", "second"]) as rec:
        rec.set_token_mask(mask, ["first"])
        model(x)
        rec.set_token_mask(None, ["first"])
        model(x)
        with pytest.raises(ValueError, match="does not match"):
            rec.set_token_mask(mask[:, :4], ["first"])
            model(x)
        with pytest.raises(ValueError, match="not recorded"):
            rec.set_token_mask(mask, ["third"])
    rows = rec.take()
    torch.testing.assert_close(rows["first"][0], x[0, :3].double().mean(0))  # padding left out
    torch.testing.assert_close(rows["first"][1], x[1].double().mean(0))
    torch.testing.assert_close(rows["first"][2:4], x.double().mean(1))  # None pools every token again
    torch.testing.assert_close(rows["second"][:2], torch.relu(model.first(x)).double().mean(1))  # unmasked layer


def test_a_batch_run_one_prompt_at_a_time_takes_the_masks_rows_in_order():
    """Prompts that cannot share a model call (text of different lengths) run one call each: call k pools with the
    mask's next row, cut to its own length, wrapping around per timestep; the pooled rows equal the batched ones.
    Cutting off a real token is an error."""
    torch.manual_seed(1)
    model = Tiny()
    lengths = [5, 3, 4]
    padded = torch.zeros(3, 5, 4)
    for row, length in enumerate(lengths):
        padded[row, :length] = torch.randn(length, 4)
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    with ActivationRecorder(model, ["first"]) as rec:
        rec.set_token_mask(mask, ["first"])
        model(padded)
        batched = rec.take()["first"]
        for _timestep in range(2):
            for row, length in enumerate(lengths):
                model(padded[row:row + 1, :length])
        one_by_one = rec.take()["first"]
        rec.set_token_mask(mask, ["first"])
        with pytest.raises(ValueError, match="nor the next rows"):
            model(padded[:1, :4])  # the first prompt has 5 tokens
    torch.testing.assert_close(one_by_one, torch.cat([batched, batched]))


def test_pooling_accumulates_in_float64():
    """A float32 input is pooled in float64: the row equals the float64 mean of its tokens to 1e-9, where a float32
    mean of values near 1000 would be off by about 1e-5 (masked and unmasked pooling alike)."""
    model = Tiny()
    g = torch.Generator().manual_seed(2)
    x = 1000 + torch.randn(2, 4096, 4, generator=g)
    mask = torch.ones(2, 4096, dtype=torch.bool)
    mask[0, 3000:] = False
    with ActivationRecorder(model, ["first"]) as rec:
        model(x)
        rec.set_token_mask(mask, ["first"])
        model(x)
    rows = rec.take()["first"]
    torch.testing.assert_close(rows[:2], x.double().mean(1), rtol=0, atol=1e-9)
    torch.testing.assert_close(rows[2], x[0, :3000].double().mean(0), rtol=0, atol=1e-9)
    torch.testing.assert_close(rows[3], x[1].double().mean(0), rtol=0, atol=1e-9)


def test_a_token_major_input_is_pooled_per_batch_row_as_a_batch_first_one():
    """batch_dim=-2: inputs laid out [tokens..., batch, d] (Cosmos 1.0's (M B D) text, (T H W B D) video) give one
    row per batch element, its own tokens' mean (masked too), as the same values laid out [batch, tokens..., d]."""
    torch.manual_seed(0)
    model = Tiny()
    text = torch.randn(2, 5, 4)  # [batch, tokens, d]
    video = torch.randn(2, 3, 2, 2, 4)  # [batch, T, H, W, d]
    mask = torch.tensor([[True, True, False, False, False], [True, True, True, True, False]])
    rows = {}
    for batch_dim, inputs in ((0, (text, video)), (-2, (text.transpose(0, 1), video.permute(1, 2, 3, 0, 4)))):
        with ActivationRecorder(model, ["first"], batch_dim=batch_dim) as rec:
            model(inputs[1])
            rec.set_token_mask(mask, ["first"])
            model(inputs[0])
        rows[batch_dim] = rec.take()["first"]
    assert rows[-2].shape == (4, 4)
    torch.testing.assert_close(rows[-2], rows[0])
    torch.testing.assert_close(rows[-2][2:], torch.stack([text[0, :2].double().mean(0), text[1, :4].double().mean(0)]))
