"""Collect Activations and Unlearning Check refuse, before any forward, a text conditioning of another family's width
and a latent of another channel count, naming the input, both numbers and the fix, on every family's tiny model:
before, torch's "mat1 and mat2 shapes cannot be multiplied (11x128 and 4096x128)" or "The size of tensor a (48) must
match the size of tensor b (16)" reached the user from deep inside the model."""

from __future__ import annotations

import pytest
import torch

from test_adapters import TINY, tiny_model
from test_families_graph import BENIGN, NEUTRAL, PAIRS, TEXT, VALIDATION, family_text

#: Per family (the tiny models): the context width its text input layer reads, its latent's channels, and the text
#: encoder the message names.
EXPECTED = {"wan": (4096, 16, "umt5_xxl"), "hunyuan_video": (64, 16, "llava_llama3"), "ltxv": (32, 128, "t5xxl"),
            "mochi": (32, 12, "t5xxl"), "cosmos_predict2": (32, 16, "oldt5_xxl"), "cosmos1": (32, 16, "oldt5_xxl")}
#: Per family, another family's latent channels (Wan: a Wan 2.2 TI2V 5B latent's 48).
OTHER_CHANNELS = {"wan": 48, "hunyuan_video": 128, "ltxv": 16, "mochi": 16, "cosmos_predict2": 48, "cosmos1": 48}

pytestmark = pytest.mark.usefixtures("inference_mode")


def own_text(family, tiny, clip):
    return clip if family == "wan" else family_text(tiny, clip, *TEXT[family])


def other_text(family, tiny, clip):
    """Another family's text encoder: HunyuanVideo's (64 wide) for Wan, Wan's umt5 (4096 wide) for the others."""
    return family_text(tiny, clip, *TEXT["hunyuan_video"]) if family == "wan" else clip


def encode(text, pairs=PAIRS, neutral=NEUTRAL):
    from comfyui_video_unlearning.nodes import definitions

    return definitions.PairEncoder.execute(text, pairs, neutral, "Rolex")[0]


def collect(model, encoded, latent=None):
    from comfyui_video_unlearning.nodes import definitions

    extra = {} if latent is None else {"latent": {"samples": latent}}
    return definitions.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1, **extra)[0]


def random_basis(model, family):
    """A vector over the model's default layers from random rows: the checks below refuse before any forward."""
    from comfyui_video_unlearning.core.refusal import RefusalFitter
    from comfyui_video_unlearning.nodes.adapters import layers_for

    fitter = RefusalFitter()
    g = torch.Generator().manual_seed(1)
    diffusion = model.model.diffusion_model
    for name in layers_for(model, "default"):
        width = diffusion.get_submodule(name).weight.shape[1]
        safe = torch.randn(6, width, generator=g)
        fitter.update(name, safe + torch.randn(width, generator=g), safe)
    return fitter.fit(rank=2, model_family=family)


def check(model, basis, validation, negative=None):
    from comfyui_video_unlearning.nodes.check import UnlearningCheck

    return UnlearningCheck.execute(model, basis, "0, 1", "default", 0, -1, "zero", "none", 64, 64, 1, "0.1", 0,
                                   validation_pairs=validation, negative=negative, cfg=5.0)


def text_message(node, input_name, family, wrong, source):
    return (f"{node}: {input_name}: the text conditioning is {wrong} features wide", f"reads {EXPECTED[family][0]}",
            f"Connect the model's own text encoder, e.g. {EXPECTED[family][2]}", f"to the {source} that makes")


@pytest.mark.parametrize("family", list(TINY))
def test_collect_names_pairs_from_another_familys_text_encoder(family, pack, wan, clip, tiny):
    model = tiny_model(family, wan)
    encoded = encode(other_text(family, tiny, clip))
    wrong = encoded.unsafe[0][0][0].shape[-1]
    with pytest.raises(ValueError) as error:
        collect(model, encoded)
    for part in text_message("Collect Activations", "pairs", family, wrong, "Pair Encoder"):
        assert part in str(error.value), str(error.value)


