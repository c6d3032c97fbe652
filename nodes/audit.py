"""Unlearning Audit: an edited MODEL against the MODEL it was made from (``core.audit``), on ComfyUI's sampling stack.

Unlearning Check needs the refusal vector and the unedited model, and applies the edit itself. The audit needs
neither the vector nor the pack's edit: it reads whatever differs between two MODELs of one architecture (the pack's
exported LoRA through a LoRA loader, a checkpoint saved with the edit, a merge, another unlearning method's weights),
with the check's latent, noise, timesteps and figures. Both run on the same rows; nothing is patched or hooked.
"""

from __future__ import annotations

import contextlib

import comfy.model_management
import comfy.sample
import comfy.utils
from comfy_api.latest import io

from ..core.audit import AuditResult, run_audit
from ..core.scripts import pair_script
from .check import MAX_BATCH, comfy_forward, negative_row, require_readable_rows
from .check_fastpath import PaddedTextCollapse
from .collect import empty_latent, measuring_model, parse_timesteps, sigmas_for
from .payloads import PAIRS_TYPE, EncodedPairs

NODE = "Unlearning Audit"
UI_KEY = "video_unlearning_audit"


def require_same_architecture(original, edited) -> None:
    """Raise unless both MODELs are one architecture: the same model class and every diffusion-model parameter of
    the same name and shape (an edit changes values, not shapes)."""
    classes = type(original.model).__name__, type(edited.model).__name__
    if classes[0] != classes[1]:
        raise ValueError(f"{NODE}: original_model is a {classes[0]} and edited_model a {classes[1]}: the audit "
                         "compares an edited model with the model it was made from, of the same architecture")
    shapes = [{name: tuple(p.shape) for name, p in m.model.diffusion_model.named_parameters()}
              for m in (original, edited)]
    differing = sorted(name for name in shapes[0].keys() | shapes[1].keys()
                       if shapes[0].get(name) != shapes[1].get(name))
    if differing:
        name = differing[0]
        raise ValueError(f"{NODE}: the two MODELs differ in {len(differing)} parameters' shapes (first: {name!r}, "
                         f"{shapes[0].get(name)} against {shapes[1].get(name)}): they are not one model in two "
                         "versions. Connect the checkpoint the edited model was made from as original_model")


def same_weights(original, edited) -> bool:
    """Whether the two MODELs hold the same weights: one model object with the same patches and weight wrappers."""
    wrappers = [{key: len(v) for key, v in getattr(m, "weight_wrapper_patches", {}).items()}
                for m in (original, edited)]
    return original.clone_has_same_weights(edited) and wrappers[0] == wrappers[1]


