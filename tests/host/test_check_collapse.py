"""The Unlearning Check's padded-text collapse (``nodes/check_fastpath.py``, issue 13) is exact in maths.

The host fixtures' tiny CLIP never zeroes its padding: its tokenizer (the pile T5 one) ends a prompt with id 2, and
ComfyUI's UMT5 model zeroes the rows after its end token, id 1, which that tokenizer never emits. With the real
UMT5-XXL tokenizer the end token is 1 and every row after it is an exact zero. ``padded_clip`` sets the tiny model's
end token to 2, so its contexts are padded as the real ones are. The recording test (``test_check_exact.py``) runs
the collapsed path too, against figures of the code before any speed-up.

How close: with a float64 model the collapsed and the full path give the same figures to 1e-9 (the maths is the
same); in float32 they differ only by rounding, which the figures amplify (a prediction-level survival is a ratio of
differences of nearly equal predictions): survival by up to ~1.6e-4, collateral by up to ~2e-5 of its value here.
That is also why the small-strength case, whose recommendation is asserted equal, runs in float64: its removal is
almost linear in the strength, so the steepest-rise rule chooses between grid steps whose gains differ by 2 %, and
float32 rounding on an AVX-512 machine chose 0.005 on one path and 0.02 on the other.
"""

from __future__ import annotations

import math

import pytest
import torch

PAIRS = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
VALIDATION = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5))
NEUTRAL = "a dog in a park\na red car\na tree in the wind\na bowl of soup"
BENIGN = "a cat on a sofa\na boat on a lake\na bird in the sky\na train at a station\nsnow in a forest"
FIELDS = ("survival_layers", "survival_prediction", "collateral_layers", "collateral_prediction")
#: (dtype, run_unlearning_check keywords, atol, rtol): the node's default in float32; in float64 every layer (k, v, and
#: the video-side cross_attn.o and ffn.0, whose recorded inputs follow the attention) with a group sweep, 5 frames and
#: two timesteps; and small strengths in float64, where the tiny model's recommendation is above 0.
CASES = {
    "default_float32": (torch.float32, dict(strengths="0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2", group="default",
                                            target="safe_mean", width=64, height=64, length=1, timesteps="0.1",
                                            sweep="none"), 3e-4, 5e-5),
    "small_float64": (torch.float64, dict(strengths="0, 0.005, 0.01, 0.02, 0.04", group="default", target="safe_mean",
                                          width=64, height=64, length=1, timesteps="0.1", sweep="none"), 1e-9, 1e-9),
    "all_groups_float64": (torch.float64, dict(strengths="0, 0.5, 2", group="all in vector", target="zero", width=64,
                                               height=64, length=5, timesteps="0.1, 0.4", sweep="layer groups"),
                           1e-9, 1e-9),
}


pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.fixture(scope="module")
def padded_clip(tiny):
    with torch.inference_mode():
        clip = tiny.zero_padded(tiny.tiny_wan_clip())
        context = clip.encode_from_tokens_scheduled(clip.tokenize("a red car"))[0][0]
    assert 2 <= int(context.any(-1).sum()) < 10 and not context[:, 10:].any(), "rows after the prompt are zero"
    return clip


@pytest.fixture(scope="module")
def models(pack, tiny):
    with torch.inference_mode():
        return {dtype: tiny.load_tiny_wan(model_options={"dtype": dtype}) for dtype in (torch.float32, torch.float64)}


@pytest.fixture(scope="module")
def inputs(pack, models, padded_clip):
    from comfyui_video_unlearning.nodes import definitions

    with torch.inference_mode():
        encoded = definitions.PairEncoder.execute(padded_clip, PAIRS, NEUTRAL, "Rolex")[0]
        validation = definitions.PairEncoder.execute(padded_clip, VALIDATION, BENIGN, "Rolex")[0]
        out = {}
        for dtype, model in models.items():
            acts = definitions.CollectActivations.execute(model, encoded, 64, 64, 1, "2", 0, "all", 0, -1)[0]
            out[dtype] = definitions.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]
    return out, validation


def _attention(dim=64, heads=4, seed=0):
    import comfy.ops
    from comfy.ldm.wan.model import WanT2VCrossAttention

    torch.manual_seed(seed)
    attention = WanT2VCrossAttention(dim, heads, operation_settings={"operations": comfy.ops.manual_cast})
    for parameter in attention.parameters():
        parameter.data = torch.randn(parameter.shape) * (0.3 if parameter.ndim > 1 else 1.0)
    return attention


