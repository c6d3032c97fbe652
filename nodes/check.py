"""Unlearning Check: efficacy and collateral of an edit per strength, in the graph, and a recommended strength.

A thin node over ``core.check``. The model runs through ComfyUI's own sampling stack, as in Collect Activations
(``CFGGuider`` at cfg 1 with a one-off sampler function that evaluates the model at a few sigmas on a small latent,
every prompt on the same noise), so model management, the model's shift and conditioning processing behave as in a
generation. The edit is applied by forward hooks that add the same low-rank change Apply Unlearning patches in
(``core.check.EditHooks``), so no strength re-patches or re-loads the model; hooks are removed on every exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch

import comfy.model_management
import comfy.sample
import comfy.utils
from comfy_api.latest import io, ui

from ..core.basis import RefusalBasis
from ..core.check import CheckResult, check_strengths, measure_baseline, overlapping_pairs
from ..core.check_hooks import ReplayCache
from ..core.edit import EDIT_TARGETS
from ..core.recommend import COLLATERAL_BUDGET, TOWARD_CONCEPT_LIMIT
from ..core.scripts import pair_script
from ..core.strengths import DEFAULT_STRENGTHS, parse_strengths
from .adapters import (GROUP_CHOICES, adapter_for, embeds_guidance, layer_suffix, require_pooled_text,
                       require_text_width)
from .check_chart import check_chart
from .check_fastpath import PaddedTextCollapse
from .collect import (empty_latent, evaluate_at_sigmas, evaluate_one_call_each, measuring_model, parse_timesteps,
                      sigmas_for)
from .conditioning import can_share_a_call, prompt_token_mask, row_token_masks, stack_conditionings
from .definitions import MAX_STRENGTH, SHOWS_RESULTS, exact_number
from .patching import (ALL_IN_VECTOR, carried_concepts, carrying_this_vector, edited_layers, has_module,
                       patched_weight, require_bias_for_target, select_layers)
from .weights import row_scale, stored_values
from .payloads import PAIRS_TYPE, REFUSAL_VECTOR_TYPE, EncodedPairs

#: Most prompts in one forward.
MAX_BATCH = 32
SWEEPS = ("none", "layer groups", "block halves")
#: Per family, modules on the text path before every editable layer whose output depends only on their input:
#: replayed across strengths (``core.check.ReplayCache``). Wan's projects 512 rows of 4096 T5 features per prompt,
#: most of a small-latent forward.
REPLAY_MODULES = {"wan": ("text_embedding",)}
DEFAULT_GRID = ", ".join(f"{s:g}" for s in DEFAULT_STRENGTHS)


def parse_grid(strengths: str) -> tuple[float, ...]:
    """``core.check.parse_strengths``, within Apply Unlearning's range: the recommended strength feeds its strength
    (the shipped workflows link it), which refuses one above :data:`MAX_STRENGTH`."""
    grid = parse_strengths(strengths)
    if grid[-1] > MAX_STRENGTH:
        raise ValueError(f"strength {exact_number(grid[-1])} is above {MAX_STRENGTH:g}, the most Apply Unlearning and "
                         f"Export Unlearning as LoRA take (the recommended strength feeds theirs): keep the grid "
                         f"within 0..{MAX_STRENGTH:g}")
    return grid


def check_inputs(basis: RefusalBasis, validation: EncodedPairs | None) -> list:
    """The benign prompts' conditionings; raises the errors a person can fix (missing or overlapping pairs)."""
    if validation is None or not validation.pairs:
        raise ValueError("Unlearning Check: no validation pairs. Connect a second Pair Encoder with 5 or more held-out "
                         "pairs (other wording than the pairs the refusal vector was computed from)")
    overlap = overlapping_pairs(basis.pairs, validation.pairs)
    if overlap:
        shown = "; ".join(f"'{u} | {s}'" for u, s in overlap[:3])
        raise ValueError(f"Unlearning Check: {len(overlap)} of the {len(validation.pairs)} validation pairs are among "
                         f"the pairs the refusal vector was computed from ({shown}). Validation pairs must be held out: "
                         "write new pairs in other wording in the validation Pair Encoder")
    if len(validation.neutral) < 2:
        raise ValueError(f"Unlearning Check: the validation Pair Encoder has {len(validation.neutral)} neutral prompts; "
                         "they are the check's benign prompts and at least 2 are needed (12 recommended)")
    return list(validation.neutral)


