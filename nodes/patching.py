"""Apply Unlearning and Export as LoRA: a refusal vector turned into weight patches on a clone.

Every edited linear layer gets a rank-c LoRA patch ``W' = W + up @ down`` (``comfy.weight_adapter``
``LoRAAdapter``) and, for the affine target, a ``("diff", ...)`` patch on its bias. The input MODEL is
never modified: ComfyUI applies patches to a clone when it loads it, and the file on disk is never
touched. The only product of a weight the edit needs is ``W U`` ``[out, c]``: it is computed where the
weight lives, a few rows at a time, so a 14B model's weights are never copied whole.
"""

from __future__ import annotations

import contextlib
import json

import torch

from comfy.weight_adapter import LoRAAdapter

from ..core.edit import EDIT_TARGETS, LowRankEdit, project_edit, require_representable_bias
from ..core.fingerprint import fingerprint_weights
from ..core.basis import RefusalBasis
from ..core.serialization import save_atomic
from .adapters import DIFFUSION_PREFIX, adapter_for, block_of, layer_suffix, layers_for
from .fp8_edits import RemoveSubspace, add_fp8_edit, requantised_when_baked
from .packed_weights import file_elements
from .weights import baked_bias, baked_weight, loaded_dtype, row_scale, stored_values, stored_weight

#: Apply Unlearning's layer choice that keeps every layer stored in the vector.
ALL_IN_VECTOR = "all in vector"
#: The LoRA export's node name, which its refusals start with (it has no layers input: it edits the whole vector).
EXPORT_NODE = "Export Unlearning as LoRA"
#: What a stock LoRA loader does to the exported edit on fp8 weights (measured on a tiny fp8 Wan, see docs/nodes.md).
FP8_LORA_NOTE = ("On fp8 weights (fp8_e4m3fn, *_fp8_scaled files) a LoRA loader bakes the edit and re-quantises the "
                 "weight to fp8, which leaves 3-5 % of the removed direction (|W' d| / |W d| = 0.031-0.046 measured "
                 "through LoraLoaderModelOnly on a tiny fp8 Wan), and 11-28 % of target safe_mean's bias change is off; "
                 "Apply Unlearning adds wrappers that remove the direction to the compute dtype's rounding (2e-7 in "
                 "float32, 3-4e-3 in bf16) and keep the bias change exact: use Apply Unlearning for fp8 models.")
#: Elements of a weight converted to float32 at a time for W U (2 MB; one buffer reused for every chunk).
CHUNK_ELEMENTS = 1 << 19


class UnlearningPatch(LoRAAdapter):
    """Apply Unlearning's weight patch: a plain ``LoRAAdapter`` to ComfyUI, of its own type so that a MODEL that
    already carries the edit is recognised (:func:`edited_layers`), with the concept of the vector that made it, which
    the refusals of Export Unlearning as LoRA and Unlearning Check name."""

    def __init__(self, loaded_keys, weights, concept: str = "", strength: float = 1.0):
        super().__init__(loaded_keys, weights)
        self.concept = concept
        self.strength = float(strength)


def patched_weight(model, layer: str) -> torch.Tensor | None:
    """The layer's weight as ``model`` uses it, float32 on the weight's device, when ``model`` patches or wraps it (a
    LoRA loaded before this pack's nodes, or an earlier Apply Unlearning); None when it does neither.

    Computed as ComfyUI computes it (``ModelPatcher.patch_weight_to_device``, then the weight functions at compute
    time): :func:`baked_weight`, then the wrappers in order. This pack's :class:`RemoveSubspace` is left out: it only
    restores on U what rounding to fp8 took from that float32 weight. The edit must be taken from this weight: one
    computed from the file's weight leaves the LoRA's share of the concept direction in place, and a second Apply
    would remove the direction again, or on fp8 move the bias a second time.
    """
    key = f"{DIFFUSION_PREFIX}{layer}.weight"
    patches = model.patches.get(key)
    wrappers = [wrap for wrap in model.weight_wrapper_patches.get(key, ()) if not isinstance(wrap, RemoveSubspace)]
    if not patches and not wrappers:
        return None
    weight = baked_weight(model, layer)
    if wrappers:
        # At run time the wrappers get the stored units (a scaled-fp8 layer multiplies by its scale afterwards).
        scale = row_scale(model.model.diffusion_model.get_submodule(layer), weight.device)
        weight = weight if scale is None else weight / scale
        for wrap in wrappers:
            weight = wrap(weight)
        weight = weight if scale is None else weight * scale
    return weight


def unlearning_patches(model, layer: str) -> list[UnlearningPatch]:
    """Apply Unlearning's patches on ``layer`` in ``model`` (every edited layer gets one, fp8 layers included), also
    those inside a merge's entry (``ModelMergeSimple`` adds model2's weight and patch list as one nested entry): an
    unlearned model merged with its base carries the edit scaled, and was taken for an unedited one (Export at ratio
    0 wrote an empty LoRA with the base weights' fingerprint; a review's measure)."""
    return list(_unlearning_in(model.patches.get(f"{DIFFUSION_PREFIX}{layer}.weight", ())))