def run_unlearning_audit(original, edited, validation: EncodedPairs | None, *, width: int, height: int, length: int,
                         timesteps: str, seed: int, negative=None, cfg: float | None = None,
                         collapse_padded_text: bool = True, notes: dict | None = None) -> AuditResult:
    """Both MODELs on the validation pairs and their neutral prompts (the benign prompts), one latent, noise and
    set of sigmas (the original model's schedule) for both; with ``negative`` and ``cfg``, guided collateral.

    ``collapse_padded_text``: on a known Wan, cut the zero text padding as Unlearning Check does
    (``nodes.check_fastpath``; exact in maths); False runs every padding row, as ComfyUI does. ``notes``, when given,
    receives ``padded_text``: whether the padding was cut, per model, or why not (the table's line)."""
    if validation is None or not validation.pairs:
        raise ValueError(f"{NODE}: no validation pairs. Connect a Pair Encoder with 5 or more pairs of the concept "
                         "(none of the pairs the edit was made from)")
    benign = list(validation.neutral)
    if len(benign) < 2:
        raise ValueError(f"{NODE}: the Pair Encoder has {len(benign)} neutral prompts; they are the audit's benign "
                         "prompts and at least 2 are needed (12 recommended)")
    if negative is not None and not (cfg is not None and cfg > 0):
        raise ValueError(f"{NODE}: cfg must be your sampler's cfg (> 0), got {cfg!r}")
    require_same_architecture(original, edited)
    original, edited = measuring_model(original), measuring_model(edited)
    extra = [] if negative is None else [negative_row(negative, benign, NODE)]
    for model in (original, edited):
        require_readable_rows(model, validation, benign, extra, NODE)
    latent = comfy.sample.fix_empty_latent_channels(original, empty_latent(original, width, height, length))
    sigmas = sigmas_for(original, parse_timesteps(timesteps))
    rows = 2 * len(validation.pairs) + len(benign) + len(extra)
    progress = comfy.utils.ProgressBar(2 * -(-rows // MAX_BATCH))

    def step():
        progress.update(1)
        comfy.model_management.throw_exception_if_processing_interrupted()

    # one collapse per diffusion module: a clone (Apply Unlearning, a LoRA loader) shares its original's
    collapses = {}
    for model in (original, edited):
        diffusion = model.model.diffusion_model
        if id(diffusion) not in collapses:
            collapses[id(diffusion)] = PaddedTextCollapse(
                diffusion, model.model_options.get("transformer_options", {}), enabled=collapse_padded_text)
    forwards = [comfy_forward(model, latent, sigmas, seed, [], collapses[id(model.model.diffusion_model)])
                for model in (original, edited)]
    pairs = list(zip(validation.unsafe, validation.safe))
    with contextlib.ExitStack() as stack:
        for collapse in collapses.values():
            stack.enter_context(collapse)
        result = run_audit(original.model.diffusion_model, *forwards, pairs, benign,
                           negative=extra[0] if extra else None, guidance=cfg if extra else None,
                           scripts=[pair_script(pair.unsafe, pair.safe) for pair in validation.pairs],
                           batch_size=MAX_BATCH, on_forward=step)
    if notes is not None:
        notes["padded_text"] = "; ".join(dict.fromkeys(collapse.describe() for collapse in collapses.values()))
    return result


def audit_table(result: AuditResult, original, edited, notes: dict | None = None) -> str:
    lines = [result.table()]
    if notes is not None and "padded_text" in notes:
        lines.append(f"padded text collapsed: {notes['padded_text']}")
    if same_weights(original, edited):
        lines.append("NOTE: the two MODELs hold the same weights (one model, the same patches): nothing was edited")
    return "\n".join(lines)


class UnlearningAudit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            # an output node: its figures are the result, so it runs with nothing connected to its outputs
            node_id="VideoUnlearnAudit", display_name="Unlearning Audit", category="unlearning", is_output_node=True,
            description="Measures how much of a concept an already edited model has lost against the model it was "
                        "made from (a loaded unlearning LoRA, a checkpoint saved with the edit, a merge, another "
                        "method's edit of the same model), and how far it moves benign prompts. No vector needed.",
            inputs=[
                io.Model.Input("original_model", tooltip="The model before the edit: the checkpoint the edited model "
                                                         "was made from."),
                io.Model.Input("edited_model", tooltip="The edited model: the original with an unlearning LoRA loaded, "
                                                       "a checkpoint saved with the edit, Apply Unlearning's output, "
                                                       "or another method's edit of the same model."),
                io.Custom(PAIRS_TYPE).Input(
                    "validation_pairs",
                    tooltip="A Pair Encoder with 5 or more pairs of the concept, none of those the edit was made from. "
                            "Its neutral prompts are the benign prompts whose change is the collateral (2 or more, "
                            "12 recommended)."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="The negative prompt your sampler uses; with it and cfg, collateral is "
                                              "also read on what sampling combines (guided)."),
                io.Int.Input("width", default=64, min=16, max=4096, step=16, tooltip="Width of the small latent both models run on."),
                io.Int.Input("height", default=64, min=16, max=4096, step=16, tooltip="Height of the small latent both models run on."),
                io.Int.Input("length", default=1, min=1, max=1024, step=4, tooltip="Frames of the latent; 1 is enough for a proxy."),
                io.String.Input("timesteps", default="0.1",
                                tooltip="Where the predictions are compared: progress fractions separated by commas "
                                        "(0.0 = pure noise) or a whole count on the original model's schedule."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the noise every prompt and both models share."),
                io.Float.Input("cfg", default=6.0, min=0.01, max=100.0, step=0.1, round=0.01, optional=True,
                               tooltip="Your sampler's cfg, for the guided collateral (used only with a negative "
                                       "prompt connected)."),
            ],
            outputs=[
                io.Float.Output(display_name="removed",
                                tooltip="Share of the validation pairs' difference the edited model no longer makes "
                                        "(1 = all of it, 0 = none)."),
                io.Float.Output(display_name="collateral",
                                tooltip="How far benign prompts move, in units of their natural variation (guided "
                                        "when a negative prompt is connected and does not name the concept)."),
                io.String.Output(display_name="table", tooltip="Every figure of the audit, and warnings."),
            ],
        )

    @classmethod
    def validate_inputs(cls, timesteps=None):
        if timesteps is not None:  # a linked value arrives as None and is checked when the node runs
            try:
                parse_timesteps(timesteps)
            except ValueError as error:
                return f"{NODE}: {error}"
        return True

    @classmethod
    def execute(cls, original_model, edited_model, validation_pairs, width, height, length, timesteps, seed,
                negative=None, cfg=6.0):
        notes = {}
        result = run_unlearning_audit(original_model, edited_model, validation_pairs, width=width, height=height,
                                      length=length, timesteps=timesteps, seed=seed, negative=negative, cfg=cfg,
                                      notes=notes)
        table = audit_table(result, original_model, edited_model, notes)
        shown = {UI_KEY: [{**result.as_dict(), "table": table}]}
        return io.NodeOutput(result.removed, result.headline_collateral, table, ui=shown)


NODES = [UnlearningAudit]