def _padded_context(batch=3, rows=40, length=7, dim=64, seed=1):
    """A context whose rows from ``length`` on are one row repeated (what text_embedding makes of zero padding)."""
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, rows, dim, generator=generator)
    context[:, length:] = torch.randn(dim, generator=generator)
    return context


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
def test_collapsed_cross_attention_equals_comfyui(pack, dtype, rtol):
    from comfyui_video_unlearning.nodes.check_fastpath import collapsed_cross_attention

    attention = _attention().to(dtype)
    x = torch.randn(3, 16, 64, dtype=dtype)
    for length in (0, 1, 7, 38):
        context = _padded_context(length=length).to(dtype)
        full = attention(x, context)
        short = collapsed_cross_attention(attention, x, context[:, :length + 1], 40 - length)
        assert short.dtype == full.dtype and short.shape == full.shape
        scale = float(full.abs().max())
        assert float((short - full).abs().max()) <= rtol * scale, f"length {length}"


def test_collapsed_cross_attention_keeps_the_bias_precise_in_bfloat16(pack):
    """In bfloat16 the attention runs in float32 (log(n) rounded to bfloat16 would weigh the padding ~2 % off): the
    collapsed result is as close to the float32 reference as the full bfloat16 path, or closer."""
    from comfyui_video_unlearning.nodes.check_fastpath import collapsed_cross_attention

    attention = _attention()
    x, context = torch.randn(3, 16, 64), _padded_context()
    reference = attention(x, context)
    low = attention.to(torch.bfloat16)
    full = low(x.bfloat16(), context.bfloat16()).float()
    short = collapsed_cross_attention(low, x.bfloat16(), context[:, :8].bfloat16(), 33).float()
    assert float((short - reference).abs().max()) <= 1.5 * float((full - reference).abs().max()) + 1e-3


def _forward_both(check, model, rows, latent, sigmas, **options):
    from comfyui_video_unlearning.nodes.check_fastpath import PaddedTextCollapse

    diffusion = model.model.diffusion_model
    out, described = {}, {}
    for on in (True, False):
        collapse = PaddedTextCollapse(diffusion, options, enabled=on)
        with collapse:
            out[on] = check.comfy_forward(model, latent, sigmas, 0, [], collapse)(rows, None)
        described[on] = collapse.describe()
    return out, described


def test_wan_forward_collapsed_equals_full_and_leaves_nothing(pack, models, padded_clip):
    from comfyui_video_unlearning.nodes import check, definitions
    from comfyui_video_unlearning.nodes.collect import sigmas_for

    rows = [definitions._encode(padded_clip, text) for text in ("a red car", "a dog in a park on a sunny day", "x")]
    latent = torch.zeros(1, 16, 1, 8, 8)
    for dtype, model in models.items():
        out, described = _forward_both(check, model, rows, latent, sigmas_for(model, [0.1, 0.5]))
        assert described[True].startswith("yes") and described[False].startswith("no (turned off")
        # Relative to the largest prediction (elementwise, near-zero entries would dominate); float64 predictions come
        # back as float32 (comfy_forward), so there the two paths agree to float32's last bit.
        error = float((out[True] - out[False]).abs().max()) / float(out[False].abs().max())
        assert error <= (1e-6 if dtype == torch.float32 else 1.2e-7), f"{dtype}: {error:.2e}"
        diffusion = model.model.diffusion_model
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in diffusion.modules())
        assert all("forward" not in vars(block.cross_attn) for block in diffusion.blocks)


def test_unpadded_context_and_unknown_models_run_as_before(pack, models, clip, tiny):
    """A context without a zero tail passes unchanged; an image-to-video Wan, block replacements and an attention
    override turn the collapse off, and it says why."""
    from comfyui_video_unlearning.nodes import check, definitions
    from comfyui_video_unlearning.nodes.check_fastpath import PaddedTextCollapse, why_not
    from comfyui_video_unlearning.nodes.collect import sigmas_for

    model = models[torch.float32]
    rows = [definitions._encode(clip, "a red car"), definitions._encode(clip, "a dog")]
    out, described = _forward_both(check, model, rows, torch.zeros(1, 16, 1, 8, 8), sigmas_for(model, [0.1]))
    assert torch.equal(out[True], out[False]) and described[True].startswith("no (no text context had a zero")
    diffusion = model.model.diffusion_model
    assert why_not(diffusion) is None
    assert "patches_replace" in why_not(diffusion, {"patches_replace": {"dit": {("double_block", 0): print}}})
    assert "attention override" in why_not(diffusion, {"optimized_attention_override": print})
    i2v = tiny._tiny_wan_module(0, i2v=True)  # the class is what counts (detected end to end in test_nodes_inprocess)
    assert "image-to-video" in why_not(i2v)
    assert "is not ComfyUI's WanModel" in why_not(torch.nn.Linear(2, 2))
    block = diffusion.blocks[0].cross_attn
    block.forward = block.forward
    try:
        assert "already has its forward replaced" in why_not(diffusion)
    finally:
        del block.forward
    collapse = PaddedTextCollapse(i2v, {})
    with collapse:
        assert not collapse.applies
    assert collapse.describe().startswith("no (an image-to-video Wan")