def _unlearning_in(entries):
    for entry in entries:
        adapter = entry[1]
        if isinstance(adapter, UnlearningPatch):
            yield adapter
        elif isinstance(adapter, list):  # [(weight, convert), *patch entries], as get_key_patches gives them
            yield from _unlearning_in(adapter[1:])


def edited_layers(model, layers) -> list[str]:
    """Those of ``layers`` that already carry Apply Unlearning's edit in ``model``."""
    return [layer for layer in layers if unlearning_patches(model, layer)]


def carrying_this_vector(model, basis: RefusalBasis, layers) -> list[str]:
    """Those of ``layers`` where ``model`` already carries Apply Unlearning's edit with ``basis`` itself (its patch's
    ``down`` is this vector's U^T). An edit computed on top of it is empty: W' U = 0 already at strength 1."""
    def carries(layer: str) -> bool:
        down = basis.subspace(layer).T
        return any(patch.weights[1].shape == down.shape and torch.allclose(patch.weights[1], down, atol=1e-6, rtol=0)
                   for patch in unlearning_patches(model, layer))

    return [layer for layer in layers if carries(layer)]


def carried_concepts(model, layers) -> list[str]:
    """The concepts of the Apply Unlearning edits ``model`` carries on ``layers``, in order, each once (an unnamed
    vector's as "unnamed concept")."""
    concepts = [patch.concept or "unnamed concept" for layer in layers for patch in unlearning_patches(model, layer)]
    return list(dict.fromkeys(concepts))


def covering_edits(model, layer: str, strength: float) -> tuple[list[UnlearningPatch], list[UnlearningPatch]]:
    """The Apply Unlearning edits on ``layer``, split in two for a new edit at ``strength``: ``(covering, others)``.

    Covering: the run of edits at the end of the layer's patch list (nothing after them but other covering edits),
    applied whole (not scaled by a merge), that removed their subspace at least as completely as ``strength`` will
    (``|1 - s_earlier| <= |1 - strength|``: an edit at 3 negates its direction rather than removing it). The new
    edit leaves their subspace to them. Every other Apply edit on the layer (a LoRA or a merge after it, a weaker or
    overshooting one) may no longer hold what it removed: the new edit removes its subspace again, at ``strength``.
    Leaving their part to them kept 0.50 of the earlier concept after a LoRA of 1 % of the weights between the two
    Applies, 0.57 after a later Apply at 1.01 on one at 1, and 0.34-0.50 of the later concept after a weaker edit (two
    reviews' measures)."""
    entries = list(model.patches.get(f"{DIFFUSION_PREFIX}{layer}.weight", ()))
    covering = []
    for entry in reversed(entries):
        adapter = entry[1]
        whole = entry[0] == 1.0 and entry[2] == 1.0 and entry[4] is None  # strength_patch, strength_model, function
        if not (isinstance(adapter, UnlearningPatch) and whole
                and abs(1.0 - getattr(adapter, "strength", 1.0)) <= abs(1.0 - strength) + 1e-9):
            break
        covering.append(adapter)
    others = [patch for patch in unlearning_patches(model, layer) if all(patch is not c for c in covering)]
    return covering, others


def _orthonormal(columns: list[torch.Tensor]) -> torch.Tensor | None:
    """An orthonormal ``[in, r]`` basis of the span of ``columns`` (each ``[in, c_i]``), None when it is empty."""
    if not columns:
        return None
    basis, singular, _ = torch.linalg.svd(torch.cat(columns, 1).to(torch.float64), full_matrices=False)
    # the columns are unit vectors or orthonormal sets: an absolute floor merges repeated directions
    keep = singular > 1e-6
    return basis[:, keep] if bool(keep.any()) else None


def outside_earlier_edits(model, layer: str, subspace: torch.Tensor, strength: float = 1.0) -> torch.Tensor | None:
    """What a new Apply edit at ``strength`` removes on ``layer``: the span of ``subspace`` U ``[in, c]`` and of the
    earlier Apply edits that do not cover (:func:`covering_edits`), less the covering edits' span; orthonormal
    ``[in, c']``, ``U`` itself where there are no earlier edits, None where nothing is left (the same vector again).

    Why: a later Apply takes W' U from the edited weight and removes it, so two vectors in series made
    W'' = W (I - P1)(I - P2), which puts back part of the first concept along the second's direction: 23-50 % of
    |W d1| kept at strength 1 on the tiny Wan (directions at cosine 0.25-0.68). Orthogonal to the covering edits,
    W' U2' = W U2' and the chain is W - s W P(span(U1, U2)), Combine Refusal Vectors' edit; removing the others' span
    again keeps what they removed removed (at ``strength``) whatever came after them.
    """
    covering, others = covering_edits(model, layer, strength)
    if not covering and not others:
        return subspace
    wanted = _orthonormal([subspace.to(torch.float64)] + [patch.weights[1].T for patch in others])
    covered = _orthonormal([patch.weights[1].T for patch in covering])
    rest = wanted if covered is None else wanted - covered @ (covered.T @ wanted)
    left = _orthonormal([rest])
    return None if left is None else left.to(subspace.dtype).contiguous()


