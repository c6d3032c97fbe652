"""Every architecture adapter on a tiny model of its family, built through ComfyUI's own model classes."""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY_FAMILIES, FamilyText, family_model

TINY = {"wan": None, **TINY_FAMILIES}  # Wan: loaded through ComfyUI's detection in the `wan` fixture


pytestmark = pytest.mark.usefixtures("inference_mode")


def tiny_model(family, wan):
    return wan if TINY[family] is None else family_model(*TINY[family])


@pytest.mark.parametrize("family", list(TINY))
def test_adapter_layers_exist_and_an_edit_removes_the_direction(family, pack, wan, effective_weights):
    import dataclasses

    from comfyui_video_unlearning.core.refusal import RefusalFitter
    from comfyui_video_unlearning.nodes.adapters import adapter_for
    from comfyui_video_unlearning.nodes.patching import apply_unlearning

    patcher = tiny_model(family, wan)
    adapter = adapter_for(patcher)
    assert adapter.family == family
    diffusion = patcher.model.diffusion_model
    for group in adapter.groups:
        names = adapter.layer_names(diffusion, group)
        assert names and all(diffusion.get_submodule(n).weight.ndim == 2 for n in names), (family, group)
    layers = adapter.layer_names(diffusion, adapter.default_group)
    fitter = RefusalFitter()
    g = torch.Generator().manual_seed(1)
    for name in layers:
        width = diffusion.get_submodule(name).weight.shape[1]
        safe = torch.randn(6, width, generator=g)
        fitter.update(name, safe + torch.randn(width, generator=g), safe)
    # with the measurement Collect Activations records: a Mochi text-stream vector without one was pooled over the T5
    # padding (before 2026-12-06), which Apply refuses
    basis = dataclasses.replace(fitter.fit(rank=2, model_family=family), measurement={"layer_group": "default"})
    patched, edited = apply_unlearning(patcher, basis, strength=1.0, target="zero")
    assert edited == layers
    keys = [f"diffusion_model.{name}.weight" for name in layers]
    weights = effective_weights(patched, keys)
    for name, key in zip(layers, keys):
        weight = weights[key]
        direction = basis.subspace(name)[:, 0]
        assert (weight @ direction).abs().max() < 1e-4, (family, name)


#: ComfyUI's own empty-latent node for each family (Cosmos Predict2 and Wan share the Wan 2.1 VAE; Cosmos 1.0 has its
#: own 8x8x8 tokenizer).
EMPTY_LATENT_NODES = {
    "wan": ("comfy_extras.nodes_hunyuan", "EmptyHunyuanLatentVideo"),
    "hunyuan_video": ("comfy_extras.nodes_hunyuan", "EmptyHunyuanLatentVideo"),
    "ltxv": ("comfy_extras.nodes_lt", "EmptyLTXVLatentVideo"),
    "mochi": ("comfy_extras.nodes_mochi", "EmptyMochiLatentVideo"),
    "cosmos_predict2": ("comfy_extras.nodes_hunyuan", "EmptyHunyuanLatentVideo"),
    "cosmos1": ("comfy_extras.nodes_cosmos", "EmptyCosmosLatentVideo"),
    "wan22_5b": ("comfy_extras.nodes_wan", "Wan22ImageToVideoLatent"),
}


def _node_latent(module_name: str, node_name: str, width: int, height: int, length: int):
    import importlib

    node = getattr(importlib.import_module(module_name), node_name)
    if hasattr(node, "generate"):  # a V1 node
        return node().generate(width, height, length)[0]["samples"]
    if node_name == "Wan22ImageToVideoLatent":
        return node.execute(None, width, height, length, 1)[0]["samples"]
    return node.execute(width, height, length)[0]["samples"]


@pytest.mark.parametrize("family", list(EMPTY_LATENT_NODES))
def test_empty_latent_has_the_shape_of_the_familys_own_latent_node(family, pack, wan, wan22_5b):
    """The adapter owns each family's VAE factors; Collect Activations' empty latent matches ComfyUI's node."""
    from comfyui_video_unlearning.nodes.collect import empty_latent

    model = wan22_5b if family == "wan22_5b" else tiny_model(family, wan)
    width, height, length = 1024, 512, 97
    expected = _node_latent(*EMPTY_LATENT_NODES[family], width, height, length)
    assert list(empty_latent(model, width, height, length).shape) == list(expected.shape), family


