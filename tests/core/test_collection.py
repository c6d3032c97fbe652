"""core.collection: the collection function the nodes and the organism share, on a toy model with a planted concept."""

import pytest
import torch
from torch import nn

from core.collection import NEUTRAL_SEED_OFFSET, collect, plan_batches
from core.refusal import RefusalFitter

DIM, TOKENS = 24, 6


class Toy(nn.Module):
    """A text projection read by every block's k and v (as Wan's ``text_embedding``), plus a video-side layer."""

    def __init__(self, blocks=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.text_embedding = nn.Linear(DIM, DIM)
        self.blocks = nn.ModuleList(nn.ModuleDict({"k": nn.Linear(DIM, DIM), "v": nn.Linear(DIM, DIM),
                                                   "ffn": nn.Linear(DIM, DIM)}) for _ in range(blocks))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.calls = 0

    def forward(self, noise, t, text):
        self.calls += 1
        context = self.text_embedding(text)  # [b, tokens, d]
        x = noise * (1 - t[:, None, None]) + context.mean(1, keepdim=True)
        for block in self.blocks:
            block["k"](context), block["v"](context)
            x = x + block["ffn"](x)
        return x


def world(pairs=8, neutral=10, seed=0):
    """Prompts as token tensors [tokens, d]: a pair differs by a planted concept on its real tokens; padding rows
    (after each prompt's length) are zero, as ComfyUI's Wan context."""
    g = torch.Generator().manual_seed(seed)
    concept = torch.randn(DIM, generator=g)
    concept /= concept.norm()

    def prompt(length):
        tokens = torch.zeros(TOKENS, DIM)
        tokens[:length] = torch.randn(length, DIM, generator=g)
        return tokens

    safe = [prompt(3 + i % 3) for i in range(pairs)]
    unsafe = []
    for tokens in safe:
        tokens = tokens.clone()
        real = tokens.abs().amax(-1) > 0
        tokens[real] += 2.0 * concept
        unsafe.append(tokens)
    neutral_prompts = [prompt(2 + i % 4) for i in range(neutral)]
    return concept, unsafe, safe, neutral_prompts


def host(model, log=None):
    """The host's half: prepare stacks prompts and returns the real-token mask; forward runs each timestep."""

    def prepare(prompts):
        text = torch.stack(prompts)
        return text, text.abs().amax(-1) > 0

    def forward(text, seeds, timesteps):
        noise = torch.cat([torch.randn(1, 1, DIM, generator=torch.Generator().manual_seed(s)) for s in seeds])
        if log is not None:
            log.append((len(seeds), list(seeds)))
        for t in timesteps:
            model(noise, torch.full((len(seeds),), float(t)), text)

    return prepare, forward


def kv_layers(blocks=3):
    return [f"blocks.{i}.{s}" for i in range(blocks) for s in ("k", "v")]


def test_planted_concept_is_recovered_through_the_collection_function():
    concept, unsafe, safe, neutral = world()
    model = Toy()
    prepare, forward = host(model)
    layers = kv_layers() + ["blocks.1.ffn"]
    fitter = collect(model, layers, unsafe=unsafe, safe=safe, neutral=neutral, prepare=prepare, forward=forward,
                     timesteps=[0.5, 0.2], text_layers=kv_layers(), shared={"text_embedding": kv_layers()})
    basis = fitter.fit(rank=2)
    assert basis.layers == layers
    # k/v read the projected context: the concept as it arrives there is W_text @ concept.
    arrived = model.text_embedding.weight.detach().double() @ concept.double()
    for layer in kv_layers():
        assert abs(float(basis[layer].direction.double() @ arrived / arrived.norm())) > 0.97
    assert basis.shared_inputs() == {"text_embedding": kv_layers()}
    assert basis["blocks.1.ffn"].source == "blocks.1.ffn"


def test_shared_input_is_recorded_once_and_fitted_once(monkeypatch):
    _, unsafe, safe, neutral = world()
    model = Toy()
    prepare, forward = host(model)
    hooked = []
    original = nn.Module.register_forward_pre_hook

    def spy(self, hook, *args, **kwargs):
        hooked.append(next(name for name, m in model.named_modules() if m is self))
        return original(self, hook, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "register_forward_pre_hook", spy)
    fitter = collect(model, kv_layers(), unsafe=unsafe, safe=safe, neutral=neutral, prepare=prepare,
                     forward=forward, timesteps=[0.5], text_layers=kv_layers(),
                     shared={"text_embedding": kv_layers()})
    assert hooked == ["blocks.0.k"]  # one representative of the shared input

    import core.refusal as refusal

    fits = []
    real_fit = refusal._fit_input
    monkeypatch.setattr(refusal, "_fit_input", lambda *a, **k: fits.append(k["source"]) or real_fit(*a, **k))
    basis = fitter.fit(rank=2)
    assert fits == ["text_embedding"]
    records = {id(basis[layer]) for layer in kv_layers()}
    assert len(records) == 1 and basis["blocks.2.v"].source == "text_embedding"


def test_sharing_gives_the_same_record_as_measuring_every_layer():
    """Every k/v layer reads one tensor: one fit shared equals each layer's own fit, bit for bit."""
    _, unsafe, safe, neutral = world()
    model = Toy()
    prepare, forward = host(model)
    common = dict(unsafe=unsafe, safe=safe, neutral=neutral, prepare=prepare, forward=forward, timesteps=[0.5, 0.1],
                  text_layers=kv_layers())
    shared = collect(model, kv_layers(), shared={"text_embedding": kv_layers()}, **common).fit(rank=3)
    each = collect(model, kv_layers(), **common).fit(rank=3)
    assert each.shared_inputs() == {}
    for layer in kv_layers():
        for field in ("vector", "basis", "direction", "safe_mean", "subspace"):
            assert torch.equal(getattr(shared[layer], field), getattr(each[layer], field)), (layer, field)


def test_token_mask_pools_the_prompt_tokens_only():
    _, unsafe, safe, neutral = world(pairs=4, neutral=0)
    model = Toy()
    prepare, forward = host(model)
    fitter = collect(model, ["blocks.0.k"], unsafe=unsafe, safe=safe, prepare=prepare, forward=forward,
                     timesteps=[0.5], text_layers=["blocks.0.k"])
    basis = fitter.fit(method="mean")
    with torch.no_grad():
        pooled = lambda prompts: torch.stack([model.text_embedding(p)[p.abs().amax(-1) > 0].double().mean(0)  # noqa: E731
                                              for p in prompts])
        expected = (pooled(unsafe) - pooled(safe)).mean(0)
    torch.testing.assert_close(basis["blocks.0.k"].vector.double(), expected, rtol=1e-5, atol=1e-6)


def test_batches_keep_pairs_together_and_rows_reach_the_fitter_pair_major():
    plan = plan_batches(3, 3, max_rows=4, seed=10)
    assert [[(r.role, r.index) for r in batch] for batch in plan] == [
        [("unsafe", 0), ("safe", 0), ("unsafe", 1), ("safe", 1)],
        [("unsafe", 2), ("safe", 2), ("neutral", 0), ("neutral", 1)],
        [("neutral", 2)],
    ]
    assert [r.seed for r in plan[1]] == [12, 12, 10 + NEUTRAL_SEED_OFFSET, 11 + NEUTRAL_SEED_OFFSET]
    with pytest.raises(ValueError, match="max_rows"):
        plan_batches(1, 0, max_rows=1)
    # Batching does not change what the fitter receives (up to float rounding of the batched forward).
    _, unsafe, safe, neutral = world(pairs=5, neutral=3)
    model = Toy()
    log = []
    prepare, forward = host(model, log)
    wide = collect(model, ["blocks.1.ffn"], unsafe=unsafe, safe=safe, neutral=neutral, prepare=prepare,
                   forward=forward, timesteps=[0.7, 0.3], max_rows=32)
    assert log == [(13, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 1000, 1001, 1002])]
    narrow = collect(model, ["blocks.1.ffn"], unsafe=unsafe, safe=safe, neutral=neutral, prepare=prepare,
                     forward=forward, timesteps=[0.7, 0.3], max_rows=2)
    for store in ("_unsafe", "_safe", "_neutral"):
        a, b = (torch.cat(getattr(f, store)["blocks.1.ffn"]) for f in (wide, narrow))
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_hooks_are_removed_when_the_forward_fails():
    _, unsafe, safe, _ = world(pairs=2, neutral=0)
    model = Toy()
    prepare, _ = host(model)

    def failing(text, seeds, timesteps):
        raise KeyboardInterrupt  # e.g. ComfyUI's Cancel

    with pytest.raises(KeyboardInterrupt):
        collect(model, kv_layers(), unsafe=unsafe, safe=safe, prepare=prepare, forward=failing, timesteps=[0.5])
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_a_forward_that_skips_timesteps_is_an_error():
    _, unsafe, safe, _ = world(pairs=2, neutral=0)
    model = Toy()
    prepare, forward = host(model)
    once = lambda text, seeds, timesteps: forward(text, seeds, timesteps[:1])  # noqa: E731
    with pytest.raises(ValueError, match="once per timestep"):
        collect(model, ["blocks.0.k"], unsafe=unsafe, safe=safe, prepare=prepare, forward=once, timesteps=[0.5, 0.1])


