"""What travels on the pack's custom sockets between nodes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.pairs import PromptPair
from ..core.refusal import RefusalFitter

PAIRS_TYPE = "UNLEARN_PAIRS"
ACTIVATIONS_TYPE = "UNLEARN_ACTIVATIONS"
REFUSAL_VECTOR_TYPE = "REFUSAL_VECTOR"


@dataclass(frozen=True)
class EncodedPairs:
    """Output of Pair Encoder: ComfyUI conditionings for each side of each pair and for the neutral prompts.

    ``unsafe[i]`` and ``safe[i]`` are CONDITIONING lists (``[[tensor [1, tokens, c], extras]]``). ``text_encoder``
    identifies the CLIP that encoded them (``nodes.definitions.text_encoder_identity``), for the vector's provenance.
    """

    pairs: tuple[PromptPair, ...]
    concept: str
    unsafe: tuple
    safe: tuple
    neutral_prompts: tuple[str, ...]
    neutral: tuple
    text_encoder: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CollectedActivations:
    """Output of Collect Activations: the filled fitter and where the rows came from.

    ``layers`` are names relative to the diffusion model (``blocks.3.cross_attn.k``), every layer the vector will
    edit; layers that read one shared input were recorded once (``fitter.shared_inputs()``: input name -> layers).
    The fitter is not updated after this object is made. ``measurement``: how the rows were measured (neutral
    prompts, seed, timesteps, latent size, layer group and block range, text encoder), the vector's provenance
    (``RefusalBasis.measurement``).
    """

    fitter: RefusalFitter
    layers: tuple[str, ...]
    family: str
    fingerprint: str
    concept: str
    pairs: tuple[PromptPair, ...]
    sigmas: tuple[float, ...]
    measurement: dict = field(default_factory=dict)
