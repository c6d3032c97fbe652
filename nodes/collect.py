"""Collect Activations: run the model on both sides of every pair and record what the edited layers read.

The forward goes through ComfyUI's own sampling stack (``CFGGuider`` with cfg 1 and a one-off
sampler function), so model loading and offloading (``load_models_gpu``, lowvram), the model's
``model_sampling`` (shift, noise scaling), conditioning processing and model wrappers all behave as
in a normal generation. The sampler function evaluates the model once per requested sigma on a
latent noised with the same noise for both sides of the pair; unsafe and safe prompts are stacked
in one batch, so each forward measures one pair. When every recorded layer reads only the text
(Wan's cross_attn.k/v), one forward at one sigma measures all pairs and neutral prompts together.

Layers that read the text context are pooled over the prompt's own tokens only: Wan pads its T5 context
to 512 rows of zeros, and a mean over every row lets the padding dilute a pair's difference and add a
"words minus padding" direction that is not the concept (docs/benchmarks.md's organism benchmark measures both).

The host-free half (batch plan, seeds, token masks, one recording per shared input, feeding the fitter) is
``core.collection.collect``, which the organism's benchmark runs too; this module supplies ComfyUI's forward.
"""

from __future__ import annotations

import contextlib
import logging
import re

import torch

import comfy.model_management
import comfy.ops
import comfy.sample
import comfy.samplers
import comfy.utils
from comfy_api.torch_helpers.torch_compile import COMPILE_KEY

from ..core.strengths import list_entries
from ..core.collection import collect, plan_batches
from ..core.pairs import _quoted
from .adapters import adapter_for, latent_shape, require_latent_channels, require_pooled_text, require_text_width
from .conditioning import can_share_a_call, prompt_token_mask, row_token_masks, stack_conditionings
from .patching import weights_fingerprint
from .payloads import CollectedActivations, EncodedPairs

logger = logging.getLogger(__name__)
#: Most prompts measured in one forward when the layers read only the text.
MAX_BATCH = 32
#: Latent side used for text-only layers (a multiple of every supported family's spatial patch size).
MIN_LATENT_SIDE = 4
#: Noise seeds are taken modulo 2**64, the range of the node's seed widget and of ``torch.manual_seed``.
SEED_RANGE = 1 << 64


def parse_timesteps(spec: str) -> int | list[float]:
    """``"4"`` -> 4 sigmas spread over the model's schedule; ``"0.1, 0.5"`` -> sampling-progress fractions.

    One whole number is a count; anything else is fractions, separated and written as Unlearning Check's strength grid
    is (``,`` or ``;``, any float syntax: ``5e-1``), which its own timesteps sat beside while refusing both. ``0.0`` is
    the fraction for pure noise; a bare ``0`` is a count, refused with that hint.

    Its messages start with ``timesteps:``: Unlearning Check validates strengths and timesteps together, and ComfyUI
    shows the message on both inputs."""
    parts = list_entries(spec)
    if not parts:
        raise ValueError("timesteps: empty: write a count such as 4, or progress fractions such as 0.1, 0.5, 0.9")
    # decimal digits of any script, as int() and the strength grid's float() read them ('４', '٣'); not
    # str.isdigit(), which also takes '²', which int() then refuses with a message naming no input
    if len(parts) == 1 and re.fullmatch(r"[+-]?\d{1,9}", parts[0]):  # int() refuses over 4300 digits, unnamed
        count = int(parts[0])
        if not 1 <= count <= 100:
            hint = "; for the fraction 0 (pure noise) write 0.0" if count == 0 else ""
            raise ValueError(f"timesteps: a count must be between 1 and 100, got {count}{hint}")
        return count
    fractions = []
    for part in parts:
        try:
            fractions.append(float(part))
        except ValueError:
            raise ValueError(f"timesteps: {_quoted(part)} is not a number: write a count such as 4, or progress "
                             "fractions separated by commas such as 0.1, 0.5, 0.9") from None
    bad = [f for f in fractions if not 0.0 <= f < 1.0]  # nan and inf too
    if bad:
        raise ValueError(f"timesteps: fractions must be in [0, 1) (0.0 = pure noise), got {bad}")
    return fractions


def sigmas_for(model, spec: int | list[float]) -> list[float]:
    """Sigmas of the model's own schedule (with its shift) at which activations are recorded."""
    sampling = model.get_model_object("model_sampling")
    if isinstance(spec, int):
        return [float(s) for s in comfy.samplers.calculate_sigmas(sampling, "simple", spec)[:-1]]
    return [float(sampling.percent_to_sigma(fraction)) for fraction in spec]