def test_bad_arguments_are_named():
    _, unsafe, safe, _ = world(pairs=2, neutral=0)
    model = Toy()
    prepare, forward = host(model)
    with pytest.raises(ValueError, match="one of each per pair"):
        collect(model, ["blocks.0.k"], unsafe=unsafe, safe=safe[:1], prepare=prepare, forward=forward, timesteps=[0.5])
    with pytest.raises(ValueError, match="no layers"):
        collect(model, [], unsafe=unsafe, safe=safe, prepare=prepare, forward=forward, timesteps=[0.5])
    with pytest.raises(ValueError, match="no timesteps"):
        collect(model, ["blocks.0.k"], unsafe=unsafe, safe=safe, prepare=prepare, forward=forward, timesteps=[])
    with pytest.raises(ValueError, match="both"):
        collect(model, ["blocks.0.k"], unsafe=unsafe, safe=safe, prepare=prepare, forward=forward, timesteps=[0.5],
                shared={"a": ["blocks.0.k"], "b": ["blocks.0.k"]})
    with pytest.raises(ValueError, match="no sub-module"):
        collect(model, ["blocks.9.k"], unsafe=unsafe, safe=safe, prepare=prepare, forward=forward, timesteps=[0.5])
    assert isinstance(collect(model, ["blocks.0.k"], unsafe=unsafe, safe=safe, prepare=prepare, forward=forward,
                              timesteps=[0.5], fitter=RefusalFitter()), RefusalFitter)