def test_the_tiny_cosmos1_is_configured_as_comfyuis_detection_configures_cosmos1(pack, wan):
    """The tests' tiny Cosmos 1.0 (``TINY_FAMILIES["cosmos1"]``, built from a config, like the other families') is what
    ComfyUI's detection makes of its own state dict in everything but sizes: the same model class, block layout
    (FA-CA-MLP, token-major THWBD), embeddings and modulation, so the adapter is tested on the layout ComfyUI loads."""
    import comfy.model_detection
    from host_models import COSMOS1_SIZES

    config_class, config = TINY_FAMILIES["cosmos1"]
    state = tiny_model("cosmos1", wan).model.diffusion_model.state_dict()
    detected = comfy.model_detection.detect_unet_config(state, "")
    assert type(comfy.model_detection.model_config_from_unet(state, "")).__name__ == config_class
    differs = {key for key in detected.keys() | config.keys() if detected.get(key) != config.get(key)}
    assert differs == set(COSMOS1_SIZES), differs


def test_cosmos1_as_comfyuis_loader_detects_it_takes_text_as_oldt5_xxl_gives_it(pack, clip, tiny, tmp_path,
                                                                                monkeypatch):
    """A Cosmos 1.0 state dict loaded by ComfyUI's own loader (detected as CosmosT2V: 36 blocks, 1024-wide text): the
    default layers are the Linear inside every block's cross-attention to_k / to_v, the model predicts from text shaped
    as oldt5_xxl gives it (512 rows, zero padding, a mask), and the edit at target zero changes those weights alone;
    safe_mean is refused (no bias); the exported LoRA's keys are ones ComfyUI's LoRA loader maps onto the model, onto
    the same weights. (The graph runs on the smaller ``TINY_FAMILIES["cosmos1"]``: 512 rows through 36 blocks take
    about a second per prompt here.)"""
    import comfy.model_management
    import comfy.sd
    import folder_paths
    import nodes as comfy_nodes

    from comfyui_video_unlearning.core.refusal import RefusalFitter
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.adapters import adapter_for, layers_for, text_width
    from comfyui_video_unlearning.nodes.check import comfy_forward
    from comfyui_video_unlearning.nodes.collect import empty_latent, sigmas_for

    model = comfy.sd.load_diffusion_model_state_dict(tiny.tiny_cosmos1_state_dict())
    assert type(model.model).__name__ == "CosmosVideo" and adapter_for(model).family == "cosmos1"
    default = [f"blocks.block{i}.blocks.1.block.attn.{name}.0" for i in range(36) for name in ("to_k", "to_v")]
    assert layers_for(model, "default") == default and text_width(model) == 1024
    text = FamilyText(tiny.LookupTextEncoder(clip, rows=512, width=1024), 512, 1024, None, True)
    prompt = definitions._encode(text, "a Rolex watch on a table")
    assert prompt[0][0].shape == (1, 512, 1024) and "attention_mask" in prompt[0][1]
    fitter = RefusalFitter().share("context", default)  # every block's k and v read the one text context
    g = torch.Generator().manual_seed(1)
    safe = torch.randn(6, 1024, generator=g)
    fitter.update("context", safe + torch.randn(1024, generator=g), safe)
    basis = fitter.fit(rank=2, model_family="cosmos1")
    try:
        # one latent token: the text's 512 rows through every block are the cost
        prediction = comfy_forward(model, empty_latent(model, 16, 16, 1), sigmas_for(model, [0.5]), 0, [])([prompt],
                                                                                                         None)
        with pytest.raises(ValueError, match="has no bias, so target 'safe_mean'"):
            definitions.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "safe_mean")
        patched = definitions.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
        monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
        folder_paths.filename_list_cache.clear()
        definitions.ExportLoRA.execute(model, basis, 1.0, "zero", "cosmos1_detected")
        loaded = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, "cosmos1_detected_00001.safetensors",
                                                                        1.0)[0]
    finally:
        comfy.model_management.unload_all_models()
        folder_paths.filename_list_cache.clear()
    assert prediction.shape == (1, 16 * 1 * 2 * 2) and torch.isfinite(prediction).all()
    edited = {f"diffusion_model.{layer}.weight" for layer in default}
    assert set(patched.patches) == edited and set(loaded.patches) == edited