def require_readable_rows(model, validation: EncodedPairs, benign: list, extra: list, node: str) -> None:
    """Before any forward, refuse rows the MODEL cannot read (``adapters.require_text_width`` and
    ``require_pooled_text``), naming the input they came through: the validation pairs and benign prompts (a Pair
    Encoder) or the negative prompt (``extra``, a CLIP Text Encode). Another family's text encoder otherwise fails deep
    in the model with torch's shape error; HunyuanVideo reads the pooled output of every prompt, whatever the layers."""
    rows = [*validation.unsafe, *validation.safe, *benign]
    for require in (require_text_width, require_pooled_text):
        require(model, rows, node, "validation_pairs", "Pair Encoder")
        require(model, extra, node, "negative", "CLIP Text Encode")


#: What Pair Encoder adds to a prompt's conditioning beside its text: the negative row takes the benign rows' value.
IMAGE_EXTRAS = ("clip_vision_output",)


def negative_row(negative, benign: list, node: str = "Unlearning Check"):
    """The sampler's negative CONDITIONING as one more row of the check: its own text, with its own attention mask
    and pooled output (LTX-Video and Mochi read the mask, HunyuanVideo the pooled output), and the benign rows'
    image inputs from Pair Encoder (``IMAGE_EXTRAS``), so that it differs from them in its text alone."""
    if not (isinstance(negative, list) and len(negative) == 1 and isinstance(negative[0][0], torch.Tensor)
            and negative[0][0].shape[0] == 1):
        shape = [tuple(entry[0].shape) for entry in negative] if isinstance(negative, list) else type(negative).__name__
        # The sampler takes a combined negative (ConditioningCombine: one entry per prompt, their predictions
        # averaged), so "connect your sampler's negative" named what was already connected.
        combined = (f"a combined negative ({len(negative)} conditionings, as ConditioningCombine makes) is not "
                    f"supported by {node}; connect one CLIP Text Encode of the negative text, or join the prompts "
                    "with ConditioningConcat" if isinstance(negative, list) and len(negative) > 1 else
                    "connect the negative prompt that feeds your sampler (a CLIP Text Encode's output)")
        raise ValueError(f"{node}: negative must be one prompt's CONDITIONING (a CLIP Text Encode's output), "
                         f"got {shape}; {combined}")
    extras = {key: value for key, value in negative[0][1].items() if key not in IMAGE_EXTRAS}
    extras.update({key: benign[0][0][1][key] for key in IMAGE_EXTRAS if key in benign[0][0][1]})
    return [[negative[0][0], extras]]


class ApplyModelReplay:
    """Later evaluations of the same rows at the same sigma call the model's ``apply_model`` with the arguments
    ComfyUI's batching built for the first one, instead of going through ``calc_cond_batch`` again.

    Why: for the check's rows ComfyUI's batching copies every prompt's text context into one tensor at each call
    (``cond_cat``: 22 x 512 x 4096 floats for the default check, a fifth of a strength's forward on the nodes' bench),
    and hands the model a new tensor each time, which the replay cache then has to compare value by value. Replayed,
    the model gets the very same context tensor, which ``ReplayCache`` recognises by identity.

    Exact: a row set's replay is enabled only when its first evaluation through ComfyUI's stack returned exactly
    (``torch.equal``) what the model's ``apply_model`` returned inside it, in a single batch; at cfg 1 without cfg
    functions and at conditioning strength 1 everything between them multiplies by 1 and adds 0, for any values.
    Anything that changes the values there (a ``sampler_post_cfg_function``, a conditioning strength) makes that
    comparison fail, and the row set keeps the full path. Not used when the model already has a
    ``model_function_wrapper`` (it would have to be chained; ``enabled`` is False). The model's own wrappers
    (APPLY_MODEL, DIFFUSION_MODEL) still run: they live in the replayed ``transformer_options``.
    """

    def __init__(self, model):
        self.enabled = "model_function_wrapper" not in model.model_options
        self.replayed = 0
        self._calls: dict = {}  # (rows key, sigma index) -> (apply_model, input, timestep, c)
        self._seen: list = []

    def wrapper(self, apply_model, args):
        output = apply_model(args["input"], args["timestep"], **args["c"])
        self._seen.append((apply_model, args["input"], args["timestep"], args["c"], output))
        return output

    def call(self, key):
        def call(model_k, noised, sigma, extra_args, index):
            entry = self._calls.get((key, index))
            if entry is not None:
                apply_model, x, timestep, c = entry
                if torch.equal(x, noised) and torch.equal(timestep, sigma):  # both a few KB: the same call
                    self.replayed += 1
                    return apply_model(x, timestep, **c)
            self._seen = []
            prediction = model_k(noised, sigma, **extra_args)
            if len(self._seen) == 1:
                apply_model, x, timestep, c, output = self._seen[0]
                if (x.shape == noised.shape and output.shape == prediction.shape
                        and output.dtype == prediction.dtype and torch.equal(output, prediction)):
                    self._calls[(key, index)] = (apply_model, x, timestep, c)
            self._seen = []
            return prediction

        return call