def empty_latent(model, width: int, height: int, length: int) -> torch.Tensor:
    """An all-zero video latent ``[1, c, frames, h, w]`` in the model's latent format, with the family's VAE
    factors from its adapter (as the family's Empty*LatentVideo node makes it). A size below one latent pixel is
    refused: its latent is empty, and every figure measured on it would be zero."""
    shape = latent_shape(model, width, height, length)
    if min(shape[-2:]) < 1:
        adapter = adapter_for(model)
        spatial = adapter.latent_geometry(model).spatial
        raise ValueError(f"{width}x{height} is less than one latent pixel for this {adapter.family} model (its VAE "
                         f"compresses {spatial}x on each side, latent {shape}): use a width and height of at least "
                         f"{spatial}")
    return torch.zeros(shape)


#: Wrappers that make a forward something other than the model's own computation, by their ComfyUI key: ComfyUI's
#: torch.compile (``TorchCompileModel``, and other packs' compile nodes through ``set_torch_compile_wrapper``) and its
#: step caches (``EasyCache``, ``LazyCache``), which answer a call from an earlier one instead of running the model.
MEASURING_SKIPS = {COMPILE_KEY: "torch.compile", "easycache": "EasyCache", "lazycache": "LazyCache"}


def measuring_model(model):
    """``model`` as Collect Activations and Unlearning Check run it: a clone without the wrappers of
    :data:`MEASURING_SKIPS`, or ``model`` itself when it has none (the MODEL that goes on to the sampler keeps them).

    Both run the model with hooks that change from call to call (recorders, each strength's edit), at a few sigmas of
    their own. A compiled model recompiled again and again (tiny Wan, inductor on the CPU: Collect 49 s instead of
    0.3 s, the check 22 s instead of 0.4 s), and its graph skipped the recorder's hooks (Collect on every layer group
    at two timesteps failed). With a step cache the check read 0 % removed and 0 collateral at every strength, and
    Collect failed: the cache answered the calls without running the layers.
    """
    found = [(kind, key) for kind, wrappers in model.wrappers.items() for key in wrappers if key in MEASURING_SKIPS]
    if not found:
        return model
    clone = model.clone()
    for kind, key in found:
        clone.remove_wrappers_with_key(kind, key)
    logger.info("measuring the model without %s", ", ".join(dict.fromkeys(MEASURING_SKIPS[key] for _, key in found)))
    return clone


#: A quantised layer of a newer ComfyUI multiplies at compute dtype when either is true (``mixed_precision_ops``).
#: Its model management sets ``comfy_force_cast_weights`` on every module each time it loads a model, which the
#: first measuring call may do; ``_full_precision_mm`` is left alone.
FULL_PRECISION_SWITCHES = ("_full_precision_mm", "comfy_force_cast_weights")


@contextlib.contextmanager
def compute_precision(diffusion):
    """While the pack measures ``diffusion`` (the MODEL's diffusion model), every layer multiplies at compute dtype,
    never in fp8.

    On a GPU with fp8 compute ComfyUI multiplies fp8 layers in fp8 (``comfy.ops.fp8_linear``: scaled-fp8 files such as
    the official Wan 2.2 experts, or weight_dtype fp8_e4m3fn_fast), rounding each layer's input to fp8. That rounding
    flips with the small changes the check measures: on the tiny scaled-fp8 Wan the check read 98 % removed at
    strength 0.5 and collateral 0.5 (recommending 0), where at compute dtype it reads 19 % and 0.08. ``fp8_linear``
    answers None here, ComfyUI's own fallback to the compute-dtype product; sampling is not affected. A newer ComfyUI
    (about 0.8 on) multiplies its quantised layers (those with a ``layout_type``) through their own quantised product
    instead, unless switched off per layer (:data:`FULL_PRECISION_SWITCHES`): they are switched off meanwhile.
    """
    quantised = [m for m in diffusion.modules() if getattr(m, "layout_type", None) is not None]
    before = [{name: m.__dict__[name] for name in FULL_PRECISION_SWITCHES if name in m.__dict__} for m in quantised]
    original = getattr(comfy.ops, "fp8_linear", None)
    if original is not None:  # None: a ComfyUI without this fp8 product
        comfy.ops.fp8_linear = _no_fp8_product
    for module in quantised:
        for name in FULL_PRECISION_SWITCHES:
            setattr(module, name, True)
    try:
        yield
    finally:
        if original is not None:
            comfy.ops.fp8_linear = original
        for module, values in zip(quantised, before):
            for name in FULL_PRECISION_SWITCHES:
                if name in values:
                    setattr(module, name, values[name])
                elif name in module.__dict__:
                    delattr(module, name)