def weight_times_basis(weight: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``W U`` ``[out, c]`` in float32 on the CPU, for a weight ``[out, in]`` of any dtype and device.

    Computed on the weight's device; a weight that is not float32 is converted a chunk of rows at a time into
    one reused buffer (about 2 MB), never as a whole. A float32 result, not a bf16 matmul: on the CPU that
    rounds W U to bf16 (2e-3 of |W U|), where chunked float32 keeps 1e-6 and costs no more. ``scale`` is a
    scaled-fp8 checkpoint's scale as :func:`row_scale` gives it.
    """
    u = basis.detach().to(weight.device, torch.float32)  # [in, c]
    weight = weight.detach()
    if weight.dtype == torch.float32:
        product = weight @ u
    else:
        rows, width = weight.shape
        step = max(1, CHUNK_ELEMENTS // width)
        product = torch.empty(rows, u.shape[1], device=weight.device)
        buffer = torch.empty(min(step, rows), width, device=weight.device)
        with _one_cpu_thread(weight.device):
            for start in range(0, rows, step):
                chunk = buffer[: min(step, rows - start)]
                chunk.copy_(weight[start:start + step])
                torch.mm(chunk, u, out=product[start:start + step])
    if scale is not None:
        product = product * scale.to(product.device)
    return product.cpu()


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Run the chunk loop on one intra-op thread when the weight is on the CPU (the previous count is restored).

    Each chunk is two small parallel regions (a copy and a matrix-vector product), memory-bound: more threads
    add little, and when the cores are busy with other work each region waits for a descheduled thread. On
    this project's shared 2-core machine W U for the 80 k/v layers of the 14B layout took 8-14 s with 2 threads
    and 1.2-2.5 s with one (whole Apply in bench/nodes_perf.py: 3.2 s wall, 1.6 s CPU at load average 4.3).
    """
    previous = torch.get_num_threads()
    if device.type != "cpu" or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def bias_dtype(model, module) -> torch.dtype:
    """The narrowest dtype an edited bias of ``module`` passes through: the one it is held in or the one the model
    computes in (a bf16 bias computed in fp16 overflowed at 65504 where its bf16 held it). An fp8 bias is not one:
    it saturates where it is baked and its wrapper adds the exact bias back at compute dtype (a 448 limit refused
    edits that ran exact)."""
    compute = getattr(model.model, "manual_cast_dtype", None)
    if requantised_when_baked(module, "bias"):
        return compute or torch.float32
    held = loaded_dtype(module, "bias")
    dtypes = [dtype for dtype in (held, compute) if dtype is not None and dtype.is_floating_point]
    return min(dtypes, key=lambda dtype: torch.finfo(dtype).max, default=torch.float32)


def _widen(adapter, diffusion, basis: RefusalBasis, group: str, chosen: list[str], block_start: int,
           block_end: int) -> str:
    """The remedy when the ``chosen`` layers (of ``group`` in the block range) hold none of the vector's: the blocks
    the vector covers (a block range that misses them is what to change, also when 'all in vector' is already chosen),
    a vector computed with the group where this one has no layer of its kinds, and 'all in vector' where another
    group is chosen, unless 'all in vector' refuses this vector too (an old 'all' vector chosen under 'txt_in' was
    told to choose it, and then refused for lacking txt_in)."""
    # a layer outside the blocks (HunyuanVideo's vector_in) is chosen whatever the range: it has no block to widen to
    outside = all(block_of(layer) is None for layer in chosen)
    blocks = sorted({adapter.main_block(diffusion, layer) for layer in basis.layers} - {None})
    count = adapter.block_count(diffusion)
    final = count - 1 if block_end < 0 else block_end
    remedies = []
    if blocks and not outside and not any(block_start <= block <= final for block in blocks):
        remedies.append(f"the vector's layers lie in blocks {blocks[0]}..{blocks[-1]}: set block_start and block_end "
                        f"to include them (block_start 0 and block_end -1: every block)")
    if group != ALL_IN_VECTOR:
        if not {layer_suffix(layer) for layer in chosen} & {layer_suffix(layer) for layer in basis.layers}:
            remedies.append(f"compute a vector with Collect Activations' layers {group!r} (or 'all'): this one holds "
                            "none of its layers")
        every = adapter.layer_names(diffusion, "all", block_start, block_end)
        refused = top_level_left_out(every, basis.layers, recorded_groups(basis))
        if not refused:
            remedies.append(f"choose layers '{ALL_IN_VECTOR}' to edit the vector's own layers")
        elif not remedies:
            remedies.append(f"compute the vector again with Collect Activations: '{ALL_IN_VECTOR}' refuses it too, as "
                            f"it lacks {refused[0]!r}, which layers = all now takes")
    return "; or ".join(remedies) or f"choose layers '{ALL_IN_VECTOR}'"


def select_layers(model, basis: RefusalBasis, group: str, block_start: int, block_end: int,
                  node: str = "Apply Unlearning") -> list[str]:
    """Layers of ``basis`` to edit in ``model``; errors name both sides when nothing matches or the vector
    was measured on other weights. ``node``: the node asking (Apply Unlearning, Unlearning Check, Export
    Unlearning as LoRA), which every refusal here starts with (the block range's and the layer group's too), as the
    nodes' other refusals do, so that it names the node whose inputs to change; the refusal of an old 'all' vector
    also fits its remedy to it."""
    try:
        return _chosen_layers(model, basis, group, block_start, block_end, node)
    except ValueError as error:
        raise ValueError(f"{node}: {error}") from error


def _chosen_layers(model, basis: RefusalBasis, group: str, block_start: int, block_end: int, node: str) -> list[str]:
    """:func:`select_layers`, whose refusals do not name the node yet."""
    adapter = adapter_for(model)
    if basis.model_family and basis.model_family != adapter.family:
        raise ValueError(f"this refusal vector was measured on a {basis.model_family!r} model "
                         f"({basis.concept or 'unnamed concept'}), but the MODEL is {adapter.family!r}; "
                         "compute a vector on this model")
    diffusion = model.model.diffusion_model
    # Every layer of the vector must exist here: the fingerprint covers all of them (a part of it cannot be
    # checked), and a vector whose layers are partly missing was measured on another model, whose edit on the
    # layers both share would be applied without any check.
    absent = [layer for layer in basis.layers if not has_module(diffusion, layer)]
    if absent:
        raise ValueError(f"{len(absent)} of the {len(basis.layers)} layers of this refusal vector "
                         f"({basis.concept or 'unnamed concept'}) are not in this {adapter.family} MODEL "
                         f"({absent[0]!r}{'...' if len(absent) > 1 else ''}): the vector belongs to another model "
                         "(another size or block count, Wan 2.1 I2V vs T2V, a VACE model vs the plain one); compute "
                         "a vector on this model")
    # in the adapter's order: a vector lacking several top-level layers is told of the one that joined 'all' first
    chosen = layers_for(model, "all" if group == ALL_IN_VECTOR else group, block_start, block_end)
    wanted = set(chosen)
    layers = [layer for layer in basis.layers if layer in wanted]
    if not layers:
        remedy = _widen(adapter, diffusion, basis, group, chosen, block_start, block_end)
        raise ValueError(f"no layer of the refusal vector ({basis.layers[:4]}{'...' if len(basis.layers) > 4 else ''}) "
                         f"is in the chosen layers of this {adapter.family} model (group {group!r}, blocks "
                         f"{block_start}..{block_end}); {remedy}")
    for layer in layers:
        module = diffusion.get_submodule(layer)
        width = module.weight.shape[1]
        if width != basis.dims[layer]:
            raise ValueError(f"layer {layer!r} reads {width} features in this model but the refusal vector was "
                             f"measured with {basis.dims[layer]}: it belongs to a different model size")
    if basis.model_fingerprint:
        here = weights_fingerprint(model, basis.layers)
        # the older form (dtype hashed too) only when the current one differs: each reads every layer's sample
        if here != basis.model_fingerprint != weights_fingerprint(model, basis.layers, with_dtype=True):
            raise ValueError(f"this refusal vector ({basis.concept or 'unnamed concept'}) was measured on other weights "
                             f"(fingerprint {basis.model_fingerprint}, this MODEL's gives {here}): another checkpoint, "
                             "another quantisation, or the other expert of a Wan 2.2 pair; compute a vector on this "
                             "model (each Wan 2.2 expert needs its own). A vector saved before 2026-12-06 also "
                             "fingerprinted the weights' dtype: if the same file is now held in another dtype "
                             "(another GPU, a launch flag such as --fp16-unet), compute it again. One computed "
                             "before 2026-12-06 on a MODEL with a LoRA fingerprinted the weights with the LoRA added, "
                             "which this check (it reads the weights without patches) never matches: compute it again")
    left_out = image_keys_left_out(adapter, diffusion, layers, basis.layers)
    if left_out:
        raise ValueError(f"this refusal vector ({basis.concept or 'unnamed concept'}) edits this image-to-video Wan's "
                         f"text k/v but not its image keys ({left_out[0]!r}{'...' if len(left_out) > 1 else ''}), "
                         "which read the text when no CLIP-vision output is connected, so the concept would reach "
                         "the video through them: it was computed before 2026-12-06. Compute it again with Collect "
                         "Activations, whose group now takes them")
    side_left_out = side_blocks_left_out(adapter, diffusion, chosen, layers, basis.layers)
    if side_left_out:
        raise ValueError(f"this refusal vector ({basis.concept or 'unnamed concept'}) edits this Wan VACE model's main "
                         f"blocks but not the VACE blocks injected into them ({side_left_out[0]!r}"
                         f"{'...' if len(side_left_out) > 1 else ''}), which read the same text and add what they "
                         "write into those blocks, so the concept would reach the video through them: it was "
                         "computed before 2026-12-06, when the layer groups left the VACE blocks out. "
                         + _compute_again(node, ", whose layer groups now take them"))
    groups = recorded_groups(basis)
    pooled_left_out = top_level_left_out(chosen, basis.layers, groups)
    if pooled_left_out:
        # an error, as for the image keys above: applied as it is, the edit would leave a path of the text unedited
        name = pooled_left_out[0]
        top = adapter.top_level_group(name)
        path = f" ({top.path})" if top and top.path else ""
        # the day the layer joined 'all', not "before <day>": a recorded group dates from 2026-12-06 itself, the day
        # HunyuanVideo's vector_in joined, so a vector that records it is from that day
        since = f" on {top.since}" if top and top.since else ""
        # Export has no layers input: it edits every layer of the vector, which its group (layers = all) meant to cover
        export = node == EXPORT_NODE
        taker, takes = ("layers = all", "takes") if export else (f"the chosen layers ({group!r})", "take")
        alls = groups.count("all")
        why = ("its measurement records layers = all" if alls and len(groups) == 1 else
               f"the measurement of {alls} of the {len(groups)} concepts it combines records layers = all" if alls else
               f"it edits every kind of this {adapter.family} model's block layers that {taker} {takes}, as a vector "
               "of layers = all did, and records no layer group")
        remedy = (f"Compute it again with Collect Activations (layers = all now takes {name!r}) and export that vector"
                  if export else f"Compute it again with Collect Activations: layers = all now takes {name!r}")
        raise ValueError(f"this refusal vector ({basis.concept or 'unnamed concept'}) lacks {name!r}, which "
                         f"{taker} {takes}: the path through it{path} would be left unedited, and the concept could "
                         f"reach the video that way. The vector was computed with layers = all before {name!r} joined "
                         f"that group{since} ({why}). {remedy}")
    pooled_padding = padding_pooled_layers(adapter, layers)
    unrecorded = sum(not measurement for measurement in recorded_measurements(basis))
    if pooled_padding and unrecorded:
        until = adapter.group_of(pooled_padding[0]).padding_pooled_until
        which = (f"the measurement of {unrecorded} of the {len(basis.combined_from)} concepts it combines is not "
                 "recorded" if basis.combined_from else "it records no measurement")
        raise ValueError(f"this refusal vector ({basis.concept or 'unnamed concept'}) edits this {adapter.family} "
                         f"model's text-stream layers ({pooled_padding[0]!r}{'...' if len(pooled_padding) > 1 else ''})"
                         f" and {which}, which Collect Activations has stored with every vector since {until}: it was "
                         f"computed before {until}, when those layers were pooled over all 256 padded T5 rows instead "
                         "of the prompt's own tokens (on a tiny model that turned a pair's difference by about 50 "
                         "degrees), or built without Collect Activations. "
                         + _compute_again(node, ", which now pools them over the prompt's own tokens"))
    return layers


def _compute_again(node: str, why: str) -> str:
    """The remedy for a vector computed before a fix of what its layers take: compute it again (``why``: what Collect
    Activations does now) and, for a LoRA exported from it, which holds the same edit and whose loader cannot tell,
    export again."""
    if node == EXPORT_NODE:
        return f"Compute it again with Collect Activations{why} and export that vector"
    return (f"Compute it again with Collect Activations{why}; a LoRA exported from this vector holds the same edit: "
            "export it again from the new one")


def recorded_measurements(basis: RefusalBasis) -> list:
    """The ``measurement`` Collect Activations recorded for each concept of ``basis`` (a combined vector's from each
    concept's entry in ``combined_from``); empty for a concept that records none (a vector from before 2026-12-06, or
    one built without Collect Activations)."""
    return [entry.get("measurement") or {} for entry in basis.combined_from] or [basis.measurement]


def padding_pooled_layers(adapter, layers) -> list[str]:
    """Those of ``layers`` whose group was pooled over the padded text context until a day
    (``LayerGroup.padding_pooled_until``: Mochi's text stream, until 2026-12-06)."""
    return [layer for layer in layers if (group := adapter.group_of(layer)) and group.padding_pooled_until]


def side_blocks_left_out(adapter, diffusion, chosen, layers, vector_layers) -> list[str]:
    """The side-block layers (``Adapter.side_blocks``: Wan VACE's ``vace_blocks``) among the ``chosen`` ones that the
    vector does not edit, though it edits the layer of the same kind in the main block they are injected into (of
    ``layers``, the vector's chosen ones): what a vector computed before the side blocks joined every group leaves
    out. Side blocks injected into a main block the vector does not edit are not asked for."""
    if not adapter.side_blocks:
        return []
    side = adapter.side_blocks[0]

    def in_side(layer: str) -> bool:
        return layer.split(".", 1)[0] == side

    edited = {(adapter.main_block(diffusion, layer), layer_suffix(layer)) for layer in layers if not in_side(layer)}
    return [layer for layer in chosen if in_side(layer) and layer not in vector_layers
            and (adapter.main_block(diffusion, layer), layer_suffix(layer)) in edited]


def recorded_groups(basis: RefusalBasis) -> list[str | None]:
    """The layer group Collect Activations recorded for each concept of ``basis`` (``measurement["layer_group"]``,
    written since 2026-12-06; a combined vector's from each concept's entry in ``combined_from``); None for a concept
    that records none (a vector from before then, or one built without Collect Activations). One per concept, not
    None for all as soon as one is unrecorded: a combined vector of a recorded 'all' concept and an unrecorded one was
    then judged by its layer kinds alone and applied without a word, the recorded concept's pooled path unedited."""
    groups = [measurement.get("layer_group") for measurement in recorded_measurements(basis)]
    return [group if isinstance(group, str) else None for group in groups]


def top_level_left_out(chosen, vector_layers, groups=None) -> list[str]:
    """The layers outside the blocks (``Adapter.top_level_names``: HunyuanVideo's ``vector_in.in_layer``, Mochi's
    ``t5_y_embedder.to_out``) among the ``chosen`` ones that a vector of layers = all computed before that layer joined
    the group leaves out. ``groups``: the layer group each concept of the vector records (:func:`recorded_groups`;
    None: one concept that records none). It is such a vector when one of them is "all" and it lacks such a layer,
    whatever the others record. Another group (the default txt_mlp.0, attn.qkv_y) never meant to cover the pooled
    path, whatever block layers it holds: Mochi's last block has attn.qkv_y only, so a default vector there covers
    every kind of block layer 'all' takes in it. Only where a concept records no group and none records "all" is the
    vector judged by its layer kinds: one that covers every kind of block layer the chosen ones hold in the blocks it
    covers (in all chosen blocks where it covers none of them). Kinds from every chosen block made the verdict depend on
    the block range: Mochi's last block has no mlp_y, so the same last-block vector was refused on blocks 1..1 and
    applied on 0..-1."""
    groups = [None] if groups is None else list(groups)
    missing = [layer for layer in chosen if block_of(layer) is None and layer not in vector_layers]
    if "all" in groups:
        return missing
    if None not in groups:
        return []
    in_blocks = [layer for layer in chosen if block_of(layer) is not None]
    vector_blocks = {block_of(layer) for layer in vector_layers} - {None}
    in_blocks = [layer for layer in in_blocks if block_of(layer) in vector_blocks] or in_blocks
    kinds = {layer_suffix(layer) for layer in in_blocks}
    covered = {layer_suffix(layer) for layer in vector_layers}
    return missing if missing and kinds and kinds <= covered else []


def image_keys_left_out(adapter, diffusion, layers, vector_layers) -> list[str]:
    """The image keys (``Adapter.image_keys``: Wan's k_img/v_img) beside the chosen text k/v ``layers`` that the vector
    does not edit: what a vector computed before they joined the text group leaves out."""
    if not adapter.image_keys:
        return []
    blocks = {layer.rsplit(".", 1)[0] for layer in layers if layer.endswith(("cross_attn.k", "cross_attn.v"))}
    siblings = [f"{block}.{key.rsplit('.', 1)[1]}" for block in sorted(blocks) for key in adapter.image_keys]
    return [name for name in siblings if has_module(diffusion, name) and name not in vector_layers]


def weights_fingerprint(model, layers, *, with_dtype: bool = False) -> str:
    """The fingerprint Collect Activations stores with a vector, of ``layers``' weights as loaded from the file
    (``with_dtype``: the form vectors saved before 2026-12-06 hold)."""
    return fingerprint_weights({layer: file_elements(stored_weight(model, layer)) for layer in layers},
                               with_dtype=with_dtype)


def has_module(diffusion, layer: str) -> bool:
    try:
        diffusion.get_submodule(layer)
    except AttributeError:
        return False
    return True


def layer_edits(model, basis: RefusalBasis, layers: list[str], strength: float, target: str,
                products: dict | None = None) -> dict[str, LowRankEdit]:
    """The closed-form edit of every layer, keyed by layer name; ``products``, when given, receives each layer's
    ``(W U, patched)``, ``patched`` being :func:`patched_weight` (None where the MODEL neither patches nor wraps it).

    ``core.edit.project_edit`` is run on the small ``[out, c]`` matrix W U in the subspace's own coordinates
    (basis = identity, target = U^T mu): its ``up = -strength W U`` and bias change are the layer's, and the
    layer's ``down`` is U^T. So W itself is read once, by :func:`weight_times_basis`.

    Where ``model`` already carries Apply Unlearning's edits on a layer, U is first reduced to the part orthogonal to
    them (:func:`outside_earlier_edits`), so vectors in series make Combine Refusal Vectors' edit; a layer with
    nothing left gets no edit (the same vector applied twice changes nothing).
    """
    if target not in EDIT_TARGETS:
        raise ValueError(f"target must be one of {EDIT_TARGETS}, got {target!r}")
    diffusion = model.model.diffusion_model
    require_bias_for_target(model, layers, target)
    edits = {}
    for layer in layers:
        module = diffusion.get_submodule(layer)
        mu = basis.target(layer) if target == "safe_mean" else None
        u = outside_earlier_edits(model, layer, basis.subspace(layer), strength)  # [in, c]
        if u is None:
            continue
        # Target safe_mean in series: each Apply moves only its own U' (orthogonal to the earlier edits) to its own
        # safe mean, U'^T mu, through its own bias term. Not exact where the concepts' subspaces overlap: along the
        # part of this vector's U inside the earlier span, the component stays where the earlier vector's safe mean
        # put it, not at this vector's.
        patched = patched_weight(model, layer)  # whole and float32 only where the MODEL patches this layer
        if patched is None:
            wu = weight_times_basis(stored_values(model, layer), u, row_scale(module, "cpu"))  # [out, c]
        else:
            wu = (patched @ u.to(patched.device, torch.float32)).cpu()
        if products is not None:
            products[layer] = (wu, patched)
        small = project_edit(wu, torch.eye(u.shape[1]), strength, target=None if mu is None else u.T @ mu)
        if small.bias_delta is not None:  # the bias as the MODEL bakes it (a LoRA's diff_b included), then cast
            require_representable_bias(baked_bias(model, layer, "cpu"), small.bias_delta,
                                       bias_dtype(model, module), layer)
        # down is a copy: layers that read one input share one subspace tensor, and a patch (or a LoRA file,
        # which safetensors refuses to write with shared memory) must not alias the basis.
        edits[layer] = LowRankEdit(up=small.up, down=u.T.clone(memory_format=torch.contiguous_format),
                                   bias_delta=small.bias_delta)
    return edits


def require_bias_for_target(model, layers, target: str,
                            nodes: str = "Apply Unlearning and Unlearning Check") -> None:
    """Target "safe_mean" moves each edited layer's bias (``b' = b + strength (W U) U^T mu``); a layer without one
    (Mochi's text qkv, the cross-attention k/v of Cosmos Predict2 and Cosmos 1.0) can take only target "zero". Apply
    Unlearning and Unlearning Check ask this alike, so the check never recommends an edit Apply would refuse.
    ``nodes``: where the remedy says to change the target (Export Unlearning as LoRA passes its own name)."""
    if target != "safe_mean":
        return
    diffusion = model.model.diffusion_model
    missing = [layer for layer in layers if getattr(diffusion.get_submodule(layer), "bias", None) is None]
    if missing:
        raise ValueError(f"layer {missing[0]!r}{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''} has "
                         "no bias, so target 'safe_mean' (which moves the bias) cannot be applied; set target to "
                         f"'zero' in {nodes}")


def apply_unlearning(model, basis: RefusalBasis | None, *, strength: float | None = 1.0, enabled: bool = True,
                     group: str = ALL_IN_VECTOR, block_start: int = 0, block_end: int = -1,
                     target: str = "safe_mean"):
    """A clone of ``model`` with the concept edited out. Returns ``(clone, edited_layers)``. Not ``enabled``: the
    clone as it is (``basis`` and ``strength`` may then be None: Apply Unlearning does not compute them). At strength
    0: the clone as it is, with the layers the vector would edit."""
    clone = model.clone()
    if not enabled:
        return clone, []
    layers = select_layers(model, basis, group, block_start, block_end)
    if strength == 0:
        return clone, layers  # nothing to patch: a zero patch baked into fp8 weights re-rounded 22 of 16,384 values
    products = {}
    edits = layer_edits(model, basis, layers, strength, target, products)
    patches = {}
    for layer, edit in edits.items():
        lora = (edit.up, edit.down, None, None, None, None)
        patches[f"{DIFFUSION_PREFIX}{layer}.weight"] = UnlearningPatch(set(), lora, basis.concept or "", strength)
        if edit.bias_delta is not None:
            patches[f"{DIFFUSION_PREFIX}{layer}.bias"] = ("diff", (edit.bias_delta,))
    accepted = set(clone.add_patches(patches, strength_patch=1.0))
    refused = sorted(set(patches) - accepted)
    if refused:
        raise ValueError(f"ComfyUI refused patches for {refused[:4]}: these weights are not in the model's state dict")
    diffusion = model.model.diffusion_model
    for layer, edit in edits.items():
        if requantised_when_baked(diffusion.get_submodule(layer)):
            wu, earlier = products[layer]  # earlier None: no patch and no wrapper on this layer yet
            # the subspace this edit removes: the vector's, less what earlier Apply edits on the layer cover
            add_fp8_edit(clone, layer, edit.down.T.contiguous(), strength, wu, earlier, edit)
    return clone, layers


def lora_state_dict(model, basis: RefusalBasis, *, strength: float = 1.0, group: str = ALL_IN_VECTOR,
                    block_start: int = 0, block_end: int = -1, target: str = "safe_mean",
                    products: dict | None = None) -> dict[str, torch.Tensor]:
    """The same edit as a standard LoRA file: ``<key>.lora_up.weight``, ``.lora_down.weight``, ``.alpha``
    (alpha = rank, so scale 1) and ``.diff_b`` for bias changes, keyed as ``diffusion_model.<layer>``,
    the generic format ComfyUI's LoRA loader maps for any model. ``products``: as in :func:`layer_edits`."""
    layers = select_layers(model, basis, group, block_start, block_end, EXPORT_NODE)
    repeated = carrying_this_vector(model, basis, layers)
    if repeated:
        raise ValueError(f"Export Unlearning as LoRA: this MODEL already carries this refusal vector's edit on "
                         f"{len(repeated)} of the {len(layers)} layers ({repeated[0]!r}...), made by an Apply Unlearning "
                         "upstream, so the file would hold nothing of it; connect the model from before Apply "
                         "Unlearning")
    # Another vector's edit: the file would be computed on the edited weight (the part of this vector's subspace the
    # earlier edit leaves) while its metadata names this concept alone and the base weights' fingerprint; loaded on
    # the base model it left 0.672 of |W d| of the exported concept (blood after Apply Rolex, tiny Wan).
    edited = edited_layers(model, layers)
    if edited:
        concepts = ", ".join(repr(concept) for concept in carried_concepts(model, edited))
        raise ValueError(f"Export Unlearning as LoRA: this MODEL carries Apply Unlearning's edit with another "
                         f"refusal vector ({concepts}) on {len(edited)} of the {len(layers)} layers "
                         f"({edited[0]!r}...), so the file for {basis.concept or 'this unnamed concept'!r} would be "
                         "computed on top of it and hold only what that edit leaves; connect the model from before "
                         "Apply Unlearning. To export several concepts as one file, combine their vectors (Combine "
                         "Refusal Vectors) and export the combined vector")
    # before layer_edits asks it with Apply's and the check's names: the target to change is Export's own
    require_bias_for_target(model, layers, target, "Export Unlearning as LoRA")
    tensors = {}
    for layer, edit in layer_edits(model, basis, layers, strength, target, products).items():
        key = f"{DIFFUSION_PREFIX}{layer}"
        tensors[f"{key}.lora_up.weight"] = edit.up.contiguous()
        tensors[f"{key}.lora_down.weight"] = edit.down.contiguous()
        tensors[f"{key}.alpha"] = torch.tensor(float(edit.rank))
        if edit.bias_delta is not None:
            tensors[f"{key}.diff_b"] = edit.bias_delta.contiguous()
    return tensors


def export_lora(model, basis: RefusalBasis, path: str, *, strength: float = 1.0, target: str = "safe_mean",
                group: str = ALL_IN_VECTOR, block_start: int = 0, block_end: int = -1) -> dict[str, str]:
    """Write the edit as a LoRA file at ``path`` (atomically: complete or absent) and return its metadata:
    the model family, the fingerprint of the weights it was computed from, concept, strength, target, layers,
    how many edited layers hold fp8 weights (where a LoRA loader re-quantises the edit), and the vector it was made
    from: ``video_unlearning_vector_sha256`` (:meth:`RefusalBasis.content_sha256`, which says how to recompute it
    from a vector file) with its method, rank, alpha, edit and fit_revision; a combined vector adds
    ``video_unlearning_combined_from``, each concept's provenance and vector id (its alpha is "null" when
    theirs differ).

    ``video_unlearning_computed_on_patches`` (JSON) says whether the edit was computed on weights the MODEL patches
    (a LoRA loaded before, a merge): ``layers``, how many edited layers were, and ``fingerprint``, the
    :func:`fingerprint_weights` of those patched weights. Such a file removes the concept only when loaded after the
    same LoRAs: loaded on the bare model, one computed over a small style LoRA left 0.115 of |W d| (tiny Wan), while
    its metadata read like a bare-model export's."""
    products: dict = {}
    tensors = lora_state_dict(model, basis, strength=strength, group=group, block_start=block_start,
                              block_end=block_end, target=target, products=products)
    patched = {layer: weight for layer, (_, weight) in products.items() if weight is not None}
    on_patches = {"layers": len(patched), "fingerprint": fingerprint_weights(patched) if patched else None}
    suffix = ".lora_up.weight"
    layers = [key[len(DIFFUSION_PREFIX):-len(suffix)] for key in tensors if key.endswith(suffix)]
    diffusion = model.model.diffusion_model
    metadata = {
        "video_unlearning_model_family": adapter_for(model).family,
        "video_unlearning_model_fingerprint": weights_fingerprint(model, [l for l in basis.layers if has_module(diffusion, l)]),
        "video_unlearning_concept": basis.concept,
        "video_unlearning_strength": repr(float(strength)),
        "video_unlearning_target": target,
        "video_unlearning_layers": json.dumps(layers),
        "video_unlearning_fp8_layers": str(sum(requantised_when_baked(diffusion.get_submodule(l)) for l in layers)),
        # Nothing tied a LoRA to its vector file but comparing tensors: the same id is in Unlearning Check's table.
        "video_unlearning_vector_sha256": basis.content_sha256(),
        "video_unlearning_method": basis.method,
        "video_unlearning_rank": str(basis.rank),
        # A combination of different alphas has none: its concepts' are in video_unlearning_combined_from.
        "video_unlearning_alpha": "null" if basis.alpha is None else repr(float(basis.alpha)),
        "video_unlearning_edit": basis.edit,
        "video_unlearning_fit_revision": str(basis.fit_revision),
        "video_unlearning_computed_on_patches": json.dumps(on_patches, sort_keys=True),
    }
    if basis.combined_from:  # each concept's provenance and vector id (its measurement stays in the vector file)
        metadata["video_unlearning_combined_from"] = json.dumps(
            [{k: v for k, v in entry.items() if k != "measurement"} for entry in basis.combined_from], sort_keys=True)
    save_atomic({k: v.to(torch.float32) for k, v in tensors.items()}, path, metadata)
    return metadata