def test_collect_and_apply_resolve_layers_through_one_function(pack, wan):
    """Collect Activations (``definitions``) and Apply Unlearning / Export (``patching``) both ask
    ``adapters.layers_for`` which layers a choice means; there is no second resolver."""
    from comfyui_video_unlearning.nodes import adapters, definitions, patching

    assert definitions.layers_for is adapters.layers_for and patching.layers_for is adapters.layers_for
    assert not hasattr(adapters, "resolve_group")
    names = adapters.layers_for(wan, "default")
    assert names == [f"blocks.{i}.cross_attn.{p}" for i in range(2) for p in "kv"]
    assert adapters.layers_for(wan, "all", 1, 1) == ["blocks.1.cross_attn.k", "blocks.1.cross_attn.v",
                                                     "blocks.1.cross_attn.o", "blocks.1.ffn.0"]
    assert adapters.adapter_for(wan).shared_inputs(names) == {"text_embedding": names}


#: A tiny Wan 2.1 VACE (ComfyUI's ``WAN21_Vace``): four main blocks and two VACE blocks, injected into blocks 0 and 2.
TINY_VACE = {"image_model": "wan2.1", "model_type": "vace", "dim": 128, "ffn_dim": 256, "num_layers": 4,
             "num_heads": 1, "in_dim": 16, "out_dim": 16, "text_dim": 4096, "patch_size": (1, 2, 2), "freq_dim": 256,
             "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "vace_in_dim": 96,
             "vace_layers": 2}


def _sensitivity_to_text_direction(model, patched, direction, x, context, **extra) -> tuple[float, float]:
    """How far the diffusion model's output moves (relative) when the projected text is shifted by 5 ``direction``:
    for ``model`` and for ``patched`` loaded (its patches applied)."""
    import comfy.model_management

    def sensitivity(patcher):
        diffusion = patcher.model.diffusion_model
        outputs = []
        for shift in (0.0, 5.0):
            handle = diffusion.text_embedding.register_forward_hook(lambda _m, _i, out: out + shift * direction)
            try:
                outputs.append(diffusion(x, torch.tensor([500.0]), context, **extra))
            finally:
                handle.remove()
        return float((outputs[1] - outputs[0]).norm() / outputs[0].norm())

    comfy.model_management.load_models_gpu([patched])
    try:
        edited = sensitivity(patched)
    finally:
        comfy.model_management.unload_all_models()
    return sensitivity(model), edited


def test_wan_vace_blocks_are_edited_with_the_main_blocks(pack, clip, tiny):
    """A VACE model's side blocks read the same text_embedding output through their own cross-attention k/v and add
    what they write into the main blocks: the default edit includes them (one shared record), so at strength 1 with
    target zero moving the text along the edit direction changes nothing. With the main blocks alone, as until
    2026-12-06, 41 % of the output's sensitivity to it was left (a tiny VACE of 2 + 1 blocks)."""
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import sweep_options

    model = family_model("WAN21_Vace", TINY_VACE)
    pairs = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
    encoded = definitions.PairEncoder.execute(tiny.LookupTextEncoder(clip), pairs, "a dog\na red car\na tree", "")[0]
    activations = definitions.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    assert {"vace_blocks.0.cross_attn.k", "vace_blocks.0.cross_attn.v"} <= set(activations.layers)
    assert definitions.layers_for(model, "default", 2, 2) == [  # VACE block 1 is injected into block 2
        "blocks.2.cross_attn.k", "blocks.2.cross_attn.v", "vace_blocks.1.cross_attn.k", "vace_blocks.1.cross_attn.v"]
    assert not any(layer.startswith("vace_blocks") for layer in definitions.layers_for(model, "default", 1, 1))
    halves = dict(sweep_options(model, None, list(activations.layers), "block halves"))  # counted where injected
    assert {layer for layer in halves["blocks 2-3"] if layer.startswith("vace")} == {
        "vace_blocks.1.cross_attn.k", "vace_blocks.1.cross_attn.v"}
    basis = definitions.RefusalVectorNode.execute(activations, "mean", 1, 1.0)[0]
    patched = definitions.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    direction = basis.subspace("blocks.0.cross_attn.k")[:, 0]

    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 16, 2, 8, 8, generator=g), torch.randn(1, 512, 4096, generator=g) * 0.5
    vace = dict(vace_context=torch.randn(1, 1, 96, 2, 8, 8, generator=g), vace_strength=[1.0])
    base, edited = _sensitivity_to_text_direction(model, patched, direction, x, context, **vace)
    assert base > 0.1 and edited < 1e-5