def comfy_forward(model, latent: torch.Tensor, sigmas: list[float], seed: int, text_layers: list[str],
                  text_rows: PaddedTextCollapse | None = None):
    """``forward(rows, recorder)`` for ``core.check``: the model's denoised prediction for every row (a
    CONDITIONING) at ``sigmas``, all rows on one noise; text-side layers pooled over the prompt's tokens. Rows seen
    before are evaluated through :class:`ApplyModelReplay`. ``text_rows``: the check's padded-text collapse; while it
    applies, each row set's contexts are cut by it before they are stacked (the recorder's token mask with them).
    Rows that cannot share a model call (``conditioning.can_share_a_call``) run one call each."""
    noise_one = comfy.sample.prepare_noise(latent, seed)
    stacked = {}  # the same rows come back once per strength: stack their conditionings once
    replay = ApplyModelReplay(model)
    batches_text_masks = adapter_for(model).batches_text_masks

    def set_text_mask(recorder, make_mask) -> None:
        if recorder is not None:
            layers = [name for name in text_layers if name in recorder.names]
            if layers:
                recorder.set_token_mask(make_mask(), layers)

    def forward(rows, recorder):
        batch = len(rows)
        predictions = []

        def keep(prediction):
            predictions.append(prediction.detach().float().cpu().reshape(batch, -1))

        noise = noise_one.repeat(batch, *([1] * (latent.ndim - 1)))
        if not can_share_a_call(rows, batches_text_masks=batches_text_masks):
            if text_rows is not None:
                text_rows.alone += 1
            set_text_mask(recorder, lambda: row_token_masks(rows))
            evaluate_one_call_each(model, rows, latent, noise, sigmas, [seed] * batch, keep)
            return torch.cat(predictions, dim=1)
        key = tuple(id(row) for row in rows)
        collapsing = text_rows is not None and text_rows.applies
        if (key, collapsing) not in stacked:
            trimmed = text_rows.trim(rows) if collapsing else None
            # the rows are kept, so their ids stay theirs
            stacked[key, collapsing] = (list(rows), stack_conditionings(trimmed.rows if trimmed else rows), trimmed)
        _, positive, trimmed = stacked[key, collapsing]
        set_text_mask(recorder, lambda: trimmed.mask if trimmed is not None
                      else prompt_token_mask(positive[0][0], positive[0][1].get("attention_mask")))
        routes = dict(call=replay.call((key, collapsing)), model_function_wrapper=replay.wrapper) if replay.enabled else {}
        with text_rows.feeding(trimmed) if collapsing else contextlib.nullcontext():
            evaluate_at_sigmas(model, positive, latent, noise, sigmas, seed, keep, **routes)
        return torch.cat(predictions, dim=1)

    forward.replay = replay
    return forward


def layer_weight(model, layer: str) -> torch.Tensor:
    """The layer's weight as ``model`` uses it, float32 on the CPU, as Apply Unlearning computes its edit from it: the
    file's weight (the unpatched original when a patched clone of the model is loaded, ComfyUI keeps it in the shared
    ``backup``), a scaled-fp8 checkpoint's scale applied, and the MODEL's own patches (a LoRA loaded before it)."""
    patched = patched_weight(model, layer)
    if patched is not None:
        return patched.cpu()
    weight = stored_values(model, layer).detach().to("cpu", torch.float32)
    scale = row_scale(model.model.diffusion_model.get_submodule(layer), "cpu")
    return weight if scale is None else weight * scale


class LayerWeights(Mapping):
    """``{layer: layer_weight(model, layer)}`` computed when read and not kept: the check reads each weight a few
    times, one layer at a time (for W U and the layer-level figures), where holding every edited layer's float32
    copy for the whole run took 8 GB for the 80 text-side k/v layers of Wan 14B."""

    def __init__(self, model, layers):
        self._model, self._layers = model, list(layers)

    def __getitem__(self, layer: str) -> torch.Tensor:
        if layer not in self._layers:
            raise KeyError(layer)
        return layer_weight(self._model, layer)

    def __contains__(self, layer) -> bool:  # Mapping's would read the weight
        return layer in self._layers

    def __iter__(self):
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)


def sweep_options(model, basis: RefusalBasis, layers: list[str], sweep: str) -> list[tuple[str, list[str]]]:
    """Extra layer subsets to compare: the adapter's groups present in ``layers``, or their first/second half of blocks.
    Empty when the selection has a single group or block: :func:`sweep_skipped` says why."""
    options = _sweep_candidates(model, layers, sweep)
    return options if len(options) > 1 else []