def _no_fp8_product(module, input):
    return None


def collect_activations(model, encoded: EncodedPairs, latent: torch.Tensor, timesteps: str, seed: int,
                        layer_names: list[str], settings: dict | None = None) -> CollectedActivations:
    """Record the inputs of ``layer_names`` for every pair (and neutral prompt) at the requested sigmas.

    ``settings``: the node's own choices (latent size, layer group, block range) to record with the rows."""
    model = measuring_model(model)
    adapter = adapter_for(model)
    diffusion = model.model.diffusion_model
    latent = comfy.sample.fix_empty_latent_channels(model, latent[:1])
    # Before any forward: another family's text encoder or latent otherwise fails deep in the model with torch's
    # shape errors, naming neither the input nor the fix. An all-zero latent was given the right channels above.
    require_text_width(model, [*encoded.unsafe, *encoded.safe, *encoded.neutral], "Collect Activations", "pairs",
                       "Pair Encoder")
    require_latent_channels(model, latent, "Collect Activations")
    # whatever layer_names: HunyuanVideo reads the pooled output on every forward, not only where it is measured
    require_pooled_text(model, [*encoded.unsafe, *encoded.safe, *encoded.neutral], "Collect Activations", "pairs",
                        "Pair Encoder")
    sigmas = sigmas_for(model, parse_timesteps(timesteps))
    independent = adapter.is_timestep_independent(layer_names)
    if independent:
        # These layers read the projected text context only: their input is the same for any timestep and any
        # latent, so one timestep on the smallest latent the patch embedding accepts measures it exactly.
        if len(sigmas) > 1:
            logger.info("the selected layers read only the text: measuring at one timestep instead of %d", len(sigmas))
        sigmas = sigmas[:1]
        if not _has_concat_conditioning(encoded):
            latent = latent[:, :, :1, :MIN_LATENT_SIDE, :MIN_LATENT_SIDE] if latent.ndim == 5 else latent
    # Both sides of a pair always share a forward and a noise. Layers that read only the text need no per-pair
    # forward: all pairs and neutral prompts go in one batch (of at most MAX_BATCH rows); the others run one pair
    # (or two neutral prompts) per forward to bound memory. Layers that read one shared input (every block's
    # text-side k/v reads the projected text) are recorded once and fitted once (core.collection).
    max_rows = MAX_BATCH if independent else 2
    batches = len(plan_batches(len(encoded.pairs), len(encoded.neutral), max_rows=max_rows, seed=seed))
    progress = comfy.utils.ProgressBar(batches * len(sigmas))

    def prepare(conditionings):
        if can_share_a_call(conditionings, batches_text_masks=adapter.batches_text_masks):
            positive = stack_conditionings(conditionings)
            return positive, prompt_token_mask(positive[0][0], positive[0][1].get("attention_mask"))
        return OneCallEach(conditionings), row_token_masks(conditionings)

    def forward(positive, seeds, timesteps):
        _forward(model, positive, latent, timesteps, seeds, progress)

    fitter = collect(diffusion, layer_names, unsafe=encoded.unsafe, safe=encoded.safe, neutral=encoded.neutral,
                     prepare=prepare, forward=forward, timesteps=sigmas, seed=seed, max_rows=max_rows,
                     text_layers=adapter.text_token_layers(layer_names), shared=adapter.shared_inputs(layer_names),
                     batch_dim=adapter.batch_dim)

    return CollectedActivations(
        # the file's weights, as Apply Unlearning checks them: a LoRA on the MODEL does not make it another model
        fitter=fitter, layers=tuple(layer_names), family=adapter.family,
        fingerprint=weights_fingerprint(model, layer_names),
        concept=encoded.concept, pairs=encoded.pairs, sigmas=tuple(sigmas),
        # Without these a saved vector could be neither recomputed nor audited: the neutral prompts set the
        # contrast, and the seed, timesteps and latent what video-side layers read.
        measurement={"neutral_prompts": list(encoded.neutral_prompts), "neutral_count": len(encoded.neutral_prompts),
                     "seed": int(seed), "timesteps": str(timesteps), "sigmas": list(sigmas), **(settings or {}),
                     "text_encoder": dict(encoded.text_encoder)},
    )