def test_an_attention_override_met_during_sampling_gets_the_full_context(pack, models):
    """Should an override turn up in a call's transformer options, it sees ComfyUI's call on the rebuilt context."""
    from comfyui_video_unlearning.nodes.check_fastpath import PaddedTextCollapse

    diffusion = models[torch.float32].model.diffusion_model
    context = torch.zeros(2, 512, 4096)
    context[:, :5] = torch.randn(2, 5, 4096) * 0.1
    x = torch.randn(2, 16, diffusion.dim)
    seen = []

    def override(func, *args, **kwargs):
        seen.append(args[1].shape[1])
        return func(*args, **kwargs)

    attention = diffusion.blocks[0].cross_attn
    expected = attention(x, diffusion.text_embedding(context))
    with PaddedTextCollapse(diffusion, {}) as collapse:
        trimmed = collapse.trim([[[context[i:i + 1], {}]] for i in range(2)])
        assert (trimmed.kept, trimmed.padding, trimmed.total) == (6, 507, 512)
        with collapse.feeding(trimmed):
            embedded = diffusion.text_embedding(torch.cat([row[0][0] for row in trimmed.rows]))
        plain = attention(x, embedded)
        overridden = attention(x, embedded, transformer_options={"optimized_attention_override": override})
        with collapse.feeding(trimmed), pytest.raises(RuntimeError, match="shape \\(2, 512, 4096\\), not the 6 rows"):
            diffusion.text_embedding(context)
    assert seen == [512] and collapse.expanded == 1
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(overridden, expected, rtol=1e-5, atol=1e-6)


def test_trim_cuts_only_where_exact(pack, models):
    """Rows up to the longest prompt plus one zero row; the mask of prompt_token_mask on the rows kept; no cut without
    a zero tail of 2 rows, or with an extra along the tokens."""
    from comfyui_video_unlearning.nodes.check_fastpath import PaddedTextCollapse
    from comfyui_video_unlearning.nodes.collect import prompt_token_mask

    context = torch.zeros(4, 32, 8)
    context[0, :3] = 1.0
    context[1, :7] = -2.0
    context[1, 4] = 0.0  # a zero row inside a prompt stays a zero row, kept and masked out
    context[3, 9, 5] = -1e-30  # tiny values are not zero (their squares would be)
    rows = [[[context[i:i + 1], {"pooled_output": None}]] for i in range(4)]  # the third prompt is empty
    trimmed = PaddedTextCollapse(models[torch.float32].model.diffusion_model, {}).trim(rows)
    assert (trimmed.kept, trimmed.padding, trimmed.total) == (11, 22, 32)
    assert torch.equal(trimmed.mask, prompt_token_mask(context)[:, :11])
    assert all(torch.equal(row[0][0], context[i:i + 1, :11]) for i, row in enumerate(trimmed.rows))
    collapse = PaddedTextCollapse(models[torch.float32].model.diffusion_model, {})
    full = context.clone()
    full[2, 31] = 1.0
    assert collapse.trim([[[full[i:i + 1], {}]] for i in range(4)]) is None
    nearly = context.clone()
    nearly[2, 30] = 1.0  # one padding row left: nothing to gain
    assert collapse.trim([[[nearly[i:i + 1], {}]] for i in range(4)]) is None
    assert collapse.trim([[[context[i:i + 1], {"attention_mask": torch.ones(1, 32)}]] for i in range(4)]) is None