def test_an_old_wan_vace_vector_without_the_vace_blocks_is_refused(pack, clip, tiny, apply_check_export):
    """Until 2026-12-06 the layer groups left the VACE blocks out: such a vector (main-block k/v only) was applied to
    the main blocks alone, and Unlearning Check and Export Unlearning as LoRA took it too, without a word (41-44 % of
    the concept's way left on tiny VACE models). Apply, Check and Export refuse it, naming the VACE blocks, the day and
    the remedy; the fresh vector runs in all three. Told by structure, not by date: a vector of a main block that no
    VACE block is injected into is not asked for any."""
    import dataclasses
    import re

    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.patching import weights_fingerprint

    model = family_model("WAN21_Vace", TINY_VACE)
    pairs = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
    text = tiny.LookupTextEncoder(clip)
    encoded = definitions.PairEncoder.execute(text, pairs, "a dog\na red car\na tree", "Rolex")[0]
    activations = definitions.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    fresh = definitions.RefusalVectorNode.execute(activations, "mean", 1, 1.0)[0]
    held_out = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5))
    validation = definitions.PairEncoder.execute(text, held_out, "a dog\na red car", "Rolex")[0]

    def main_blocks_only(vector, blocks=range(4)):
        layers = [layer for layer in vector.layers if layer.split(".")[:2] in [["blocks", str(b)] for b in blocks]]
        kept = vector.select(layers)
        return dataclasses.replace(kept, model_fingerprint=weights_fingerprint(model, layers))

    old = main_blocks_only(fresh)
    message = (r"this refusal vector \(Rolex\) edits this Wan VACE model's main blocks but not the VACE blocks "
               r"injected into them \('vace_blocks\.0\.cross_attn\.k'\.\.\.\), which read the same text .*it was "
               r"computed before 2026-12-06, when the layer groups left the VACE blocks out\. Compute it again with "
               r"Collect Activations, whose layer groups now take them")
    for node, (run, remedy) in apply_check_export(model, validation, 64, 1).items():
        with pytest.raises(ValueError, match=f"^{re.escape(node)}: {message}{re.escape(remedy)}$"):
            run(old)
        run(fresh)
    # Combine: with a fresh vector it is refused there (their fingerprints cover different layers); two old ones
    # combine, and Apply refuses the combination
    from comfyui_video_unlearning.core.basis import RefusalBasis

    with pytest.raises(ValueError, match=r"their weight fingerprints differ .*but they cover different layers"):
        RefusalBasis.combine([old, fresh])
    with pytest.raises(ValueError, match=r"^Apply Unlearning: this refusal vector \(Rolex \+ Rolex\) edits this Wan "
                                         r"VACE"):
        definitions.ApplyUnlearning.execute(model, RefusalBasis.combine([old, old]), 1.0, True, "all in vector", 0, -1,
                                            "zero")
    with pytest.raises(ValueError, match=r"^Apply Unlearning: .*\('vace_blocks\.1\.cross_attn\.k'\.\.\.\)"):
        definitions.ApplyUnlearning.execute(model, old, 1.0, True, "default", 2, 2, "zero")  # VACE block 1 -> block 2
    # block 3 has no VACE block injected: a vector of it is what a fresh one of blocks 3..3 is
    last = definitions.ApplyUnlearning.execute(model, main_blocks_only(fresh, [3]), 1.0, True, "all in vector", 0, -1,
                                               "zero")[0]
    assert {key for key in last.patches if key.endswith(".weight")} == {
        "diffusion_model.blocks.3.cross_attn.k.weight", "diffusion_model.blocks.3.cross_attn.v.weight"}