@pytest.mark.parametrize("family", list(TINY))
def test_collect_names_a_latent_of_another_channel_count(family, pack, wan, clip, tiny):
    model = tiny_model(family, wan)
    encoded = encode(own_text(family, tiny, clip))
    channels = OTHER_CHANNELS[family]
    with pytest.raises(ValueError) as error:  # even on text-side layers, which never read what the latent holds
        collect(model, encoded, torch.randn(1, channels, 1, 8, 8))
    message = str(error.value)
    assert (f"Collect Activations: latent has {channels} channels, but this {family} model reads "
            f"{EXPECTED[family][1]}") in message, message
    assert f"Connect an empty latent of this model family: {EXPECTED[family][1]} channels" in message, message


@pytest.mark.parametrize("family", list(TINY))
def test_collect_runs_on_the_familys_own_text_and_latent(family, pack, wan, clip, tiny):
    """The right inputs still run: a latent of the model's channels, and an all-zero latent of another count (an empty
    image latent), which ComfyUI gives the model's channels before sampling."""
    import comfy.model_management

    model = tiny_model(family, wan)
    encoded = encode(own_text(family, tiny, clip))
    try:
        own = collect(model, encoded, torch.randn(1, EXPECTED[family][1], 1, 8, 8))
        empty = collect(model, encoded, torch.zeros(1, 4, 1, 8, 8))
    finally:
        comfy.model_management.unload_all_models()
    assert own.family == empty.family == family


def test_wan22_5b_reads_48_channels_and_refuses_16(pack, wan22_5b, clip):
    import comfy.model_management

    encoded = encode(clip)
    try:
        assert collect(wan22_5b, encoded, torch.randn(1, 48, 1, 16, 16)).family == "wan"
    finally:
        comfy.model_management.unload_all_models()
    with pytest.raises(ValueError, match="latent has 16 channels, but this wan model reads 48"):
        collect(wan22_5b, encoded, torch.randn(1, 16, 1, 16, 16))


@pytest.mark.parametrize("family", list(TINY))
def test_check_names_validation_pairs_from_another_familys_text_encoder(family, pack, wan, clip, tiny):
    model = tiny_model(family, wan)
    validation = encode(other_text(family, tiny, clip), VALIDATION, BENIGN)
    wrong = validation.unsafe[0][0][0].shape[-1]
    with pytest.raises(ValueError) as error:
        check(model, random_basis(model, family), validation)
    for part in text_message("Unlearning Check", "validation_pairs", family, wrong, "Pair Encoder"):
        assert part in str(error.value), str(error.value)


@pytest.mark.parametrize("family", list(TINY))
def test_check_names_a_negative_from_another_familys_text_encoder(family, pack, wan, clip, tiny):
    model = tiny_model(family, wan)
    validation = encode(own_text(family, tiny, clip), VALIDATION, BENIGN)
    other = other_text(family, tiny, clip)
    negative = other.encode_from_tokens_scheduled(other.tokenize("blurry"))
    with pytest.raises(ValueError) as error:
        check(model, random_basis(model, family), validation, negative)
    wrong = negative[0][0].shape[-1]
    for part in text_message("Unlearning Check", "negative", family, wrong, "CLIP Text Encode"):
        assert part in str(error.value), str(error.value)


@pytest.mark.parametrize("family", list(TINY))
def test_audit_names_a_negative_from_another_familys_text_encoder(family, pack, wan, clip, tiny):
    """Unlearning Audit refuses, as the check does, a negative prompt the model cannot read, naming that input (not the
    validation pairs it is read beside)."""
    from comfyui_video_unlearning.nodes.audit import UnlearningAudit

    model = tiny_model(family, wan)
    validation = encode(own_text(family, tiny, clip), VALIDATION, BENIGN)
    other = other_text(family, tiny, clip)
    negative = other.encode_from_tokens_scheduled(other.tokenize("blurry"))
    with pytest.raises(ValueError) as error:
        UnlearningAudit.execute(model, model, validation, 64, 64, 1, "0.1", 0, negative=negative, cfg=5.0)
    for part in text_message("Unlearning Audit", "negative", family, negative[0][0].shape[-1], "CLIP Text Encode"):
        assert part in str(error.value), str(error.value)
