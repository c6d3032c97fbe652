"""Per-architecture tables: everything the pack knows about a model family, in one place.

The method edits linear layers whose *input* carries the concept. In a cross-attention DiT (Wan,
LTX-Video, Cosmos) the text reaches the video tokens only through the key/value projections of
cross-attention, whose input is the (projected) text context (an image-to-video Wan's image k/v included: they read
the text when no CLIP-vision output is given); in an MMDiT (HunyuanVideo, Mochi)
the text stream has its own attention and FFN, as in Open-Sora 2.0 where the paper edits the text
FFN. Each adapter lists those layers as groups a person picks in the nodes, says which of them read
only the text, and how the family's VAE compresses a video (for the measuring latent). Adding a
family is one entry in ``ADAPTERS``; the nodes resolve layers through :func:`layers_for` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# one rule for block keys, here and in core's vectors (Cosmos 1.0's blocks.block3 as well as blocks.3)
from ..core.basis import block_index

#: Prefix of the diffusion model inside a ComfyUI ``BaseModel`` state dict.
DIFFUSION_PREFIX = "diffusion_model."


@dataclass(frozen=True)
class LayerGroup:
    """Linear layers (suffixes inside one block) edited together.

    ``timestep_independent`` is True when the layers' input depends only on the text (the
    projected context), so one forward per prompt measures it exactly. ``shared_input`` names the
    one tensor every layer of the group reads in every block (Wan's ``cross_attn.k`` / ``.v`` all read
    the output of ``text_embedding``), so it is measured and fitted once; "" = each layer reads its own.
    ``text_tokens`` is True when the layers' input has one row per text token, also where it depends on the
    timestep (an MMDiT's text stream): they are pooled over the prompt's own tokens, not over padding the model
    never attends to. Timestep-independent layers read the text context, so they always do, unless ``pooled_text``.
    ``pooled_suffixes`` names those of the suffixes whose input is one row per prompt that the model makes itself from
    the rows the group's other layers read (HunyuanVideo's ``txt_in.c_embedder.in_layer`` reads the mean of the rows
    ``txt_in.input_embedder`` reads): one record with them through ``shared_input``, but never token-masked.
    ``pooled_text`` is True when the layers' input is one row per prompt that summarises the text, no tokens
    (HunyuanVideo's CLIP-L vector into ``vector_in``; Mochi's T5 attention pool before ``t5_y_embedder.to_out``): never
    token-masked, judged pair by pair as a text-side input.
    ``conditioning_input`` names the entry of the conditioning the layers read, which every prompt must then carry
    (``"pooled_output"``: HunyuanVideo's ``vector_in``, :func:`require_pooled_text`); "" where the model makes the
    input from the context itself (Mochi pools its own T5 tokens).
    ``top_level`` is True when the suffixes are whole names inside the diffusion model, outside the block list
    (``vector_in.in_layer``): the group's layers are then the same whatever the block range.
    ``path`` says, for a top-level group, which path of the text it edits, as messages name it (an old vector of
    layers = all that lacks it leaves that path unedited); ``since`` is the day the group joined layers = all. A family
    lists its top-level groups in that order: Apply's refusal of an old vector names the first one it lacks.
    ``padding_pooled_until`` is the day until which the layers' rows were pooled over the whole padded text context
    (Mochi's 256 T5 rows) instead of the prompt's own tokens; vectors record their ``measurement`` since that day, so
    one that covers such a layer and records none was pooled the old way, and Apply, Check and Export refuse it.
    """

    suffixes: tuple[str, ...]
    timestep_independent: bool
    description: str
    shared_input: str = ""
    text_tokens: bool = False
    #: The input is the text's own rows (an MMDiT's text stream), whatever the pooling: Low-Rank Refusal Vector judges
    #: each pair there (``Adapter.text_side_layers``).
    text_stream: bool = False
    pooled_suffixes: tuple[str, ...] = ()
    pooled_text: bool = False
    conditioning_input: str = ""
    top_level: bool = False
    path: str = ""
    since: str = ""
    padding_pooled_until: str = ""

    @property
    def reads_text_tokens(self) -> bool:
        # a pooled input has one row per prompt: a token mask of the prompt's tokens does not fit it
        return (self.text_tokens or self.timestep_independent) and not self.pooled_text


@dataclass(frozen=True)
class LatentGeometry:
    """How a family's VAE compresses a video: ``spatial`` pixels per latent pixel on each side, ``temporal``
    frames per latent frame after the first (ComfyUI's Empty*LatentVideo nodes use the same factors)."""

    spatial: int
    temporal: int

    def shape(self, channels: int, width: int, height: int, length: int) -> list[int]:
        """``[1, channels, latent frames, latent height, latent width]`` of a ``width x height x length`` video."""
        return [1, channels, (length - 1) // self.temporal + 1, height // self.spatial, width // self.spatial]


@dataclass(frozen=True)
class Adapter:
    """One model family.

    Attributes:
        family: the name stored with a refusal vector; vectors apply only to models of the same family.
        model_classes: class names in ``comfy.model_base``; a model matches through its class or a parent.
        blocks: attribute path of the block list inside the diffusion model.
        block_prefix: what precedes a block's index in its key (``"block"``: Cosmos 1.0's blocks are a ModuleDict
            keyed ``block0``, ``block1`` ...); "" for a list (``blocks.3``).
        groups: the editable layer groups, by the name offered in the nodes.
        default_group: the group "default" means.
        latent: the VAE's compression; ``latent_by_class`` overrides it for a model class
            (Wan 2.2 TI2V 5B, class ``WAN22``, has a 16x VAE where Wan 2.1 and the 2.2 A14B experts have 8x).
        batches_text_masks: the model reads a batch of text ``attention_mask`` rows as one call per prompt would
            (False: prompts whose conditioning carries a mask run one model call each; see
            ``conditioning.can_share_a_call``).
        side_blocks: ``(blocks, mapping)`` attribute names of a second block list whose outputs are added into the
            main blocks (Wan VACE's ``vace_blocks``, mapped by ``vace_layers_mapping``: main block -> side block);
            where a model has them, a group's layers include the side blocks injected into the chosen main blocks.
        image_keys: suffixes of layers that read the image's CLIP-vision tokens when the conditioning carries a
            ``clip_vision_output``, and the text context when it does not (Wan's ``k_img`` / ``v_img``).
        text_input: the first linear layer (inside the diffusion model) that reads the text context; its input width
            is the context width the family's own text encoder gives (:func:`require_text_width`).
        text_encoder: the family's own text encoder, as its messages name it.
        pooled_text_encoder: how to load the text encoder that gives the pooled output the model reads
            (:func:`require_pooled_text`), where it differs from ``text_encoder``.
        batch_dim: the batch's axis in the inputs of the layers the pack records (``ActivationRecorder``): 0 for
            ``[batch, tokens..., features]``; -2 where the blocks run token-major (Cosmos 1.0: ``(T H W B D)``), so
            that rows are pooled per prompt over its own tokens, not over the batch.
        reads_text_mask: the video attends to the text rows the encoder's ``attention_mask`` marks (LTX-Video, Mochi),
            so a pair whose sides differ in token count also differs in how many rows it attends to, which no weight
            edit changes (the tiny models: 35 % and 79 % of such pairs' prediction difference, ``bench/text_paths.py``):
            Unlearning Check says so. False for Wan and Cosmos Predict2 (no mask read) and for HunyuanVideo: its text
            is each prompt's own rows with no mask, and sides of equal token count did not bring its removal toward
            100 % (``bench/hunyuan_text_paths.py``: ``all`` left 74 % and 97 % of them, 51 % and 104 % of the others).
    """

    family: str
    model_classes: tuple[str, ...]
    blocks: str
    groups: dict[str, LayerGroup]
    default_group: str
    latent: LatentGeometry
    latent_by_class: dict[str, LatentGeometry] = field(default_factory=dict)
    batches_text_masks: bool = True
    side_blocks: tuple[str, str] | None = None
    image_keys: tuple[str, ...] = ()
    text_input: str = ""
    text_encoder: str = ""
    pooled_text_encoder: str = ""
    reads_text_mask: bool = False
    block_prefix: str = ""
    batch_dim: int = 0

    def block_key(self, index: int) -> str:
        """The name of main block ``index`` inside the diffusion model: ``blocks.3``, Cosmos 1.0's ``blocks.block3``."""
        return f"{self.blocks}.{self.block_prefix}{index}"

    def block_count(self, diffusion_model) -> int:
        return len(diffusion_model.get_submodule(self.blocks))

    def suffixes(self, group: str) -> tuple[str, ...]:
        """Layer suffixes of ``group``: "default", one of :attr:`groups`, or "all" (every group)."""
        if group == "default":
            group = self.default_group
        if group == "all":
            return tuple(dict.fromkeys(s for g in self.groups.values() for s in g.suffixes))
        if group not in self.groups:
            raise ValueError(f"layer group {group!r} does not exist for {self.family}; choose one of "
                             f"{['default', *self.groups, 'all']}")
        return self.groups[group].suffixes

    def top_level_names(self) -> tuple[str, ...]:
        """Names of the layers outside the block list (groups with ``top_level``), e.g. ``vector_in.in_layer``."""
        return tuple(s for g in self.groups.values() if g.top_level for s in g.suffixes)

    def layer_names(self, diffusion_model, group: str, block_start: int = 0, block_end: int = -1) -> list[str]:
        """Dotted names (relative to the diffusion model) of the group's layers in the block range; a layer outside
        the block list (``top_level_names``, read before any block) first, whatever the range."""
        top = set(self.top_level_names())
        chosen = self.suffixes(group)
        suffixes = [s for s in chosen if s not in top]
        first, last = block_range(self.block_count(diffusion_model), block_start, block_end)
        names = [s for s in chosen if s in top]
        names += [f"{self.block_key(i)}.{suffix}" for i in range(first, last + 1) for suffix in suffixes]
        if self.side_blocks and hasattr(diffusion_model, self.side_blocks[0]):
            # Their cross-attention reads the same text (a VACE block's k/v the same text_embedding output), and
            # what they write reaches the video: an edit of the main blocks alone leaves the concept a way through.
            side, mapping = self.side_blocks
            injected = sorted(n for i, n in getattr(diffusion_model, mapping).items() if first <= i <= last)
            names += [f"{side}.{n}.{suffix}" for n in injected for suffix in suffixes]
        # Some blocks lack a layer (Mochi's last block has no text-stream FFN): keep those that exist.
        present = [name for name in names if _has_linear(diffusion_model, name)]
        if not present:
            if not suffixes:  # outside the blocks: the range is not what to change
                raise ValueError(f"the {self.family} model has no {group!r} layer ({', '.join(chosen)}): this "
                                 f"variant has no such input; choose another layer group, e.g. 'default'")
            raise ValueError(f"the {self.family} model has no {group!r} layers in blocks {first}..{last}")
        return present

    def main_block(self, diffusion_model, name: str) -> int | None:
        """The main block a layer belongs to: its own index, or for a side block's layer the main block it is
        injected into; None for a layer outside the blocks (``top_level_names``)."""
        index = block_index(name)
        if index is None:
            return None
        if self.side_blocks and name.split(".", 1)[0] == self.side_blocks[0]:
            return next(main for main, side in getattr(diffusion_model, self.side_blocks[1]).items()
                        if side == index)
        return index

    def is_timestep_independent(self, names) -> bool:
        names = list(names)
        return len(self.timestep_independent_layers(names)) == len(names)

    def timestep_independent_layers(self, names) -> list[str]:
        """The layers among ``names`` whose input is the projected text context: the same at every timestep and
        strength (measured at one timestep; the check replays their unedited output)."""
        independent = {s for g in self.groups.values() if g.timestep_independent for s in g.suffixes}
        return [name for name in names if layer_suffix(name) in independent]

    def text_token_layers(self, names, *, image: bool = False) -> list[str]:
        """The layers among ``names`` whose input has one row per prompt token (pooled over the prompt's own);
        ``image``: the conditioning carries a CLIP-vision output, so the :attr:`image_keys` read its tokens instead."""
        tokens = {s for g in self.groups.values() if g.reads_text_tokens
                  for s in g.suffixes if s not in g.pooled_suffixes}
        if image:
            tokens -= set(self.image_keys)
        return [name for name in names if layer_suffix(name) in tokens]

    def text_side_layers(self, names) -> list[str]:
        """The layers among ``names`` whose input is the text's (the projected context or a text stream): where a pair's
        difference is its words' alone, so Low-Rank Refusal Vector can judge each pair (video-side inputs mix in the
        noise and the timestep: a correct pair read -0.09 there on the organism)."""
        text = {s for g in self.groups.values() if g.reads_text_tokens or g.text_stream or g.pooled_text
                for s in g.suffixes}
        return [name for name in names if layer_suffix(name) in text]

    def group_of(self, name: str) -> LayerGroup | None:
        """The group whose layer ``name`` is (``blocks.3.attn.qkv_y`` -> Mochi's ``attn.qkv_y``), or None."""
        return next((g for g in self.groups.values() if layer_suffix(name) in g.suffixes), None)

    def top_level_group(self, name: str) -> LayerGroup | None:
        """The ``top_level`` group whose layer ``name`` is (``vector_in.in_layer``), or None."""
        return next((g for g in self.groups.values() if g.top_level and name in g.suffixes), None)

    def shared_inputs(self, names) -> dict[str, list[str]]:
        """Input name -> the layers among ``names`` that read it, for the groups with a ``shared_input``."""
        shared = {s: g.shared_input for g in self.groups.values() if g.shared_input for s in g.suffixes}
        out: dict[str, list[str]] = {}
        for name in names:
            source = shared.get(layer_suffix(name))
            if source:
                out.setdefault(source, []).append(name)
        return out

    def latent_geometry(self, model_patcher) -> LatentGeometry:
        """The VAE compression of this MODEL: the most specific override of its class, else the family's."""
        for cls in type(model_patcher.model).__mro__:
            if cls.__name__ in self.latent_by_class:
                return self.latent_by_class[cls.__name__]
        return self.latent


def layer_suffix(name: str) -> str:
    """``blocks.3.cross_attn.k`` -> ``cross_attn.k`` (the part after the block key; Cosmos 1.0's
    ``blocks.block3.blocks.1.block.attn.to_k.0`` -> ``blocks.1.block.attn.to_k.0``); a layer outside the blocks
    (``vector_in.in_layer``) is its own suffix."""
    return name if block_index(name) is None else name.split(".", 2)[-1]


def block_of(name: str) -> str | None:
    """``blocks.3.cross_attn.k`` -> ``blocks.3``; ``double_blocks.0.txt_mlp.0`` -> ``double_blocks.0``; None for a
    layer outside the blocks (``vector_in.in_layer``)."""
    return None if block_index(name) is None else ".".join(name.split(".", 2)[:2])


def _has_linear(module, name: str) -> bool:
    try:
        return getattr(module.get_submodule(name), "weight", None) is not None
    except AttributeError:
        return False


def block_range(count: int, block_start: int, block_end: int) -> tuple[int, int]:
    """Inclusive block indices; ``block_end = -1`` means the last block.

    Raises:
        ValueError: naming each bad bound and the value that fixes it (a start beyond the last block, an end beyond
            it, a start after the end), so that following the message makes the range valid.
    """
    final = count - 1
    problems = []
    if block_start < 0:
        problems.append(f"block_start {block_start} is below 0: set block_start to 0 (the first block) or more")
    elif block_start > final:
        highest = block_end if 0 <= block_end < final else final  # also not after a valid block_end
        problems.append(f"block_start {block_start} is beyond the last block: lower block_start to {highest} or less")
    if block_end > final:
        problems.append(f"block_end {block_end} is beyond the last block: set block_end to -1 (the last block) or to "
                        f"{final} or less")
    if not problems and block_end >= 0 and block_start > block_end:
        problems.append(f"block_start {block_start} is after block_end {block_end}: swap them (block_start "
                        f"{block_end}, block_end {block_start})")
    if problems:
        raise ValueError(f"block range {block_start}..{block_end} does not fit this model's blocks 0..{final}: "
                         + "; ".join(problems))
    return block_start, final if block_end < 0 else block_end


_CROSS_KV = "text-side cross-attention key/value projections: their input is the projected text"
_VAE_8X = LatentGeometry(spatial=8, temporal=4)

ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        family="wan",
        # The Wan 2.2 A14B experts are detected as WAN21 (the 2.1 architecture); the TI2V 5B as WAN22.
        model_classes=("WAN22", "WAN21", "WAN22_S2V", "WAN22_Animate", "WAN21_Vace", "WAN21_Camera", "WAN21_HuMo"),
        blocks="blocks",
        groups={
            # An image-to-video Wan's k_img/v_img (2.1 I2V/FLF, Animate, Fun camera) read the image's CLIP-vision
            # tokens, and without a clip_vision_output ComfyUI hands them the whole text context instead: left out,
            # 71 % of the concept reached the video that way (tiny Animate and camera models, 2026-12-06).
            "cross_attn.k+v": LayerGroup(("cross_attn.k", "cross_attn.v", "cross_attn.k_img", "cross_attn.v_img"),
                                         True, _CROSS_KV + " (and an image-to-video model's k_img/v_img)",
                                         "text_embedding"),
            "cross_attn.o": LayerGroup(("cross_attn.o",), False, "cross-attention output projection"),
            "ffn.0": LayerGroup(("ffn.0",), False, "first FFN linear of each block (video tokens)"),
        },
        default_group="cross_attn.k+v",
        latent=_VAE_8X,
        latent_by_class={"WAN22": LatentGeometry(spatial=16, temporal=4)},  # Wan 2.2 VAE (48 channels)
        side_blocks=("vace_blocks", "vace_layers_mapping"),
        image_keys=("cross_attn.k_img", "cross_attn.v_img"),
        text_input="text_embedding.0",
        text_encoder="umt5_xxl for Wan",
    ),
    Adapter(
        family="hunyuan_video",
        model_classes=("HunyuanVideoI2V", "HunyuanVideoSkyreelsI2V", "HunyuanVideo"),
        blocks="double_blocks",
        groups={
            # its text has no padding (each prompt its own token count): no token mask needed
            "txt_mlp.0": LayerGroup(("txt_mlp.0",), False,
                                    "text-stream FFN first linear (the paper's choice for MMDiT)", text_stream=True),
            "txt_attn.qkv": LayerGroup(("txt_attn.qkv",), False, "text-stream attention projections", text_stream=True),
            # The pooled CLIP-L vector is added to the timestep embedding that modulates every block: a concept in it
            # reaches the video whatever the text stream's edit does (on the tiny model 82 % of a pair's prediction
            # difference went that way, 2026-12-06). Its input is the text's alone, one row per prompt.
            "vector_in": LayerGroup(("vector_in.in_layer",), True, "pooled text (CLIP-L) input: vector_in's first "
                                    "linear, outside the blocks", pooled_text=True,
                                    conditioning_input="pooled_output", top_level=True,
                                    path="HunyuanVideo's pooled CLIP-L text", since="2026-12-06"),
            # The text where it enters the model, as Wan's k/v read text_embedding: input_embedder maps each token row
            # and c_embedder (which modulates the token refiner) the rows' unmasked mean, x.sum(1) / x.shape[1], the
            # prompt's token mean since its text has no padding. What the text stream carries starts here and reaches
            # the video in the double blocks and, concatenated with the video tokens, in every single block, which
            # txt_mlp.0 and txt_attn.qkv (double blocks only) never touch. One shared record: edited alike, the two
            # are the model run on the text projected before txt_in (the mean of projected rows is the projected mean).
            "txt_in": LayerGroup(("txt_in.input_embedder", "txt_in.c_embedder.in_layer"), True,
                                 "text input: txt_in's token embedder and the embedder of the tokens' mean, outside "
                                 "the blocks", "txt_in", pooled_suffixes=("txt_in.c_embedder.in_layer",),
                                 top_level=True, path="HunyuanVideo's text tokens, which the single blocks read beside "
                                 "the video", since="2026-12-07"),
        },
        default_group="txt_mlp.0",
        latent=_VAE_8X,
        # its forward builds one [1, 1, tokens] attention mask, which a batch of masks does not fit (ComfyUI 0.3.64)
        batches_text_masks=False,
        text_input="txt_in.input_embedder",
        text_encoder="llava_llama3 with clip_l for HunyuanVideo",
        pooled_text_encoder="llava_llama3 + clip_l through DualCLIPLoader, type hunyuan_video (its clip_l gives the "
                            "pooled output)",
    ),
    Adapter(
        family="ltxv",
        model_classes=("LTXV",),
        blocks="transformer_blocks",
        groups={
            "attn2.to_k+to_v": LayerGroup(("attn2.to_k", "attn2.to_v"), True, _CROSS_KV, "caption_projection"),
            "attn2.to_out": LayerGroup(("attn2.to_out.0",), False, "cross-attention output projection"),
        },
        default_group="attn2.to_k+to_v",
        latent=LatentGeometry(spatial=32, temporal=8),
        text_input="caption_projection.linear_1",
        text_encoder="t5xxl for LTX-Video",
        reads_text_mask=True,
    ),
    Adapter(
        family="mochi",
        model_classes=("GenmoMochi",),
        blocks="blocks",
        groups={
            # its T5 context is padded to 256 rows, and the model attends to the prompt's tokens only
            # until 2026-12-06 they were pooled over all 256 rows, which turned the tiny model's pair difference by
            # about 50 degrees
            "mlp_y.w1": LayerGroup(("mlp_y.w1",), False, "text-stream FFN first linear", text_tokens=True,
                                   padding_pooled_until="2026-12-06"),
            "attn.qkv_y": LayerGroup(("attn.qkv_y",), False, "text-stream attention projections", text_tokens=True,
                                     padding_pooled_until="2026-12-06"),
            # t5_y_embedder (an attention pool over the prompt's T5 tokens) is added to the timestep embedding that
            # modulates every block: a concept in it reaches the video whatever the text stream's edit does (on the
            # tiny model, random weights, 29 % of a pair's prediction difference went that way and 54 % of what the
            # default edit left, 2026-12-07). to_out reads the pool's one row per prompt, the text's alone; the model
            # makes it from the context, so the conditioning needs no pooled_output.
            "t5_y_embedder": LayerGroup(("t5_y_embedder.to_out",), True, "pooled T5 text: the attention pool's "
                                        "output projection (t5_y_embedder.to_out), outside the blocks",
                                        pooled_text=True, top_level=True, path="Mochi's pooled T5 text",
                                        since="2026-12-07"),
        },
        default_group="attn.qkv_y",
        latent=LatentGeometry(spatial=8, temporal=6),
        # it crops every prompt of a call to one token count, the sum of the whole batch's mask
        batches_text_masks=False,
        text_input="t5_yproj",
        text_encoder="t5xxl for Mochi",
        reads_text_mask=True,
    ),
    Adapter(
        family="cosmos_predict2",
        model_classes=("CosmosPredict2",),
        blocks="blocks",
        groups={
            # Every block's k/v reads the conditioning itself (crossattn_emb), no module in between.
            "cross_attn.k_proj+v_proj": LayerGroup(("cross_attn.k_proj", "cross_attn.v_proj"), True, _CROSS_KV,
                                                   "context"),
            "cross_attn.output_proj": LayerGroup(("cross_attn.output_proj",), False, "cross-attention output projection"),
        },
        default_group="cross_attn.k_proj+v_proj",
        latent=_VAE_8X,
        text_input="blocks.0.cross_attn.k_proj",  # no projection in between: the first block's k reads the text
        text_encoder="oldt5_xxl for Cosmos Predict2",
    ),
    Adapter(
        # Cosmos 1.0 text2world / video2world, 7B and 14B (ComfyUI's CosmosT2V / CosmosI2V: GeneralDIT)
        family="cosmos1",
        model_classes=("CosmosVideo",),
        blocks="blocks",
        # a ModuleDict keyed block0, block1 ...; each holds the sub-blocks of block_config "FA-CA-MLP" (ComfyUI's
        # detection sets it for every release), so sub-block 1 is the cross-attention
        block_prefix="block",
        groups={
            # Every block's cross-attention reads the conditioning itself (only transposed to (M B D)), no module in
            # between. to_k / to_v are nn.Sequential: the Linear (.0, no bias, so target zero only), whose output a
            # per-head norm then reads (RMSNorm on k, identity on v); the edit is the Linear's. No other path from the
            # prompt: no pooled text, no text embedder, the blocks' modulation is the timestep's alone.
            # oldt5_xxl pads to 512 zero rows and gives an attention_mask that GeneralDIT never reads (ComfyUI's
            # detection leaves use_cross_attn_mask False): a zero row stays a zero key and value under a bias-free
            # edit, so the padding weighs the same before and after, as on Wan.
            "cross_attn.to_k+to_v": LayerGroup(("blocks.1.block.attn.to_k.0", "blocks.1.block.attn.to_v.0"), True,
                                               _CROSS_KV, "context"),
            "cross_attn.to_out": LayerGroup(("blocks.1.block.attn.to_out.0",), False,
                                            "cross-attention output projection"),
        },
        default_group="cross_attn.to_k+to_v",
        latent=LatentGeometry(spatial=8, temporal=8),  # its own tokenizer, Cosmos1CV8x8x8 (EmptyCosmosLatentVideo)
        # Its blocks run token-major: the video as (T H W B D), so that the attention layers read (THW B D), and the
        # text as (M B D). Read as [batch, tokens, d], a layer's rows would be one per token pooled over the batch.
        batch_dim=-2,
        text_input="blocks.block0.blocks.1.block.attn.to_k.0",  # no projection in between, as on Cosmos Predict2
        text_encoder="oldt5_xxl for Cosmos 1.0 (CLIPLoader type cosmos)",
    ),
)

#: Every group name offered in the nodes' combo (a family that lacks one says so when run).
GROUP_CHOICES: tuple[str, ...] = ("default",) + tuple(dict.fromkeys(g for a in ADAPTERS for g in a.groups)) + ("all",)


def adapter_named(family: str) -> Adapter:
    """The adapter of the family a refusal vector or a measurement names."""
    for adapter in ADAPTERS:
        if adapter.family == family:
            return adapter
    raise ValueError(f"unknown model family {family!r}; this pack knows {[a.family for a in ADAPTERS]}")


def adapter_for(model_patcher) -> Adapter:
    """The adapter of a ComfyUI MODEL (a ModelPatcher), by the class of its ``BaseModel``."""
    base = getattr(model_patcher, "model", None)
    for cls in type(base).__mro__:  # most specific class first, so WAN22 wins over its parent WAN21
        for adapter in ADAPTERS:
            if cls.__name__ in adapter.model_classes:
                return adapter
    raise ValueError(f"unsupported model {type(base).__name__}: this pack supports the families "
                     f"{[a.family for a in ADAPTERS]} (Wan 2.1/2.2, HunyuanVideo, LTX-Video, Mochi, Cosmos Predict2, "
                     f"Cosmos 1.0)")


def embeds_guidance(model_patcher) -> bool:
    """True for a guidance-distilled model (HunyuanVideo with ``guidance_embed``): it reads its guidance as an input
    and is sampled at cfg 1 with no negative prompt (ComfyUI's FluxGuidance into a BasicGuider)."""
    params = getattr(model_patcher.model.diffusion_model, "params", None)
    return bool(getattr(params, "guidance_embed", False))


def layers_for(model_patcher, group: str, block_start: int = 0, block_end: int = -1) -> list[str]:
    """The layers of a MODEL that a node measures or edits: ``group`` ("default", a group name or "all") in the
    block range. Collect Activations and Apply Unlearning both resolve layers here."""
    adapter = adapter_for(model_patcher)
    return adapter.layer_names(model_patcher.model.diffusion_model, group, block_start, block_end)


def latent_shape(model_patcher, width: int, height: int, length: int) -> list[int]:
    """Shape of an empty latent for a ``width x height x length`` video in this MODEL's latent format."""
    channels = model_patcher.get_model_object("latent_format").latent_channels
    return adapter_for(model_patcher).latent_geometry(model_patcher).shape(channels, width, height, length)


def text_width(model_patcher) -> int | None:
    """The context width this MODEL's text input layer (``Adapter.text_input``) reads; None where the model lacks that
    layer (a variant the table does not know), so that no guess is checked against."""
    adapter = adapter_for(model_patcher)
    if not adapter.text_input:
        return None
    try:
        layer = model_patcher.model.diffusion_model.get_submodule(adapter.text_input)
    except AttributeError:
        return None
    width = getattr(layer, "in_features", None)
    if width is None:
        weight = getattr(layer, "weight", None)
        width = weight.shape[1] if weight is not None and weight.ndim == 2 else None
    return None if width is None else int(width)


def require_text_width(model_patcher, conditionings, node: str, input_name: str, source: str) -> None:
    """Raise before any forward when ``conditionings`` (CONDITIONINGs that feed ``input_name`` of ``node``, made by
    ``source``) are not as wide as the MODEL's text input: another family's text encoder made them, and the model's
    first text layer would otherwise fail deep inside with torch's "mat1 and mat2 shapes cannot be multiplied"."""
    expected = text_width(model_patcher)
    if expected is None:
        return
    widths = [entry[0].shape[-1] for cond in conditionings for entry in cond]
    wrong = [width for width in widths if width != expected]
    if not wrong:
        return
    adapter = adapter_for(model_patcher)
    count = f" ({len(wrong)} of {len(widths)} prompts)" if len(widths) > 1 else ""
    raise ValueError(f"{node}: {input_name}: the text conditioning is {wrong[0]} features wide{count}, but this "
                     f"{adapter.family} model's text input ({adapter.text_input}) reads {expected}: it was encoded by "
                     f"another model family's text encoder. Connect the model's own text encoder, e.g. "
                     f"{adapter.text_encoder}, to the {source} that makes {input_name}")


def require_latent_channels(model_patcher, latent, node: str, input_name: str = "latent") -> None:
    """Raise before any forward when ``latent`` ``[batch, channels, ...]`` has another channel count than the MODEL's
    latent format (a 48-channel Wan 2.2 TI2V 5B latent on Wan 2.1): the patch embedding would otherwise fail with
    torch's "The size of tensor a (48) must match the size of tensor b (16)", even for text-side layers. Skipped where
    the latent format states no channel count."""
    expected = getattr(model_patcher.get_model_object("latent_format"), "latent_channels", None)
    if expected is None or latent.ndim < 2 or latent.shape[1] == expected:
        return
    family = adapter_for(model_patcher).family
    raise ValueError(f"{node}: {input_name} has {latent.shape[1]} channels, but this {family} model reads {expected}: "
                     f"it is another model family's latent. Connect an empty latent of this model family: {expected} "
                     f"channels (or leave {input_name} unconnected: the node makes one from width, height and length)")


def require_pooled_text(model_patcher, conditionings, node: str, input_name: str, source: str) -> None:
    """Raise before any forward when the MODEL reads the text encoder's pooled output on every forward (a layer of a
    group whose ``conditioning_input`` is ``pooled_output``: HunyuanVideo's ``vector_in.in_layer``, absent where
    ``vector_in`` is None; not Mochi's ``t5_y_embedder.to_out``, whose pooled row the model makes from the context)
    and a prompt of ``conditionings`` (CONDITIONINGs that feed ``input_name`` of ``node``, made by ``source``) carries
    no ``pooled_output``. Whatever the layer group: ComfyUI's forward feeds ``y`` through ``vector_in`` before any
    block, so such a prompt fails deep inside with torch's "'NoneType' object is not subscriptable"."""
    adapter = adapter_for(model_patcher)
    diffusion = model_patcher.model.diffusion_model
    # only a top-level pooled layer is a whole name to look up; the model reads it whether or not it is edited
    read = [s for g in adapter.groups.values() if g.conditioning_input == "pooled_output" and g.top_level
            for s in g.suffixes if _has_linear(diffusion, s)]
    if not read:
        return
    entries = [entry for cond in conditionings for entry in cond]
    missing = sum(1 for entry in entries if entry[1].get("pooled_output") is None)
    if not missing:
        return
    count = f" ({missing} of {len(entries)} prompts)" if len(entries) > 1 else ""
    raise ValueError(f"{node}: {input_name}: the text conditioning has no pooled_output{count}, but this "
                     f"{adapter.family} model reads the pooled text through {read[0]!r} on every forward, whatever the "
                     f"layer group: the text encoder gave none. Connect the model's own text encoder, "
                     f"{adapter.pooled_text_encoder or adapter.text_encoder}, to the {source} that makes {input_name}")
