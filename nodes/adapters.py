"""Per-architecture tables: which linear layers of a video DiT the edit may target.

The method edits linear layers whose *input* carries the concept. In a cross-attention DiT (Wan,
LTX-Video, Cosmos) the text reaches the video tokens only through the key/value projections of
cross-attention, whose input is the (projected) text context; in an MMDiT (HunyuanVideo, Mochi)
the text stream has its own attention and FFN, as in Open-Sora 2.0 where the paper edits the text
FFN. Each adapter lists those layers as groups a person picks in the nodes. Adding a family is one
entry in ``ADAPTERS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Prefix of the diffusion model inside a ComfyUI ``BaseModel`` state dict.
DIFFUSION_PREFIX = "diffusion_model."


@dataclass(frozen=True)
class LayerGroup:
    """Linear layers (suffixes inside one block) edited together.

    ``timestep_independent`` is True when the layers' input depends only on the text (the
    projected context), so one forward per prompt measures it exactly.
    """

    suffixes: tuple[str, ...]
    timestep_independent: bool
    description: str


@dataclass(frozen=True)
class Adapter:
    family: str
    model_classes: tuple[str, ...]  # class names in comfy.model_base, most specific first
    blocks: str  # attribute path of the block list inside the diffusion model
    groups: dict[str, LayerGroup]
    default_group: str

    def block_count(self, diffusion_model) -> int:
        return len(diffusion_model.get_submodule(self.blocks))

    def layer_names(self, diffusion_model, group: str, block_start: int = 0, block_end: int = -1) -> list[str]:
        """Dotted names (relative to the diffusion model) of the group's layers in the block range."""
        if group == "all":
            suffixes = tuple(dict.fromkeys(s for g in self.groups.values() for s in g.suffixes))
        elif group in self.groups:
            suffixes = self.groups[group].suffixes
        else:
            raise ValueError(f"layer group {group!r} does not exist for {self.family}; choose one of "
                             f"{list(self.groups) + ['all']}")
        first, last = block_range(self.block_count(diffusion_model), block_start, block_end)
        names = [f"{self.blocks}.{i}.{suffix}" for i in range(first, last + 1) for suffix in suffixes]
        # Some blocks lack a layer (Mochi's last block has no text-stream FFN): keep those that exist.
        present = [name for name in names if _has_linear(diffusion_model, name)]
        if not present:
            raise ValueError(f"the {self.family} model has no {group!r} layers in blocks {first}..{last}")
        return present

    def is_timestep_independent(self, names) -> bool:
        names = list(names)
        return len(self.text_token_layers(names)) == len(names)

    def text_token_layers(self, names) -> list[str]:
        """The layers among ``names`` whose input is the projected text context, one row per prompt token."""
        independent = {s for g in self.groups.values() if g.timestep_independent for s in g.suffixes}
        return [name for name in names if name.split(".", 2)[-1] in independent]


def _has_linear(module, name: str) -> bool:
    try:
        return getattr(module.get_submodule(name), "weight", None) is not None
    except AttributeError:
        return False


def block_range(count: int, block_start: int, block_end: int) -> tuple[int, int]:
    """Inclusive block indices; ``block_end = -1`` means the last block."""
    last = count - 1 if block_end < 0 else block_end
    if not 0 <= block_start <= last < count:
        raise ValueError(f"block range {block_start}..{block_end} is outside this model's blocks 0..{count - 1}; "
                         "use block_end = -1 for the last block")
    return block_start, last


_CROSS_KV = "text-side cross-attention key/value projections: their input is the projected text"

ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        family="wan",
        model_classes=("WAN22", "WAN21", "WAN22_S2V", "WAN22_Animate", "WAN21_Vace", "WAN21_Camera", "WAN21_HuMo"),
        blocks="blocks",
        groups={
            "cross_attn.k+v": LayerGroup(("cross_attn.k", "cross_attn.v"), True, _CROSS_KV),
            "cross_attn.o": LayerGroup(("cross_attn.o",), False, "cross-attention output projection"),
            "ffn.0": LayerGroup(("ffn.0",), False, "first FFN linear of each block (video tokens)"),
        },
        default_group="cross_attn.k+v",
    ),
    Adapter(
        family="hunyuan_video",
        model_classes=("HunyuanVideoI2V", "HunyuanVideoSkyreelsI2V", "HunyuanVideo"),
        blocks="double_blocks",
        groups={
            "txt_mlp.0": LayerGroup(("txt_mlp.0",), False, "text-stream FFN first linear (the paper's choice for MMDiT)"),
            "txt_attn.qkv": LayerGroup(("txt_attn.qkv",), False, "text-stream attention projections"),
        },
        default_group="txt_mlp.0",
    ),
    Adapter(
        family="ltxv",
        model_classes=("LTXV",),
        blocks="transformer_blocks",
        groups={
            "attn2.to_k+to_v": LayerGroup(("attn2.to_k", "attn2.to_v"), True, _CROSS_KV),
            "attn2.to_out": LayerGroup(("attn2.to_out.0",), False, "cross-attention output projection"),
        },
        default_group="attn2.to_k+to_v",
    ),
    Adapter(
        family="mochi",
        model_classes=("GenmoMochi",),
        blocks="blocks",
        groups={
            "mlp_y.w1": LayerGroup(("mlp_y.w1",), False, "text-stream FFN first linear"),
            "attn.qkv_y": LayerGroup(("attn.qkv_y",), False, "text-stream attention projections"),
        },
        default_group="attn.qkv_y",
    ),
    Adapter(
        family="cosmos_predict2",
        model_classes=("CosmosPredict2",),
        blocks="blocks",
        groups={
            "cross_attn.k_proj+v_proj": LayerGroup(("cross_attn.k_proj", "cross_attn.v_proj"), True, _CROSS_KV),
            "cross_attn.output_proj": LayerGroup(("cross_attn.output_proj",), False, "cross-attention output projection"),
        },
        default_group="cross_attn.k_proj+v_proj",
    ),
)

#: Every group name offered in the nodes' combo (a family that lacks one says so when run).
GROUP_CHOICES: tuple[str, ...] = ("default",) + tuple(dict.fromkeys(g for a in ADAPTERS for g in a.groups)) + ("all",)


def supported_families() -> list[str]:
    return [adapter.family for adapter in ADAPTERS]


def adapter_for(model_patcher) -> Adapter:
    """The adapter of a ComfyUI MODEL (a ModelPatcher), by the class of its ``BaseModel``."""
    base = getattr(model_patcher, "model", None)
    names = [cls.__name__ for cls in type(base).__mro__]
    for name in names:  # most specific class first, so WAN22 wins over its parent WAN21
        for adapter in ADAPTERS:
            if name in adapter.model_classes:
                return adapter
    raise ValueError(f"unsupported model {type(base).__name__}: this pack supports the families "
                     f"{supported_families()} (Wan 2.1/2.2, HunyuanVideo, LTX-Video, Mochi, Cosmos Predict2)")


def resolve_group(adapter: Adapter, group: str) -> str:
    return adapter.default_group if group == "default" else group


_BLOCK = re.compile(r"\.(\d+)\.")


def block_index(layer: str) -> int:
    """Block number in a layer name such as ``blocks.12.cross_attn.k``."""
    match = _BLOCK.search(f".{layer}")
    if match is None:
        raise ValueError(f"layer {layer!r} has no block index")
    return int(match.group(1))
