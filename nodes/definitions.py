"""The pack's ComfyUI nodes (V3 API): thin adapters over ``core/`` and the modules beside this one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import folder_paths
import torch
from comfy_api.latest import io

from ..core.pairs import (
    DEFAULT_NEUTRAL_PROMPTS, PairsError, UnknownTokenWarning, content_lines, parse_pairs, parse_prompts,
)
from ..core.basis import EDITS, RefusalBasis
from ..core.refusal import METHODS, pair_notes
from ..core.edit import EDIT_TARGETS
from ..core.fingerprint import fingerprint_weights
from . import storage
from .adapters import GROUP_CHOICES, adapter_named, layers_for
from .collect import collect_activations, empty_latent, parse_timesteps
from .patching import ALL_IN_VECTOR, FP8_LORA_NOTE, apply_unlearning, export_lora
from .payloads import ACTIVATIONS_TYPE, PAIRS_TYPE, REFUSAL_VECTOR_TYPE, CollectedActivations, EncodedPairs
from .plot import chart_output
from .text_tokens import unknown_token_warnings

logger = logging.getLogger(__name__)

Pairs = io.Custom(PAIRS_TYPE)
Activations = io.Custom(ACTIVATIONS_TYPE)
RefusalVector = io.Custom(REFUSAL_VECTOR_TYPE)
CATEGORY = "unlearning"
#: For a node that shows results but is not an output node (the badge, a chart, the check's recommendation). A newer
#: ComfyUI (``has_intermediate_output`` in ``io.Schema``) keeps the UI results of only the nodes that ran, the output
#: nodes and those flagged so in a run's history, and the editor reads a cached run's results from there: without the
#: flag, a run served from the cache showed nothing on these nodes. ComfyUI 0.3.64's Schema has no such field (and
#: keeps every node's results).
SHOWS_RESULTS = ({"has_intermediate_output": True}
                 if "has_intermediate_output" in getattr(io.Schema, "__dataclass_fields__", {}) else {})
EXAMPLE_PAIRS = "\n".join([
    "# one pair per line: prompt WITH the concept | the same prompt WITHOUT it",
    "a Rolex watch on a wooden table | a watch on a wooden table",
    "a close-up of a Rolex on a wrist | a close-up of a watch on a wrist",
    "a gold Rolex in a shop window | a gold watch in a shop window",
    "a man checking his Rolex at the airport | a man checking his watch at the airport",
    "a Rolex lying on the sand at the beach | a watch lying on the sand at the beach",
])


def _block_inputs():
    return [
        io.Int.Input("block_start", default=0, min=0, max=200, tooltip="First transformer block to use (0 = first)."),
        io.Int.Input("block_end", default=-1, min=-1, max=200, tooltip="Last transformer block to use, inclusive; -1 = the last block."),
    ]


def _encode(clip, text: str):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def _with_vision(conditioning, clip_vision_output):
    if clip_vision_output is None:
        return conditioning
    return [[c[0], {**c[1], "clip_vision_output": clip_vision_output}] for c in conditioning]


class PairEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoUnlearnPairEncoder", display_name="Pair Encoder (Unlearning)", category=CATEGORY,
            **SHOWS_RESULTS,
            description="Encodes prompt pairs that differ only by the concept to forget, plus neutral prompts.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the video model (for Wan: umt5_xxl)."),
                io.String.Input("pairs", multiline=True, default=EXAMPLE_PAIRS,
                                tooltip="One pair per line: 'prompt with the concept | same prompt without it'. "
                                        "At least 2, 5 or more recommended (25 or more for a broad concept such as "
                                        "nudity or violence); lines starting with # are comments."),
                io.String.Input("neutral_prompts", multiline=True, default="\n".join(DEFAULT_NEUTRAL_PROMPTS),
                                tooltip="Everyday prompts, one per line. Their variation is subtracted (contrastive PCA) "
                                        "so ordinary differences are not mistaken for the concept."),
                io.String.Input("concept", default="", tooltip="A label for the concept (e.g. 'Rolex'), stored with the vector and shown on Apply Unlearning."),
                io.ClipVisionOutput.Input("unsafe_clip_vision_output", optional=True,
                                          tooltip="Image-to-video models: CLIP vision output of a start image showing the concept."),
                io.ClipVisionOutput.Input("safe_clip_vision_output", optional=True,
                                          tooltip="Image-to-video models: CLIP vision output of the matching start image "
                                                  "without the concept; the neutral prompts use it too. Connect both "
                                                  "sides or neither."),
            ],
            outputs=[Pairs.Output(display_name="pairs",
                                  tooltip="The encoded pairs and neutral prompts: to Collect Activations, or to "
                                          "Unlearning Check as validation pairs.")],
        )

    @classmethod
    def validate_inputs(cls, pairs=None, neutral_prompts=None):
        # A linked input reaches validation as None: its text is checked when the node runs.
        # ComfyUI attaches the message to every input validate_inputs takes: each names its own input.
        try:
            if pairs is not None:
                _pairs(pairs, warn=lambda *_: None)  # warnings are the editor's and the run's to show
            if neutral_prompts is not None:
                _neutral(neutral_prompts)
        except PairsError as error:
            return f"Pair Encoder: {error}"
        return True

    @classmethod
    def execute(cls, clip, pairs, neutral_prompts, concept, unsafe_clip_vision_output=None,
                safe_clip_vision_output=None):
        if (unsafe_clip_vision_output is None) != (safe_clip_vision_output is None):
            given = "unsafe" if safe_clip_vision_output is None else "safe"
            raise ValueError(f"Pair Encoder: only the {given} side has a CLIP vision output. Connect one to both "
                             "unsafe_clip_vision_output and safe_clip_vision_output, or to neither: prompts are run "
                             "in batches, and a batch needs an image for every prompt or for none")
        # Not warnings.warn: Python shows a warning once per process and line, so a second run with another swapped
        # pair showed nothing. Each run's warnings go to the console and onto the node (a linked pairs text has no
        # live check in the editor).
        notes: list[str] = []

        def warn(message: str, _category: type[Warning]) -> None:
            logger.warning("Pair Encoder: %s", message)
            notes.append(message)

        try:
            parsed = tuple(_pairs(pairs, warn=warn))
            neutral = _neutral(neutral_prompts)
        except PairsError as error:  # a linked text is first checked here
            raise PairsError(f"Pair Encoder: {error}") from error
        unsafe = tuple(_encode(clip, p.unsafe) for p in parsed)
        safe = tuple(_encode(clip, p.safe) for p in parsed)
        for pair, shown, hidden in zip(parsed, unsafe, safe):
            if _same_encoding(shown, hidden):
                raise ValueError(f"Pair Encoder: line {pair.line}: both sides reach the model as the same text "
                                 "encoding, so the pair measures nothing. Look in ComfyUI's console: an "
                                 "'embedding:name' it cannot find is dropped, and so are words its tokenizer ignores; "
                                 "a tokenizer may also read every run of characters it lacks as one unknown token, "
                                 "and full-width letters as plain ones (NFKC). Write the concept as text the encoder "
                                 "reads")
        for message in unknown_token_warnings(clip, parsed, neutral):
            warn(message, UnknownTokenWarning)
        encoded = EncodedPairs(
            pairs=parsed, concept=concept.strip(),
            unsafe=tuple(_with_vision(c, unsafe_clip_vision_output) for c in unsafe),
            safe=tuple(_with_vision(c, safe_clip_vision_output) for c in safe),
            # the safe side's image, so that the neutral prompts vary in their text alone and batch with the pairs
            neutral_prompts=neutral,
            neutral=tuple(_with_vision(_encode(clip, prompt), safe_clip_vision_output) for prompt in neutral),
            text_encoder=text_encoder_identity(clip),
        )
        return io.NodeOutput(encoded, ui={PAIR_WARNINGS_KEY: [{"pairs": len(parsed), "warnings": notes}]})


#: The Pair Encoder run's UI output (web/video_unlearning.js shows it under the pairs): every run sends it, so that a
#: run without warnings clears those of the run before.
PAIR_WARNINGS_KEY = "video_unlearning_pairs"


def _pairs(text: str, warn):
    try:
        return parse_pairs(text, warn=warn)
    except PairsError as error:
        raise PairsError(f"pairs: {error}") from error


def text_encoder_identity(clip) -> dict:
    """What a vector records of the CLIP that encoded its prompts: the encoder's class, the :func:`fingerprint_weights`
    of its weights as loaded from the file (a strided sample of each tensor, milliseconds even for umt5-xxl), how many
    of its weights carry patches, and ``patches``, a digest of those patches (:func:`_patches_digest`; None without
    any): a LoRA on the text encoder changes every encoding. The fingerprint is None, with the reason, where the
    weights cannot be sampled as plain tensors.

    The weights are the bare ones whatever ComfyUI has loaded: fully loaded, a patched CLIP holds its weights with the
    LoRA merged in (the patcher keeps the file's in its ``backup``); partially loaded or unloaded, the bare ones. Read
    as loaded, one CLIP + LoRA gave two fingerprints (tiny Wan: c5a98adaa3c4bab2 fully loaded, the bare CLIP's
    1a72e8d5b0e774c3 partially loaded or after unload) while its encodings were the same.

    A hook LoRA (Create Hook LoRA + Set CLIP Hooks: the patcher's ``forced_hooks`` and ``hook_patches``) and a weight
    wrapper (``add_weight_wrapper``) change the encodings too (tiny Wan: by up to 4.97 and 0.105) without touching
    ``patches``; the hooks merge into the weights on load (the bare ones wait in ``hook_backup``). Both go into the
    ``patches`` digest, with ``hooked_weights`` and ``wrapped_weights`` counts where there are any, so that a CLIP
    without them keeps the identity it had before."""
    encoder = getattr(clip, "cond_stage_model", None)
    identity = {"class": type(encoder if encoder is not None else clip).__name__}
    patcher = getattr(clip, "patcher", None)
    patches = getattr(patcher, "patches", None) or {}
    identity["patched_weights"] = len(patches)
    try:
        hooks = _forced_hook_patches(patcher)
        wrappers = getattr(patcher, "weight_wrapper_patches", None) or {}
        hooked = {key for _hook, hook_patches in hooks for key in hook_patches}
    except Exception as error:  # noqa: BLE001  (provenance only: another pack's hook must not stop Pair Encoder)
        hooks, wrappers, hooked = [], {}, set()
        identity["patches_missing"] = f"{type(error).__name__}: {error}"[:200]
    if hooked:
        identity["hooked_weights"] = len(hooked)
    if wrappers:
        identity["wrapped_weights"] = len(wrappers)
    # the patcher's backup holds the file's weight of every key it merged patches into, and its hook_backup, as
    # (tensor, device), the weight before the hooks were merged in on load (clones share both). The backup first:
    # a load merges the patches before the hooks, so hook_backup holds a LoRA'd weight where both apply.
    backup = getattr(patcher, "backup", None) or {}
    hook_backup = getattr(patcher, "hook_backup", None) or {}
    try:
        weights = {}
        for key, value in encoder.state_dict().items():
            saved = getattr(backup.get(key), "weight", None)
            if not isinstance(saved, torch.Tensor):
                saved = (hook_backup.get(key) or (None,))[0]
            value = saved if isinstance(saved, torch.Tensor) else value
            if isinstance(value, torch.Tensor):
                weights[key] = value
        identity["fingerprint"] = fingerprint_weights(weights)
    except Exception as error:  # noqa: BLE001  (provenance only: recorded with its reason, never stops Pair Encoder)
        identity["fingerprint"] = None
        identity["fingerprint_missing"] = f"{type(error).__name__}: {error}"[:200]
    try:
        scheduled = bool(getattr(clip, "use_clip_schedule", False))
        identity["patches"] = (_patches_digest(patches, hooks, wrappers, scheduled)
                               if patches or hooks or wrappers else None)
    except Exception as error:  # noqa: BLE001  (as above: another pack's patch object may raise anything)
        identity["patches"] = None
        identity["patches_missing"] = f"{type(error).__name__}: {error}"[:200]
    return identity


def _forced_hook_patches(patcher) -> list:
    """``(hook, its patches)`` for every hook a CLIP applies when it encodes: those of its ``forced_hooks`` (Set CLIP
    Hooks), with the patches ``register_all_hook_patches`` put under the hook's ``hook_ref`` (``{}`` before that). Hooks
    registered but not forced are left out: the CLIP never applies them."""
    forced = getattr(getattr(patcher, "forced_hooks", None), "hooks", None) or []
    registered = getattr(patcher, "hook_patches", None) or {}
    return [(hook, registered.get(getattr(hook, "hook_ref", None), None) or {}) for hook in forced]


def _patches_digest(patches: dict, hooks: list = (), wrappers: dict | None = None, scheduled: bool = False) -> str:
    """sha256 (first 16 hex digits) over a ModelPatcher's ``patches`` (key -> list of ``(strength_patch, value,
    strength_model, offset, function)``): the keys, strength multipliers, offsets, the adapters' classes and a
    :func:`fingerprint_weights` sample of every tensor in them. Two LoRAs, or one at two strengths, differ.

    Then, where there are any, the forced hooks (:func:`_forced_hook_patches`: each one's class, CLIP strength,
    keyframes and patches, walked as ``patches`` are) and the weight wrappers (each key and its functions' names
    only: two wrappers of one name that scale by 1.5 and by 0 read alike; docs/method.md says so), with ``scheduled`` (the
    CLIP's ``use_clip_schedule``: the keyframes then encode each prompt at several strengths) where there are hooks.
    Without either the digest is the one ``patches`` alone gave before."""
    described, tensors = [], {}

    def walk(value, path: str) -> None:
        if isinstance(value, torch.Tensor):
            tensors[path] = value
            described.append(f"{path}:tensor")
        elif hasattr(value, "weights"):  # a comfy.weight_adapter adapter (LoRA, LoHa, ...)
            described.append(f"{path}:{type(value).__name__}")
            walk(value.weights, f"{path}/weights")
        elif isinstance(value, (list, tuple)):
            described.append(f"{path}:{type(value).__name__}[{len(value)}]")
            for i, item in enumerate(value):
                walk(item, f"{path}/{i}")
        elif isinstance(value, dict):
            for name in sorted(value, key=str):
                walk(value[name], f"{path}/{name}")
        elif value is None or isinstance(value, (bool, int, float, str)):
            described.append(f"{path}:{value!r}")
        else:  # a callable or an object with no tensors we know of: its type at least
            described.append(f"{path}:{getattr(value, '__qualname__', type(value).__name__)}")

    for key in sorted(patches, key=str):
        for i, patch in enumerate(patches[key]):
            walk(patch, f"{key}#{i}")
    for i, (hook, hook_patches) in enumerate(hooks):
        # a hook's own strength_clip is in its patches' tuples; its keyframes scale them when the CLIP is scheduled
        keyframes = getattr(getattr(hook, "hook_keyframe", None), "keyframes", None) or []
        walk([type(hook).__name__, getattr(hook, "_strength_clip", None), scheduled,
              [(getattr(k, "strength", None), getattr(k, "start_percent", None), getattr(k, "guarantee_steps", None))
               for k in keyframes]], f"hook#{i}")
        for key in sorted(hook_patches, key=str):
            for j, patch in enumerate(hook_patches[key]):
                walk(patch, f"hook#{i}/{key}#{j}")
    for key in sorted(wrappers or {}, key=str):
        walk(list(wrappers[key]), f"wrapper/{key}")
    digest = hashlib.sha256("\n".join(described).encode())
    digest.update(fingerprint_weights(tensors).encode())
    return digest.hexdigest()[:16]


def _neutral(text: str) -> tuple[str, ...]:
    try:
        prompts = tuple(parse_prompts(text))
    except PairsError as error:
        raise PairsError(f"neutral_prompts: {error}") from error
    if len(prompts) == 1:
        # one prompt has no variation to subtract: the contrast would silently be off
        repeated = " (repeated lines count once)" if len(list(content_lines(text))) > 1 else ""
        raise PairsError(f"neutral_prompts: one distinct prompt{repeated} has no variation to subtract; give 2 or "
                         "more (20 by default), or none to let the pairs' safe sides stand in")
    return prompts


def _same_encoding(first, second) -> bool:
    """Whether two conditionings hold the same text encoding (their first tensors)."""
    return len(first) == len(second) and all(a[0].shape == b[0].shape and torch.equal(a[0], b[0])
                                             for a, b in zip(first, second))


class CollectActivations(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoUnlearnCollectActivations", display_name="Collect Activations (Unlearning)", category=CATEGORY,
            description="Runs the model on both sides of every pair (same noise) and records what the editable layers read.",
            inputs=[
                io.Model.Input("model", tooltip="The video model to unlearn from (Wan, HunyuanVideo, LTX-Video, Mochi, Cosmos)."),
                Pairs.Input("pairs", tooltip="Encoded pairs from Pair Encoder."),
                io.Int.Input("width", default=832, min=16, max=4096, step=16, tooltip="Width of the latent used for measuring; ignored when a latent is connected."),
                io.Int.Input("height", default=480, min=16, max=4096, step=16, tooltip="Height of the latent used for measuring; ignored when a latent is connected."),
                io.Int.Input("length", default=1, min=1, max=1024, step=4, tooltip="Frames of the measuring latent; 1 is enough for text-side layers."),
                io.String.Input("timesteps", default="4", tooltip="A whole count (spread over the model's schedule, with its shift) or progress fractions like '0.1, 0.5, 0.9' (0.0 = pure noise; a bare 0 is a count). Text-side layers need only one."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the noise; both sides of a pair share it. Layers that read only the text "
                                     "(Wan's default, text-side cross_attn.k+v) see no noise: there the seed changes "
                                     "nothing."),
                io.Combo.Input("layers", options=list(GROUP_CHOICES), default="default", tooltip="Which linear layers to measure; 'default' = the family's recommended group (Wan: text-side cross_attn.k+v)."),
                *_block_inputs(),
                io.Latent.Input("latent", optional=True, tooltip="Optional latent to measure on instead of an empty one of width x height x length."),
            ],
            outputs=[Activations.Output(display_name="activations",
                                        tooltip="Per-layer statistics of the pairs and neutral prompts: to Low-Rank "
                                                "Refusal Vector.")],
        )

    @classmethod
    def validate_inputs(cls, timesteps=None):
        if timesteps is None:  # linked: checked when the node runs
            return True
        try:
            parse_timesteps(timesteps)
        except ValueError as error:
            return f"Collect Activations: {error}"
        return True

    @classmethod
    def execute(cls, model, pairs, width, height, length, timesteps, seed, layers, block_start, block_end, latent=None):
        try:
            names = layers_for(model, layers, block_start, block_end)
        except ValueError as error:  # as Apply's, Check's and Export's layer refusals: the node first
            raise ValueError(f"Collect Activations: {error}") from error
        samples = latent["samples"] if latent is not None else empty_latent(model, width, height, length)
        size = {"latent_shape": list(samples.shape)} if latent is not None else \
            {"width": width, "height": height, "length": length}
        settings = {**size, "layer_group": layers, "block_start": block_start, "block_end": block_end}
        return io.NodeOutput(collect_activations(model, pairs, samples, timesteps, seed, names, settings))


class RefusalVectorNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoUnlearnRefusalVector", display_name="Low-Rank Refusal Vector", category=CATEGORY, **SHOWS_RESULTS,
            description="Isolates the concept per layer: mean pair difference restricted to a contrastive low-rank subspace.",
            inputs=[
                Activations.Input("activations", tooltip="From Collect Activations."),
                io.Combo.Input("method", options=list(METHODS), default="cpca", tooltip="cpca: contrastive low-rank subspace (the paper's method); mean: the raw mean difference."),
                io.Int.Input("rank", default=4, min=1, max=256, tooltip="Largest size k of the contrastive subspace. Only directions where the pairs differ more than alpha times the neutral prompts vary are kept: at most one per pair on text-side layers (5 pairs: 5)."),
                io.Float.Input("alpha", default=1.0, min=0.0, max=100.0, step=0.05, tooltip="Weight of the neutral prompts' covariance; 0 = plain PCA of the pair differences."),
                io.Combo.Input("edit", options=list(EDITS), default="direction", optional=True, tooltip="What Apply Unlearning removes: direction = the one refusal direction per layer (names, trademarks); subspace = the whole rank-k contrastive subspace (more collateral; on the broad concepts README measured, the direction already removed them and the subspace removed no more: compare both with Unlearning Check)."),
            ],
            outputs=[RefusalVector.Output(display_name="refusal_vector",
                                           tooltip="The concept's direction per layer: to Apply Unlearning, Unlearning "
                                                   "Check, Save Refusal Vector or Export Unlearning as LoRA."),
                     io.Image.Output(display_name="scores",
                                     tooltip="Per-input separation of the pairs along the edit direction (the chart "
                                             "shown on the node).")],
        )

    @classmethod
    def execute(cls, activations: CollectedActivations, method, rank, alpha, edit="direction"):
        basis = activations.fitter.fit(rank=rank, alpha=alpha, method=method, edit=edit, concept=activations.concept,
                                       pairs=activations.pairs, model_family=activations.family,
                                       model_fingerprint=activations.fingerprint)
        basis = dataclasses.replace(basis, measurement=activations.measurement)
        # Text-side inputs only: on the organism's video-side groups (cross_attn.o, ffn.0) a correct benchmark pair
        # read -0.09..0.04, where text k/v gave every correct pair 0.14 or more.
        text_side = adapter_named(activations.family).text_side_layers(activations.layers)
        notes = pair_notes(activations.fitter.pair_shifts(basis, text_side), activations.pairs) if text_side else []
        for note in notes:
            logger.warning("Low-Rank Refusal Vector (%s): %s", activations.concept or "unnamed concept", note)
        chart, chart_ui = chart_output(basis, cls, notes)
        return io.NodeOutput(basis, chart, ui=chart_ui)


#: The strength widgets' range (Apply Unlearning, Export Unlearning as LoRA): 1 removes the concept direction fully,
#: above 1 pushes against it (at 4 the component along it is reversed and tripled: 1 - 4 = -3).
MAX_STRENGTH = 4.0


def exact_number(value: float) -> str:
    """``value`` as typed where it was typed (50, 0.25), and to its last digit where it is not (4.000000000000001,
    a math node's 4 + 1 ulp, which ``:g`` wrote as 4: "strength 4 is outside its range 0..4")."""
    return repr(float(value)).removesuffix(".0")


def require_strength_in_range(node: str, strength) -> None:
    """The strength within the widget's documented range, 0..:data:`MAX_STRENGTH`. ComfyUI checks min and max only
    for a widget's own value: one linked from another node (the stock Primitive Float allows any number) arrived
    unchecked, and Apply ran at 50 or 1e6 without a word."""
    if not 0.0 <= float(strength) <= MAX_STRENGTH:  # a NaN fails this too
        raise ValueError(f"{node}: strength {exact_number(strength)} is outside its range 0..{MAX_STRENGTH:g} (a value "
                         "linked from another node skips the widget's own range check): 1 removes the concept "
                         f"direction fully, above 1 pushes against it; give a strength between 0 and {MAX_STRENGTH:g}")


class ApplyUnlearning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoUnlearnApply", display_name="Apply Unlearning", category=CATEGORY, **SHOWS_RESULTS,
            description="Folds the refusal vector into the weights as a patch on a copy of the model (the original is untouched).",
            inputs=[
                io.Model.Input("model", tooltip="The model to edit (the same family and size the vector was measured on)."),
                # Lazy: with enabled off, what feeds them (Collect Activations, Unlearning Check) is not run.
                RefusalVector.Input("refusal_vector", lazy=True,
                                    tooltip="From Low-Rank Refusal Vector or Load Refusal Vector."),
                io.Float.Input("strength", default=1.0, min=0.0, max=MAX_STRENGTH, step=0.05, lazy=True,
                               tooltip="1 removes the concept direction fully, 0 changes nothing; negative values are "
                                       "not allowed (they would amplify it)."),
                io.Boolean.Input("enabled", default=True,
                                 tooltip="Off returns the model unchanged, to compare in one workflow; the vector and a "
                                         "linked strength are then not computed."),
                io.Combo.Input("layers", options=[ALL_IN_VECTOR, *GROUP_CHOICES], default=ALL_IN_VECTOR, tooltip="Which of the vector's layers to edit."),
                *_block_inputs(),
                io.Combo.Input("target", options=list(EDIT_TARGETS), default="safe_mean", tooltip="safe_mean: move the removed component to the safe prompts' mean (keeps activations typical); zero: project it out."),
            ],
            outputs=[io.Model.Output(tooltip="A patched clone of the model; the input MODEL and its file are "
                                             "unchanged.")],
        )

    @classmethod
    def check_lazy_status(cls, enabled, refusal_vector=None, strength=None, **_inputs):
        if not enabled:
            return []
        return [name for name, value in (("refusal_vector", refusal_vector), ("strength", strength)) if value is None]

    @classmethod
    def execute(cls, model, refusal_vector: RefusalBasis | None, strength, enabled, layers, block_start, block_end,
                target):
        if enabled:  # off, a linked strength is not computed (None)
            require_strength_in_range("Apply Unlearning", strength)
        patched, edited = apply_unlearning(model, refusal_vector, strength=strength, enabled=enabled, group=layers,
                                           block_start=block_start, block_end=block_end, target=target)
        # Off, the lazy vector and a linked strength were not computed: None.
        badge = {"enabled": bool(enabled), "strength": float(strength) if strength is not None else 0.0,
                 "concept": refusal_vector.concept if refusal_vector is not None else "", "layers": len(edited)}
        return io.NodeOutput(patched, ui={"video_unlearning": [badge]})


#: How Save Refusal Vector stores the pairs: as written, or as ``core.pairs.prompt_digest`` of each prompt.
PAIR_TEXT = ("text", "digests")


class SaveRefusalVector(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoUnlearnSaveRefusalVector", display_name="Save Refusal Vector", category=CATEGORY,
            is_output_node=True,
            description="Saves the vector to models/refusal_vectors as safetensors, with its pairs, settings, model "
                        "family and weight fingerprint in the metadata; Load Refusal Vector reads it back. Whoever "
                        "gets the file gets the pairs' text, unless pair_text is 'digests'.",
            inputs=[
                RefusalVector.Input("refusal_vector", tooltip="The vector to save (safetensors with its pairs and provenance)."),
                io.String.Input("filename_prefix", default="refusal_vector", tooltip="File name prefix inside models/refusal_vectors; '/' makes subfolders."),
                io.Combo.Input("pair_text", options=list(PAIR_TEXT), default="text", optional=True,
                               tooltip="'text' stores the pairs as written. 'digests' stores a SHA-256 of each prompt "
                                       "instead, for a file shared without its prompts' text (for some concepts "
                                       "explicit); Unlearning Check still tells when a validation pair is one of "
                                       "them. A digest hides only a prompt no one can guess: anyone holding a list "
                                       "of candidate prompts (a public benchmark) can test them against it."),
            ],
            outputs=[],
        )

    @classmethod
    def validate_inputs(cls, filename_prefix=None):
        problem = filename_prefix is not None and storage.prefix_problem(filename_prefix)
        return f"Save Refusal Vector: {problem}" if problem else True

    @classmethod
    def execute(cls, refusal_vector: RefusalBasis, filename_prefix, pair_text="text"):
        if pair_text not in PAIR_TEXT:
            raise ValueError(f"Save Refusal Vector: pair_text must be one of {list(PAIR_TEXT)}, got {pair_text!r}")
        if pair_text == "digests":
            refusal_vector = refusal_vector.with_pair_digests()
        storage.register_folder()
        folder = folder_paths.get_folder_paths(storage.FOLDER)[0]
        with storage.new_file(folder, filename_prefix) as path:
            refusal_vector.save(path)
        return io.NodeOutput(ui={"text": [storage.relative_name(path, folder)]})


class LoadRefusalVector(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoUnlearnLoadRefusalVector", display_name="Load Refusal Vector", category=CATEGORY,
            description="Loads a refusal vector saved by Save Refusal Vector (or copied into models/refusal_vectors).",
            inputs=[io.Combo.Input("name", options=storage.list_vectors(), tooltip="A refusal vector in models/refusal_vectors.")],
            outputs=[RefusalVector.Output(display_name="refusal_vector", tooltip="The saved vector, as computed.")],
        )

    @classmethod
    def validate_inputs(cls, name=None):
        if name is None:  # linked: checked when the node runs
            return True
        if name not in storage.list_vectors():
            return f"Load Refusal Vector: {name!r} is not in models/refusal_vectors; save one first or refresh the list"
        return True

    @classmethod
    def fingerprint_inputs(cls, name=None):
        # A file replaced under the same name must be read again, not served from ComfyUI's cache.
        return storage.file_signature(name)

    @classmethod
    def execute(cls, name):
        vector = RefusalBasis.load(storage.vector_path(name))
        # Refused here, not in RefusalBasis.load or at Apply: every file the pack has written since its first release
        # holds the fingerprint (Collect Activations always computes one), while a basis built in code (core's API,
        # tests, bench scripts) may leave it empty on purpose. In a file its absence can only be a hand edit, and
        # without it Apply cannot tell whether the vector was measured on the MODEL's weights.
        if not vector.model_fingerprint:
            raise ValueError(f"Load Refusal Vector: {name!r} has an empty model_fingerprint: every vector this pack "
                             "saves records the weights it was measured on, so the file was edited by hand or written "
                             "by another tool, and Apply Unlearning could not check it against the MODEL. Compute the "
                             "vector again with Collect Activations and Low-Rank Refusal Vector (or download it again)")
        return io.NodeOutput(vector)


class CombineRefusalVectors(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoUnlearnCombineVectors", display_name="Combine Refusal Vectors", category=CATEGORY,
            description="Forgets several concepts with one edit: per layer the concepts' directions are stacked and "
                        "re-orthonormalised (one rank-c patch), and each concept's removed component goes to its own "
                        "safe mean. Two edits applied one after the other would undo part of each other.",
            inputs=[
                RefusalVector.Input("refusal_vector_1", tooltip="A concept's vector (from Low-Rank Refusal Vector or Load Refusal Vector)."),
                RefusalVector.Input("refusal_vector_2", tooltip="Another concept's vector, measured on the same model."),
                RefusalVector.Input("refusal_vector_3", optional=True, tooltip="Optional third concept."),
                RefusalVector.Input("refusal_vector_4", optional=True, tooltip="Optional fourth concept."),
            ],
            outputs=[RefusalVector.Output(display_name="refusal_vector",
                                          tooltip="One vector removing every connected concept: to Apply Unlearning.")],
        )

    @classmethod
    def execute(cls, refusal_vector_1, refusal_vector_2, refusal_vector_3=None, refusal_vector_4=None):
        vectors = [v for v in (refusal_vector_1, refusal_vector_2, refusal_vector_3, refusal_vector_4) if v is not None]
        return io.NodeOutput(RefusalBasis.combine(vectors))


class ExportLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoUnlearnExportLoRA", display_name="Export Unlearning as LoRA", category=CATEGORY,
            is_output_node=True,
            description="Writes the edit as a standard LoRA file (models/loras) that LoraLoaderModelOnly applies with the same "
                        "effect on bf16/fp16/fp32 weights; the file's metadata names the model family, weight fingerprint, "
                        f"concept and strength. {FP8_LORA_NOTE}",
            inputs=[
                io.Model.Input("model", tooltip="The model the LoRA is for (the edit depends on its weights)."),
                RefusalVector.Input("refusal_vector", tooltip="The vector to export."),
                io.Float.Input("strength", default=1.0, min=0.0, max=MAX_STRENGTH, step=0.05,
                               tooltip="Baked into the LoRA; load it at strength 1.0 for the same effect as Apply "
                                       "Unlearning."),
                io.Combo.Input("target", options=list(EDIT_TARGETS), default="safe_mean",
                               tooltip="As in Apply Unlearning. safe_mean also moves biases (.diff_b keys), which "
                                       "kijai's WanVideoWrapper ignores with merge_loras off (and on GGUF models): "
                                       "export with 'zero' for it."),
                io.String.Input("filename_prefix", default="unlearning/lora", tooltip="File name prefix inside models/loras."),
            ],
            outputs=[],
        )

    @classmethod
    def validate_inputs(cls, filename_prefix=None):
        problem = filename_prefix is not None and storage.prefix_problem(filename_prefix)
        return f"Export Unlearning as LoRA: {problem}" if problem else True

    @classmethod
    def execute(cls, model, refusal_vector: RefusalBasis, strength, target, filename_prefix):
        require_strength_in_range("Export Unlearning as LoRA", strength)
        folder = folder_paths.get_folder_paths("loras")[0]
        with storage.new_file(folder, filename_prefix) as path:
            metadata = export_lora(model, refusal_vector, path, strength=strength, target=target)
        notes = [FP8_LORA_NOTE] if metadata["video_unlearning_fp8_layers"] != "0" else []
        patched = json.loads(metadata["video_unlearning_computed_on_patches"])["layers"]
        if patched:
            notes.append(f"computed on weights this MODEL patches (a LoRA or merge loaded before) on {patched} of the "
                         f"{len(json.loads(metadata['video_unlearning_layers']))} edited layers, as its metadata "
                         "records: the file is exact only when loaded after the same LoRAs at the same strengths; on "
                         "the bare model it leaves part of the concept. For a file of its own, export from the MODEL "
                         "before those LoRAs")
        for note in notes:  # also where API users and the console see it
            logger.warning("Export Unlearning as LoRA (%s): %s", storage.relative_name(path, folder), note)
        return io.NodeOutput(ui={"text": [storage.relative_name(path, folder), *notes]})


NODES = [PairEncoder, CollectActivations, RefusalVectorNode, ApplyUnlearning, CombineRefusalVectors, SaveRefusalVector,
         LoadRefusalVector, ExportLoRA]