def _sweep_candidates(model, layers: list[str], sweep: str) -> list[tuple[str, list[str]]]:
    """Every subset ``sweep`` splits ``layers`` into, one when there is nothing to compare."""
    if sweep == "none":
        return []
    if sweep not in SWEEPS:
        raise ValueError(f"sweep must be one of {SWEEPS}, got {sweep!r}")
    adapter = adapter_for(model)
    if sweep == "layer groups":
        options = []
        for name, group in adapter.groups.items():
            chosen = [layer for layer in layers if layer_suffix(layer) in group.suffixes]
            if chosen:
                options.append((name, chosen))
        return options
    diffusion = model.model.diffusion_model
    index = {layer: adapter.main_block(diffusion, layer) for layer in layers}  # a VACE block: where it is injected
    # a layer outside the blocks (HunyuanVideo's vector_in) is in neither half; the whole selection still checks it
    index = {layer: block for layer, block in index.items() if block is not None}
    blocks = sorted(set(index.values()))
    if len(blocks) < 2:
        return [(f"block {block}", list(index)) for block in blocks]
    half = blocks[len(blocks) // 2]
    early = [layer for layer in index if index[layer] < half]
    late = [layer for layer in index if index[layer] >= half]
    return [(f"blocks {blocks[0]}-{half - 1}", early), (f"blocks {half}-{blocks[-1]}", late)]


def sweep_skipped(model, layers: list[str], sweep: str) -> str | None:
    """Why a sweep that was asked for compares nothing (the table's and the node's line), or None. Without it a sweep
    over one group or one block silently showed no rows."""
    candidates = _sweep_candidates(model, layers, sweep)
    if sweep == "none" or len(candidates) > 1:
        return None
    if sweep == "layer groups":
        found = f"one group ({candidates[0][0]})" if candidates else "none of the model's layer groups"
        return (f"sweep 'layer groups' not run: the {len(layers)} checked layers form {found}, so there is nothing "
                "to compare; collect the vector with layers = all (Collect Activations) to compare groups")
    if not candidates and layers:
        # every checked layer is outside the blocks (HunyuanVideo's vector_in): no block range or vector over more
        # blocks gives it halves, so the remedy is the other sweep
        return (f"sweep 'block halves' not run: none of the {len(layers)} checked layers lies in a block "
                f"({layers[0]!r} is outside the block list), so there are no halves to compare; choose sweep "
                "'layer groups' with a vector collected with layers = all (Collect Activations) to compare it with "
                "the layers in the blocks")
    found = f"one block ({candidates[0][0]})" if candidates else "no block"
    inside = len(candidates[0][1]) if candidates else 0
    # HunyuanVideo's vector_in lies outside the blocks: counted apart, not said to lie in one
    where = f" in blocks (and {len(layers) - inside} outside them)" if inside < len(layers) else ""
    return (f"sweep 'block halves' not run: the {inside} checked layers{where} lie in {found}, which has no halves; "
            "widen block_start..block_end (or collect the vector over more blocks) to compare halves")


def run_unlearning_check(model, basis: RefusalBasis, validation: EncodedPairs | None, strengths: str, *,
                         group: str, block_start: int, block_end: int, target: str, width: int, height: int,
                         length: int, timesteps: str, seed: int, sweep: str = "none", negative=None,
                         cfg: float | None = None, collapse_padded_text: bool = True,
                         notes: dict | None = None) -> tuple[CheckResult, list[CheckResult]]:
    """The check of the chosen layers, and of each sweep option (same grid, same baseline forward).

    ``negative`` (the sampler's negative CONDITIONING) with ``cfg`` (its guidance) adds guided collateral, which the
    recommendation then reads (``core.check_figures.guided_collateral``); without it, the conditional prediction's
    collateral.

    ``collapse_padded_text``: on a known Wan, run the text side on the rows up to the longest prompt plus one for the
    zero padding (``nodes.check_fastpath``; exact in maths, the figures move at rounding level); False runs it on every
    padding row, as ComfyUI does. ``notes``, when given, receives ``padded_text_collapsed`` (True when every forward
    ran collapsed) and ``padded_text`` (the line :func:`table_text` shows: which path ran, or why not)."""
    model = measuring_model(model)  # without torch.compile and step caches: collect.MEASURING_SKIPS
    benign = check_inputs(basis, validation)
    grid = parse_strengths(strengths)
    if negative is not None and not (cfg is not None and cfg > 0):
        raise ValueError(f"Unlearning Check: cfg must be your sampler's cfg (> 0), got {cfg!r}")
    extra = [] if negative is None else [negative_row(negative, benign)]
    require_readable_rows(model, validation, benign, extra, "Unlearning Check")
    layers = select_layers(model, basis, group, block_start, block_end, "Unlearning Check")
    require_bias_for_target(model, layers, target)
    already = edited_layers(model, layers)
    if already:
        # another vector's edit (not this one's on every edited layer): checking two concepts takes their combination
        others = set(already) - set(carrying_this_vector(model, basis, already))
        concepts = ", ".join(map(repr, carried_concepts(model, already)))
        combine = (f" It carries another refusal vector's edit (edits of {concepts}): to check several concepts "
                   "together, combine the vectors (Combine Refusal Vectors) and check the combined vector on the "
                   "model from before Apply Unlearning") if others else ""
        raise ValueError(f"Unlearning Check: this MODEL already carries Apply Unlearning's edit on {len(already)} of "
                         f"the {len(layers)} chosen layers ({already[0]!r}...), so every strength would be measured on "
                         "top of it. Connect the model from before Apply Unlearning: the check applies the edit "
                         f"itself, strength by strength.{combine}")
    options = sweep_options(model, basis, layers, sweep)
    adapter = adapter_for(model)
    diffusion = model.model.diffusion_model
    latent = comfy.sample.fix_empty_latent_channels(model, empty_latent(model, width, height, length))
    sigmas = sigmas_for(model, parse_timesteps(timesteps))
    collapse = PaddedTextCollapse(diffusion, model.model_options.get("transformer_options", {}),
                                  enabled=collapse_padded_text)
    image = "clip_vision_output" in validation.unsafe[0][0][1]  # Pair Encoder gives it to every row or to none
    forward = comfy_forward(model, latent, sigmas, seed, adapter.text_token_layers(layers, image=image), collapse)
    pairs = [(u, s) for u, s in zip(validation.unsafe, validation.safe)]
    rows = 2 * len(pairs) + len(benign) + len(extra)
    chunks = -(-rows // MAX_BATCH)
    nonzero = sum(1 for s in grid if s > 0)
    progress = comfy.utils.ProgressBar(chunks * (1 + nonzero * (1 + len(options))))

    def step():
        progress.update(1)
        comfy.model_management.throw_exception_if_processing_interrupted()

    # Replayed across strengths: the text path and the unedited output of edited layers that read only the text
    # (their input is the same at every strength); both exact, see ReplayCache.
    replay = [name for name in REPLAY_MODULES.get(adapter.family, ()) if has_module(diffusion, name)]
    with ReplayCache(diffusion, replay + adapter.timestep_independent_layers(layers)), collapse:
        baseline = measure_baseline(diffusion, forward, pairs, benign, layers, negative=extra[0] if extra else None,
                                    batch_size=MAX_BATCH, on_forward=step, batch_dim=adapter.batch_dim)
        weights = LayerWeights(model, layers)
        # the rows are conditionings: each pair's script is read from its text
        scripts = [pair_script(pair.unsafe, pair.safe) for pair in validation.pairs]
        common = dict(weights=weights, target=target, rows=(pairs, benign, *extra), batch_size=MAX_BATCH,
                      guidance=cfg if extra else None, on_forward=step, scripts=scripts,
                      pair_names=[pair.unsafe for pair in validation.pairs])
        main = check_strengths(diffusion, forward, basis, baseline, grid, layers=layers,
                               label=f"{basis.concept or 'concept'}: {len(layers)} layers ({group})", **common)
        # every group reads the negative as the whole edit did: one chart, one unit of collateral
        swept = [check_strengths(diffusion, forward, basis, baseline, grid, layers=subset, label=name,
                                 negative_as=main, **common)
                 for name, subset in options]
    if notes is not None:
        notes["padded_text_collapsed"] = collapse.reason is None and collapse.collapsed > 0 and not (
            collapse.passed or collapse.expanded)
        notes["padded_text"] = collapse.describe()
        notes["guidance_embedded"] = embeds_guidance(model)
        notes["rounding"] = rounding_note(baseline, compute_dtype(model))
        notes["image"] = image_note(adapter, diffusion, image)
        notes["token_counts"] = token_count_note(adapter, validation)
        notes["sweep"] = sweep_skipped(model, layers, sweep)
    return main, swept


def image_note(adapter, diffusion, image: bool) -> str | None:
    """The table's line for a model with image keys (``Adapter.image_keys``: an image-to-video Wan's k_img/v_img)
    measured without a CLIP-vision output: sampling with one runs the image path, which these figures did not see."""
    if image or not any(has_module(diffusion, f"{adapter.block_key(0)}.{key}") for key in adapter.image_keys):
        return None
    return ("measured without a CLIP-vision output: if you sample with one (WanImageToVideo, WanAnimateToVideo, "
            "WanCameraImageToVideo), connect that image's to both sides of the validation Pair Encoder to measure "
            "the path it takes")


def token_count(conditioning) -> int:
    """How many tokens one prompt's CONDITIONING holds (``conditioning.prompt_token_mask``): the rows its
    ``attention_mask`` marks where the encoder gave one (T5's padding rows are not the prompt's), else its nonzero
    context rows (every row where the text has no padding)."""
    context, extras = conditioning[0][0], conditioning[0][1]
    return int(prompt_token_mask(context, extras.get("attention_mask"))[0].sum())


def token_count_note(adapter, validation: EncodedPairs) -> str | None:
    """The table's line for a model that reads the text's attention mask (``Adapter.reads_text_mask``: LTX-Video,
    Mochi) checked on pairs whose sides differ in token count: such a pair also differs in how many text rows the video
    attends to, which no edit changes, so the removed share never reaches 100 % (docs/benchmarks.md "Where the proxy
    misleads"). Without it the shortfall read as the edit's."""
    if not adapter.reads_text_mask:
        return None
    unequal = sum(1 for unsafe, safe in zip(validation.unsafe, validation.safe)
                  if token_count(unsafe) != token_count(safe))
    if not unequal:
        return None
    return (f"token counts: {unequal} of {len(validation.unsafe)} validation pairs have sides of different token "
            f"counts; this {adapter.family} model reads the prompt's attention mask, which no edit changes, so "
            "removal stops short of 100 % at every strength (on the tiny models the mask was 35-79 % of the pairs' "
            "difference): for a removed share that can reach 100 %, write validation pairs whose sides have the same "
            "token count (e.g. 'a gold Rolex on a wrist | a gold Casio on a wrist')")


#: The node's UI output carries, next to the chart image, the recommendation and the table under this key (the web
#: extension shows them as text on the node; /history keeps them).
UI_KEY = "video_unlearning_check"


def check_ui(main: CheckResult, swept: list[CheckResult], table: str, notes: dict | None = None) -> dict:
    """JSON-ready summary for the editor: the recommended strength, its row, the reason, the table, the sweep,
    the removed share per validation pair and per script of the pairs (when they span 2 or more), whether the padded
    text was collapsed and the token-count note (``notes`` of :func:`run_unlearning_check`)."""
    index = main.strengths.index(main.recommended)
    summary = {"strength": float(main.recommended), "removed": float(main.efficacy[index]),
               "collateral": float(main.collateral[index]), "guidance": main.guidance, "reason": main.reason,
               "toward_concept": float(main.toward_concept[index]) if main.toward_concept else None,
               "warning": main.toward_concept_warning() or None, "label": main.label, "table": table,
               # the negative prompt carries the concept: collateral is the conditional one (core.check)
               "collateral_read": main.collateral_read, "negative_concept_share": main.negative_concept_share,
               "negative_warning": main.negative_warning() or None,
               "sweep": [{"label": r.label, "strength": float(r.recommended)} for r in swept],
               # validation pairs in 2 or more scripts: each script's removed share (core.scripts)
               "removed_by_script": [{"script": script, "pairs": pairs, "removed": float(removed)}
                                     for script, pairs, removed in main.removed_by_script_at(main.script_strength)],
               "removed_by_script_strength": float(main.script_strength) if main.removed_by_script else None,
               "script_warning": main.script_warning() or None,
               # each validation pair's removed share at the same strength (core.check CheckResult.pair_line)
               "removed_by_pair": [{"pair": index + 1, "removed": float(removed)} for index, removed
                                   in enumerate(main.removed_by_pair_at(main.script_strength))],
               "pair_warning": main.pair_warning() or None}
    if notes is not None and "padded_text_collapsed" in notes:
        summary["padded_text_collapsed"] = bool(notes["padded_text_collapsed"])
    if notes is not None and notes.get("sweep"):
        summary["sweep_skipped"] = notes["sweep"]
    if notes is not None and notes.get("token_counts"):
        summary["token_counts"] = notes["token_counts"]
    return summary


def table_text(main: CheckResult, swept: list[CheckResult], notes: dict | None = None, vector_id: str = "") -> str:
    # vector_id: RefusalBasis.content_sha256, which an exported LoRA records: ties the table to the file it checked
    lines = ([f"vector sha256 {vector_id[:12]}"] if vector_id else []) + [main.table()]
    if notes is not None and notes.get("sweep"):
        lines.append(notes["sweep"])
    if swept:
        lines.append(f"sweep (recommended strength: removed, {'guided ' if main.collateral_read == 'guided' else ''}"
                     "collateral):")
        for result in swept:
            index = result.strengths.index(result.recommended)
            lines.append(f"  {result.label}: {result.recommended:g}: {result.efficacy[index]:.1%}, "
                         f"{result.collateral[index]:.3f}")
    lines.append("removed = share of the validation pairs' difference gone from the prediction; collateral = benign "
                 "prompts' change / their natural variation: how far outputs move, not whether they got worse "
                 "(render to compare layer groups); safe->concept = how far the pairs' safe prompts move toward "
                 f"their unsafe ones (above {TOWARD_CONCEPT_LIMIT:.0%} per unit of strength the edit adds the "
                 "concept: never recommended)")
    embedded = notes is not None and notes.get("guidance_embedded", False)
    if main.guidance is not None and main.negative_carries_concept:
        lines.append(f"guided = collateral of uncond + cfg x (cond - uncond) at cfg {main.guidance:g}, shown only: the "
                     "negative prompt carries the concept, so guided collateral counts the edit removing it from the "
                     "negative on every benign prompt; the budget and the recommendation read the conditional "
                     "collateral (the guided move without the negative's own)")
    elif main.guidance is not None:
        lines.append(f"guided = collateral of uncond + cfg x (cond - uncond) at cfg {main.guidance:g}, as the sampler "
                     "combines them; the budget and the recommendation read it")
        if embedded:
            lines.append("this model embeds its guidance and is usually sampled at cfg 1 with no negative prompt: "
                         "leave the negative unconnected unless your sampler uses one")
    elif embedded:
        lines.append("collateral of the conditional prediction: this model embeds its guidance (sampled at cfg 1, no "
                     "negative prompt), so that is the prediction the sampler uses")
    else:
        lines.append("collateral of the conditional prediction alone: connect the sampler's negative prompt (and set "
                     "cfg) for the guided figure, which ranks what generating loses better")
    if notes is not None and "padded_text" in notes:
        lines.append(f"padded text collapsed: {notes['padded_text']}")
    if notes is not None and notes.get("rounding"):
        lines.append(notes["rounding"])
    if notes is not None and notes.get("image"):
        lines.append(notes["image"])
    if notes is not None and notes.get("token_counts"):
        lines.append(notes["token_counts"])
    return "\n".join(lines)


def compute_dtype(model) -> torch.dtype:
    """The dtype the model computes in (its manual cast dtype for fp8 or cast weights, else its weights')."""
    dtype = getattr(model.model, "manual_cast_dtype", None) or model.model.get_dtype()
    # a model not built by ComfyUI's loader may not know its dtype: its parameters do
    return dtype if dtype is not None else next(model.model.diffusion_model.parameters()).dtype


#: Below this many roundings of the compute dtype, the pairs' difference is not told apart from rounding.
ROUNDINGS = 4


def rounding_note(baseline, dtype: torch.dtype) -> str | None:
    """A warning when the validation pairs' difference in the unedited prediction is within ``ROUNDINGS`` roundings of
    the model's compute dtype: every removal figure is then a share of rounding noise (a tiny model computed in bf16
    read 98-100 % removed at every strength where float32 gave 14-58 %)."""
    if not dtype.is_floating_point:
        return None
    p, n = baseline.predictions, baseline.pairs
    share = float((p[:n] - p[n:2 * n]).norm() / p[:2 * n].norm().clamp_min(1e-300))
    eps = torch.finfo(dtype).eps
    if share >= ROUNDINGS * eps:
        return None
    return (f"warning: the validation pairs change the prediction by {share:.1e} of its size, within {ROUNDINGS} "
            f"roundings of the model's {str(dtype).replace('torch.', '')} compute ({eps:.1e}): the removal figures "
            "may be rounding noise; use pairs whose sides differ more, or run the model in float32")


class UnlearningCheck(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoUnlearnCheck", display_name="Unlearning Check", category="unlearning", **SHOWS_RESULTS,
            description="Measures, per strength, how much of the concept the edit removes on held-out pairs and how far it "
                        "moves benign prompts, and recommends a strength for Apply Unlearning.",
            inputs=[
                io.Model.Input("model", tooltip="The model the refusal vector was computed on (unpatched)."),
                io.Custom(REFUSAL_VECTOR_TYPE).Input("refusal_vector", tooltip="From Low-Rank Refusal Vector or Load Refusal Vector."),
                io.Custom(PAIRS_TYPE).Input(
                    "validation_pairs", optional=True,
                    tooltip="Required: a second Pair Encoder with held-out pairs (5 or more, other wording than the pairs the "
                            "vector was computed from; overlapping pairs are an error). Its neutral prompts are the benign "
                            "prompts whose change is the collateral: use other everyday prompts than the vector's."),
                io.Conditioning.Input(
                    "negative", optional=True,
                    tooltip="The negative prompt your sampler uses (its CLIP Text Encode). With it and cfg, "
                            "collateral is read on uncond + cfg x (cond - uncond), as sampling combines them, which "
                            "ranks what generating loses better; without it, on the conditional prediction alone."),
                io.String.Input("strengths", default=DEFAULT_GRID,
                                tooltip="Strengths to check, separated by commas or ';' (0 to 4, the most Apply "
                                        "Unlearning takes; 0 is always added as the reference)."),
                io.Combo.Input("layers", options=[ALL_IN_VECTOR, *GROUP_CHOICES], default=ALL_IN_VECTOR,
                               tooltip="Which of the vector's layers to edit, as in Apply Unlearning (use the same setting there)."),
                io.Int.Input("block_start", default=0, min=0, max=200, tooltip="First transformer block to edit, as in Apply Unlearning."),
                io.Int.Input("block_end", default=-1, min=-1, max=200, tooltip="Last transformer block to edit, inclusive; -1 = the last block."),
                io.Combo.Input("target", options=list(EDIT_TARGETS), default="safe_mean", tooltip="As in Apply Unlearning."),
                io.Combo.Input("sweep", options=list(SWEEPS), default="none",
                               tooltip="Also check each layer group of the selection, or its first and second half of blocks "
                                       "(one more forward per strength each); shown in the chart and the table. A "
                                       "selection of one group or one block has nothing to compare: the table says "
                                       "so."),
                io.Int.Input("width", default=64, min=16, max=4096, step=16, tooltip="Width of the small latent the check runs on (smaller is faster)."),
                io.Int.Input("height", default=64, min=16, max=4096, step=16, tooltip="Height of the small latent the check runs on."),
                io.Int.Input("length", default=1, min=1, max=1024, step=4, tooltip="Frames of the check's latent; 1 is enough for a proxy."),
                io.String.Input("timesteps", default="0.1",
                                tooltip="Where the prediction is compared: progress fractions separated by commas "
                                        "(0.0 = pure noise) or a whole count on the model's schedule."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the noise every prompt shares."),
                # Optional: API prompts saved before cfg existed (2026-12-01) lack it and were refused as missing
                # a required input. It stays the last widget: the editor lists optional widgets after required ones.
                io.Float.Input("cfg", default=6.0, min=0.01, max=100.0, step=0.1, round=0.01, optional=True,
                               tooltip="Your sampler's cfg, for the guided collateral (used only with a negative "
                                       "prompt connected)."),
            ],
            outputs=[
                io.Float.Output(display_name="strength", tooltip="The recommended strength: connect it to Apply Unlearning's strength."),
                io.Image.Output(display_name="chart",
                                tooltip="Removal against collateral per strength, the recommended one marked (also "
                                        "shown on the node)."),
                io.String.Output(display_name="table",
                                 tooltip="The figures per strength, what collateral was read on, and notes."),
            ],
        )

    @classmethod
    def validate_inputs(cls, strengths=None, timesteps=None):
        # Linked inputs reach validation as None and are checked when the node runs. No **kwargs: with it ComfyUI
        # would skip its own range and option checks of every other input.
        if strengths is not None:
            try:
                parse_grid(strengths)
            except ValueError as error:
                return f"Unlearning Check: strengths: {error}"
        if timesteps is not None:
            try:
                parse_timesteps(timesteps)
            except ValueError as error:
                return f"Unlearning Check: {error}"
        return True

    @classmethod
    def execute(cls, model, refusal_vector: RefusalBasis, strengths, layers, block_start, block_end, target, sweep,
                width, height, length, timesteps, seed, validation_pairs=None, negative=None, cfg=6.0):
        try:
            parse_grid(strengths)
        except ValueError as error:
            raise ValueError(f"Unlearning Check: strengths: {error}") from None
        if not cfg > 0:  # the widget's minimum does not hold for a linked value
            raise ValueError(f"Unlearning Check: cfg must be your sampler's cfg, above 0 (got {cfg}); 1 reads the "
                             "conditional prediction")
        notes = {}
        main, swept = run_unlearning_check(model, refusal_vector, validation_pairs, strengths, group=layers,
                                           block_start=block_start, block_end=block_end, target=target, width=width,
                                           height=height, length=length, timesteps=timesteps, seed=seed, sweep=sweep,
                                           negative=negative, cfg=cfg, notes=notes)
        chart = check_chart(main, swept, concept=refusal_vector.concept)
        table = table_text(main, swept, notes, vector_id=refusal_vector.content_sha256())
        shown = {**ui.PreviewImage(chart, cls=cls).as_dict(), UI_KEY: [check_ui(main, swept, table, notes)]}
        return io.NodeOutput(float(main.recommended), chart, table, ui=shown)


NODES = [UnlearningCheck]
