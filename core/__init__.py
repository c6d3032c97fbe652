"""Framework-agnostic core of the video-unlearning pack (torch, numpy, safetensors; never comfy).

Modules, one concept each: ``pairs`` (prompt-pair text format), ``activations`` (hooks that
record what layers read), ``collection`` (the collection loop the nodes and the organism share; the
host supplies the model's forward), ``refusal`` (fitter -> frozen refusal basis), ``basis`` (the frozen
refusal basis: layer -> one ``LayerRefusal`` record, shared by layers that read one input), ``serialization`` (the
refusal-vector file layout; imports nothing from ``core``), ``edit`` (closed-form weight edits), ``fingerprint``
(which weights a vector belongs to), ``devices`` (float64 numbers to and from devices without float64).
"""

from .activations import ActivationRecorder
from .basis import LayerRefusal, LayerScore, RefusalBasis
from .edit import EDIT_TARGETS, LowRankEdit, project_edit
from .fingerprint import fingerprint_weights
from .pairs import (DEFAULT_NEUTRAL_PROMPTS, FewPairsWarning, InlineHashWarning, PairsError, PromptPair, check_pairs,
                    parse_pairs, parse_prompts)
from .refusal import RefusalFitter
from .serialization import RefusalFileError

__all__ = [
    "ActivationRecorder", "DEFAULT_NEUTRAL_PROMPTS", "EDIT_TARGETS", "FewPairsWarning", "InlineHashWarning",
    "LayerRefusal", "LayerScore", "LowRankEdit",
    "PairsError", "PromptPair", "RefusalBasis", "RefusalFileError", "RefusalFitter", "check_pairs",
    "fingerprint_weights", "parse_pairs", "parse_prompts", "project_edit",
]