@pytest.mark.parametrize("vision", [False, True], ids=["no clip vision", "clip vision"])
def test_an_image_to_video_wans_image_keys_are_edited_with_the_text_keys(pack, clip, tiny, vision):
    """An I2V Wan's cross-attention reads the CLIP-vision tokens through k_img/v_img, and without a
    clip_vision_output (optional in WanImageToVideo, WanAnimateToVideo, WanCameraImageToVideo) ComfyUI hands them the
    whole text context. With k/v alone edited, as until 2026-12-06, 71.5 % of the output's sensitivity to the edit
    direction was left there (tiny Animate and camera models); the default group now takes k_img/v_img too (one
    shared record), and at strength 1 with target zero the text along the direction changes nothing either way."""
    from comfyui_video_unlearning.nodes import definitions

    model = tiny.load_tiny_wan(state=tiny.tiny_wan_state_dict(i2v=True))
    pairs = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
    encoded = definitions.PairEncoder.execute(tiny.LookupTextEncoder(clip), pairs, "a dog\na red car\na tree", "")[0]
    activations = definitions.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    assert {"blocks.0.cross_attn.k_img", "blocks.1.cross_attn.v_img"} <= set(activations.layers)
    basis = definitions.RefusalVectorNode.execute(activations, "mean", 1, 1.0)[0]
    patched = definitions.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    direction = basis.subspace("blocks.0.cross_attn.k")[:, 0]

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16 + tiny.I2V_EXTRA_CHANNELS, 2, 8, 8, generator=g)
    context = torch.randn(1, 512, 4096, generator=g) * 0.5
    image = dict(clip_fea=torch.randn(1, 257, 1280, generator=g)) if vision else {}
    base, edited = _sensitivity_to_text_direction(model, patched, direction, x, context, **image)
    assert base > 0.01 and edited < 1e-5, (base, edited)
    # a vector computed before the image keys joined the group edits k/v only: refused, not applied in part
    import dataclasses

    from comfyui_video_unlearning.nodes.patching import weights_fingerprint

    text_only = basis.select([layer for layer in basis.layers if "_img" not in layer])
    text_only = dataclasses.replace(text_only, model_fingerprint=weights_fingerprint(model, list(text_only.layers)))
    with pytest.raises(ValueError, match="not its image keys .'blocks.0.cross_attn.k_img'...., which read the text"):
        definitions.ApplyUnlearning.execute(model, text_only, 1.0, True, "all in vector", 0, -1, "zero")
    if not vision:  # the I2V vector on a T2V Wan of the same width: k_img/v_img missing there, refused (until
        # 2026-12-06 they were dropped and the fingerprint check skipped: the text k/v of another model edited)
        with pytest.raises(ValueError, match="4 of the 8 layers .* not in this wan MODEL .'blocks.0.cross_attn.k_img'"
                                             r"....*Wan 2.1 I2V vs T2V"):
            definitions.ApplyUnlearning.execute(tiny.load_tiny_wan(), basis, 1.0, True, "all in vector", 0, -1, "zero")
    if not vision:  # the check measures the text path here and says that sampling with an image takes another
        from comfyui_video_unlearning.nodes.check import UnlearningCheck

        held_out = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5))
        validation = definitions.PairEncoder.execute(tiny.LookupTextEncoder(clip), held_out, "a dog\na red car", "")[0]
        table = UnlearningCheck.execute(model, basis, "0, 1", "default", 0, -1, "zero", "none", 64, 64, 1, "1", 0,
                                        validation_pairs=validation).args[2]
        assert "measured without a CLIP-vision output" in table