def _has_concat_conditioning(encoded: EncodedPairs) -> bool:
    """True when a prompt carries an image latent that must match the noise latent's shape (I2V start frames)."""
    conditionings = list(encoded.unsafe) + list(encoded.safe) + list(encoded.neutral)
    return any("concat_latent_image" in entry[1] for cond in conditionings for entry in cond)


class OneCallEach(list):
    """Prompts (single-entry CONDITIONINGs) that cannot share a model call (``conditioning.can_share_a_call``): they
    are evaluated one call each, timestep by timestep, so the recorder sees rows in the batched order."""


def _forward(model, positive, latent, sigmas, seeds, progress) -> None:
    """One model evaluation per sigma on a batch of prompts (one stacked CONDITIONING, or :class:`OneCallEach`: one
    call per prompt and sigma); row i is noised with ``seeds[i]``. The recorder's hooks see the layers' inputs."""
    # Rows add their index to the node's seed, which may be at the top of the widget's 64-bit range.
    seeds = [seed % SEED_RANGE for seed in seeds]
    noise = torch.cat([comfy.sample.prepare_noise(latent, s) for s in seeds])
    if isinstance(positive, OneCallEach):
        evaluate_one_call_each(model, positive, latent, noise, sigmas, seeds, lambda _prediction: progress.update(1))
    else:
        evaluate_at_sigmas(model, positive, latent, noise, sigmas, seeds[0], lambda _prediction: progress.update(1))


def evaluate_one_call_each(model, conditionings, latent, noise, sigmas, seeds, each) -> None:
    """:func:`evaluate_at_sigmas` for prompts that cannot share a model call (:class:`OneCallEach`): one call per
    prompt and sigma, sigma-major (every prompt at a sigma, then the next sigma), the order in which one batched call
    per sigma records rows. ``noise`` ``[prompts, ...]``, prompt i seeded ``seeds[i]``; ``each(prediction)`` gets the
    prompts' predictions ``[prompts, ...]`` at every sigma, as from a batched call."""
    for sigma in sigmas:
        predictions = []
        for row, conditioning in enumerate(conditionings):
            evaluate_at_sigmas(model, conditioning, latent, noise[row:row + 1], [sigma], seeds[row],
                               predictions.append)
        each(torch.cat(predictions))


def evaluate_at_sigmas(model, positive, latent, noise, sigmas, seed: int, each, *, call=None,
                       model_function_wrapper=None) -> None:
    """Evaluate the model once per sigma through ComfyUI's sampling stack (``CFGGuider`` at cfg 1 with a one-off
    sampler function), on a batch of prompts (one stacked CONDITIONING) and ``noise`` ``[batch, ...]`` (row i's noise);
    ``each(prediction)`` gets the denoised prediction ``[batch, ...]`` at every sigma. Interruptible between sigmas.

    ``call(model_k, noised, sigma_batch, extra_args, index) -> prediction``, when given, makes the model call at the
    ``index``-th sigma instead of ``model_k(noised, sigma_batch, **extra_args)``; ``model_function_wrapper`` is set as
    the guider's ``model_function_wrapper`` (the Unlearning Check replays apply_model's arguments through both)."""
    batch = noise.shape[0]
    latent_batch = latent.repeat(batch, *([1] * (latent.ndim - 1)))

    def sampler_function(model_k, x, _sigmas, extra_args=None, callback=None, disable=None):
        sampling = model_k.inner_model.inner_model.model_sampling
        for index, sigma in enumerate(sigmas):
            comfy.model_management.throw_exception_if_processing_interrupted()
            s = torch.full((batch,), sigma, device=x.device, dtype=x.dtype)
            noised = sampling.noise_scaling(s[0], model_k.noise.to(x.device), model_k.latent_image.to(x.device))
            if call is None:
                each(model_k(noised, s, **(extra_args or {})))
            else:
                each(call(model_k, noised, s, extra_args or {}, index))
        return x

    guider = comfy.samplers.CFGGuider(model)
    if model_function_wrapper is not None:
        guider.model_options = {**guider.model_options, "model_function_wrapper": model_function_wrapper}
    guider.set_conds(positive, positive)
    guider.set_cfg(1.0)  # the negative is never evaluated at cfg 1
    with compute_precision(model.model.diffusion_model):
        guider.sample(noise, latent_batch, comfy.samplers.KSAMPLER(sampler_function),
                      torch.tensor(list(sigmas) + [0.0]), disable_pbar=True, seed=seed)