def test_replayed_short_context_is_recognised_by_identity(pack, models, padded_clip):
    """Across strengths the short context is the same tensor, so the replay cache hits on text_embedding and k/v."""
    from comfyui_video_unlearning.core.check import ReplayCache
    from comfyui_video_unlearning.nodes import check, definitions
    from comfyui_video_unlearning.nodes.check_fastpath import PaddedTextCollapse
    from comfyui_video_unlearning.nodes.collect import sigmas_for

    model = models[torch.float32]
    diffusion = model.model.diffusion_model
    rows = [definitions._encode(padded_clip, text) for text in ("a red car", "a cat")]
    names = ["text_embedding", "blocks.0.cross_attn.k", "blocks.0.cross_attn.v"]
    collapse = PaddedTextCollapse(diffusion, {})
    forward = check.comfy_forward(model, torch.zeros(1, 16, 1, 8, 8), sigmas_for(model, [0.1]), 0, [], collapse)
    with ReplayCache(diffusion, names) as cache, collapse:
        first = forward(rows, None)
        assert cache.hits == 0
        again = forward(rows, None)
    assert forward.replay.replayed == 1 and cache.hits == 3 and torch.equal(first, again)


@pytest.mark.parametrize("case", list(CASES))
def test_check_figures_collapsed_equal_full(pack, models, inputs, case):
    from comfyui_video_unlearning.nodes import check

    dtype, keywords, atol, rtol = CASES[case]
    bases, validation = inputs
    results, notes = {}, {}
    for on in (True, False):
        options = dict(keywords)
        notes[on] = {}
        main, swept = check.run_unlearning_check(models[dtype], bases[dtype], validation, options.pop("strengths"),
                                                 block_start=0, block_end=-1, seed=0, collapse_padded_text=on,
                                                 notes=notes[on], **options)
        results[on] = [main, *swept]
    assert notes[True]["padded_text_collapsed"] and notes[True]["padded_text"].startswith("yes")
    assert not notes[False]["padded_text_collapsed"] and notes[False]["padded_text"].startswith("no (turned off")
    assert len(results[True]) == len(results[False])
    if case == "small_float64":
        assert results[True][0].recommended > 0, "a case whose recommendation is not the fallback 0"
    for collapsed, full in zip(results[True], results[False]):
        assert collapsed.label == full.label and collapsed.strengths == full.strengths
        assert collapsed.recommended == full.recommended and collapsed.reason == full.reason
        for name in FIELDS:
            torch.testing.assert_close(torch.tensor(getattr(collapsed, name), dtype=torch.float64),
                                       torch.tensor(getattr(full, name), dtype=torch.float64), atol=atol, rtol=rtol,
                                       msg=lambda m, name=name: f"{case}: {collapsed.label}: {name}: {m}")


def test_node_table_says_which_path_ran(pack, models, inputs):
    from comfyui_video_unlearning.nodes import check

    bases, validation = inputs
    model = models[torch.float32]
    out = check.UnlearningCheck.execute(model, bases[torch.float32], "0, 0.01, 0.02", "default", 0, -1, "safe_mean",
                                        "none", 64, 64, 1, "0.1", 0, validation_pairs=validation)
    table = out.args[2]
    assert "padded text collapsed: yes (text rows up to the longest prompt" in table
    summary = out.ui["video_unlearning_check"][0] if isinstance(out.ui, dict) else out.ui.as_dict()["video_unlearning_check"][0]
    assert summary["padded_text_collapsed"] is True and summary["table"] == table
    assert math.isfinite(out.args[0])


def test_rows_of_different_lengths_say_why_nothing_was_collapsed(pack, models, padded_clip):
    """A prompt past the encoder's 512 padded rows makes its context longer than the others: the rows run one call
    each, and the table said that no context had a zero padding tail, which every short one had."""
    from comfyui_video_unlearning.nodes import check, definitions
    from comfyui_video_unlearning.nodes.check_fastpath import PaddedTextCollapse
    from comfyui_video_unlearning.nodes.collect import sigmas_for

    model = models[torch.float32]
    rows = [definitions._encode(padded_clip, text) for text in ("a red car", " ".join(["a long red road"] * 150))]
    assert rows[0][0][0].shape[1] != rows[1][0][0].shape[1]
    collapse = PaddedTextCollapse(model.model.diffusion_model, {})
    forward = check.comfy_forward(model, torch.zeros(1, 16, 1, 8, 8), sigmas_for(model, [0.1]), 0, [], collapse)
    with collapse:
        forward(rows, None)
    assert collapse.describe().startswith("no (the rows ran one model call each: their text contexts differ in length")