def test_each_timestep_is_its_own_row_pair_major():
    """One row per prompt and timestep reaches the fitter (pairs x timesteps per side), pair i at every timestep
    before pair i + 1, each row the layer's input computed here from the prompt, its seed's noise and t."""
    _, unsafe, safe, neutral = world(pairs=3, neutral=2)
    model = Toy()
    prepare, forward = host(model)
    timesteps = [0.9, 0.5, 0.1]
    fitter = collect(model, ["blocks.0.ffn"], unsafe=unsafe, safe=safe, neutral=neutral, prepare=prepare,
                     forward=forward, timesteps=timesteps, seed=4, max_rows=4)

    def expected(prompts, seeds):
        """blocks.0.ffn reads noise (1 - t) + the mean of the projected context (a single token): [prompts x t, d]."""
        with torch.no_grad():
            rows = []
            for prompt, s in zip(prompts, seeds):
                noise = torch.randn(1, 1, DIM, generator=torch.Generator().manual_seed(s))[0, 0]
                context = model.text_embedding(prompt).mean(0)
                rows += [(noise * (1 - torch.tensor(t)) + context).double() for t in timesteps]
            return torch.stack(rows)

    got = {store: torch.cat(getattr(fitter, store)["blocks.0.ffn"]) for store in ("_unsafe", "_safe", "_neutral")}
    assert got["_unsafe"].shape == got["_safe"].shape == (3 * 3, DIM) and got["_neutral"].shape == (2 * 3, DIM)
    torch.testing.assert_close(got["_unsafe"], expected(unsafe, [4, 5, 6]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["_safe"], expected(safe, [4, 5, 6]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["_neutral"], expected(neutral, [4 + NEUTRAL_SEED_OFFSET, 5 + NEUTRAL_SEED_OFFSET]),
                               rtol=1e-5, atol=1e-5)
