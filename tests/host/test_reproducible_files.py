"""Audit properties of the files the nodes write: the same export gives the same bytes."""

from __future__ import annotations

import hashlib
import json
import types

import pytest
import torch

PAIRS = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
NEUTRAL = "a dog in a park\na red car\na tree in the wind\na bowl of soup"
HELD_OUT = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5))

pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.fixture(scope="module")
def nodes(pack):
    from comfyui_video_unlearning.nodes import definitions

    return definitions


@pytest.fixture(scope="module")
def encoded(nodes, clip):
    with torch.inference_mode():
        return nodes.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]


@pytest.fixture(scope="module")
def activations(nodes, wan, encoded):
    with torch.inference_mode():
        return nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]


@pytest.fixture(scope="module")
def basis(nodes, activations):
    with torch.inference_mode():
        return nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path / "loras")], {".safetensors"}))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "refusal_vectors",
                        ([str(tmp_path / "rv")], {".safetensors"}))
    folder_paths.filename_list_cache.clear()
    yield tmp_path
    folder_paths.filename_list_cache.clear()


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_exports_and_two_saves_give_the_same_bytes(nodes, wan, basis, folders):
    """4 exports of one LoRA had 4 SHA-256 (safetensors' hash-map order of the metadata); now one, and ComfyUI's own
    loader still reads the tensors and the metadata."""
    import comfy.utils

    loras = [folders / "loras" / nodes.ExportLoRA.execute(wan, basis, 1.0, "safe_mean", "lora").ui["text"][0]
             for _ in range(2)]
    vectors = [folders / "rv" / nodes.SaveRefusalVector.execute(basis, "rv", "text").ui["text"][0] for _ in range(2)]
    assert loras[0] != loras[1] and _sha256(loras[0]) == _sha256(loras[1])
    assert vectors[0] != vectors[1] and _sha256(vectors[0]) == _sha256(vectors[1])
    tensors, metadata = comfy.utils.load_torch_file(str(loras[0]), return_metadata=True)
    assert metadata["video_unlearning_concept"] == "Rolex"
    assert {key for key in tensors if key.endswith(".lora_up.weight")} == \
        {f"diffusion_model.{layer}.lora_up.weight" for layer in basis.layers}
    assert all(value.dtype == torch.float32 for value in tensors.values())


def test_a_saved_vector_records_how_it_was_measured(nodes, wan, clip, basis, folders):
    """A saved vector recorded its pairs and model but not its neutral prompts, Collect's seed, timesteps, size, layer
    group or block range, nor the text encoder: it could be neither recomputed nor audited. They are in its metadata
    now (the neutral prompts as digests with pair_text = digests) and come back with Load Refusal Vector."""
    from comfyui_video_unlearning.core.pairs import prompt_digest
    from comfyui_video_unlearning.core.serialization import read_metadata

    name = nodes.SaveRefusalVector.execute(basis, "rv", "text").ui["text"][0]
    measurement = read_metadata(folders / "rv" / name)["measurement"]
    neutral = NEUTRAL.split("\n")
    assert measurement["neutral_prompts"] == neutral and measurement["neutral_count"] == 4
    assert {key: measurement[key] for key in ("seed", "timesteps", "width", "height", "length", "layer_group",
                                              "block_start", "block_end")} == \
        {"seed": 0, "timesteps": "1", "width": 64, "height": 64, "length": 1, "layer_group": "default",
         "block_start": 0, "block_end": -1}
    assert len(measurement["sigmas"]) == 1
    encoder = measurement["text_encoder"]
    assert encoder["class"] == type(clip.cond_stage_model).__name__ and encoder["patched_weights"] == 0
    assert isinstance(encoder["fingerprint"], str) and len(encoder["fingerprint"]) == 16
    assert nodes.LoadRefusalVector.execute(name)[0].measurement == measurement

    hidden = nodes.SaveRefusalVector.execute(basis, "rv", "digests").ui["text"][0]
    measurement = read_metadata(folders / "rv" / hidden)["measurement"]
    assert measurement["neutral_prompts"] == [prompt_digest(prompt) for prompt in neutral]
    assert not any(prompt.encode() in (folders / "rv" / hidden).read_bytes() for prompt in neutral)


def test_a_lora_on_the_text_encoder_gives_one_identity_in_any_load_state(nodes, clip):
    """The text-encoder identity fingerprinted the weights as loaded: a LoRA'd CLIP read c5a98adaa3c4bab2 fully loaded
    (the LoRA merged into the weights) and the bare CLIP's 1a72e8d5b0e774c3 partially loaded or after unload, for the
    same encodings. Now the bare weights (the patcher's backup) plus a digest of the patches: one identity for the
    CLIP + LoRA whatever ComfyUI has loaded, another for the bare CLIP and for the LoRA at another strength."""
    import comfy.model_management
    from comfy.weight_adapter import LoRAAdapter

    from comfyui_video_unlearning.nodes.definitions import text_encoder_identity

    def with_lora(strength):
        lora, g = clip.clone(), torch.Generator().manual_seed(1)
        state = lora.cond_stage_model.state_dict()
        patches = {}
        for key in [k for k in state if k.endswith((".q.weight", ".k.weight", ".v.weight"))]:
            out, width = state[key].shape
            patches[key] = LoRAAdapter(set(), (torch.randn(out, 2, generator=g) * 0.05,
                                               torch.randn(2, width, generator=g), None, None, None, None))
        lora.add_patches(patches, strength)
        return lora

    bare = text_encoder_identity(clip)
    lora = with_lora(1.0)
    patcher = lora.patcher
    with torch.inference_mode():
        comfy.model_management.load_models_gpu([patcher])  # as encoding loads it: on the CPU, the LoRA merged in
        full = text_encoder_identity(lora)
        comfy.model_management.unload_all_models()
        unloaded = text_encoder_identity(lora)
        try:  # a GPU short of memory (lowvram): the weights stay bare, the LoRA is applied on the fly
            patcher.load(torch.device("cpu"), lowvram_model_memory=1, force_patch_weights=False, full_load=False)
            partial = text_encoder_identity(lora)
        finally:
            patcher.unpatch_model()
    assert full["fingerprint"] == partial["fingerprint"] == unloaded["fingerprint"], (full, partial, unloaded)
    assert full == partial == unloaded == text_encoder_identity(lora)
    assert full["patched_weights"] > 0 and isinstance(full["patches"], str) and len(full["patches"]) == 16
    assert bare["patches"] is None and bare["fingerprint"] == full["fingerprint"]  # the same file's weights
    assert bare != full and text_encoder_identity(with_lora(0.5))["patches"] != full["patches"]


def test_hook_loras_and_weight_wrappers_on_the_text_encoder_are_in_its_identity(nodes, clip):
    """A hook LoRA (Create Hook LoRA + Set CLIP Hooks) changed the tiny Wan's encodings by up to 4.97 and a weight
    wrapper by 0.105, yet the identity read ``patches None``: the bare CLIP's 1a72e8d5b0e774c3 unloaded, the hooks
    merged in (c5a98adaa3c4bab2) loaded, and the bare CLIP's own identity when wrapped. Now the bare weights (the
    patcher's hook_backup too) and a digest of the forced hooks' patches and of the wrappers' keys: one identity for
    the hooked CLIP in every load state, another for the bare CLIP, for the hook at another strength and for a
    wrapper."""
    import comfy.hooks
    import comfy.model_management
    from comfy.weight_adapter import LoRAAdapter

    from comfyui_video_unlearning.nodes.definitions import text_encoder_identity

    def with_hook(strength):  # as Create Hook LoRA + Set CLIP Hooks (apply_to_conds off, schedule_clip off) build it
        g = torch.Generator().manual_seed(1)
        state = clip.cond_stage_model.state_dict()
        patches = {}
        for key in [k for k in state if k.endswith((".q.weight", ".k.weight", ".v.weight"))]:
            out, width = state[key].shape
            patches[key] = LoRAAdapter(set(), (torch.randn(out, 2, generator=g) * 0.05,
                                               torch.randn(2, width, generator=g), None, None, None, None))
        hooks = comfy.hooks.create_hook_model_as_lora(None, None, 1.0, strength)
        hooks.hooks[0].weights_clip, hooks.hooks[0].need_weight_init = patches, False
        hooked = clip.clone()
        hooked.patcher.forced_hooks, hooked.use_clip_schedule = hooks.clone(), False
        hooked.patcher.forced_hooks.set_keyframes_on_hooks(None)
        hooked.patcher.register_all_hook_patches(hooks,
                                                 comfy.hooks.create_target_dict(comfy.hooks.EnumWeightTarget.Clip))
        return hooked

    comfy.model_management.unload_all_models()
    bare = text_encoder_identity(clip)
    hooked = with_hook(1.0)
    patcher = hooked.patcher
    with torch.inference_mode():
        registered = text_encoder_identity(hooked)
        try:
            comfy.model_management.load_models_gpu([patcher])  # as encoding loads it: the hooks merged in
            full = text_encoder_identity(hooked)
            bare_meanwhile = text_encoder_identity(clip)  # a clone: the same module, the hooked weights in it
        finally:
            comfy.model_management.unload_all_models()
        unloaded = text_encoder_identity(hooked)
        try:  # a GPU short of memory (lowvram): the hooks still merge into the weights
            patcher.load(torch.device("cpu"), lowvram_model_memory=1, force_patch_weights=False, full_load=False)
            partial = text_encoder_identity(hooked)
        finally:
            patcher.unpatch_model()
    assert registered == full == unloaded == partial, (registered, full, unloaded, partial)
    assert full["fingerprint"] == bare["fingerprint"] == bare_meanwhile["fingerprint"]  # the file's weights
    assert bare_meanwhile == bare and bare["patches"] is None
    assert isinstance(full["patches"], str) and len(full["patches"]) == 16 and full["hooked_weights"] > 0
    assert text_encoder_identity(with_hook(0.5))["patches"] != full["patches"]

    wrapped = clip.clone()
    key = next(k for k in wrapped.cond_stage_model.state_dict() if k.endswith(".q.weight"))
    wrapped.patcher.add_weight_wrapper(key, lambda weight: weight * 1.5)
    wrapped_identity = text_encoder_identity(wrapped)
    assert wrapped_identity["fingerprint"] == bare["fingerprint"] and wrapped_identity["wrapped_weights"] == 1
    assert isinstance(wrapped_identity["patches"], str) and wrapped_identity != bare
    assert wrapped_identity["patches"] not in (full["patches"], None)


def test_a_connected_latent_is_recorded_by_its_shape(nodes, wan, encoded):
    with torch.inference_mode():
        collected = nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "1", 5, "default", 0, -1,
                                                     latent={"samples": torch.zeros(1, 16, 1, 8, 8)})[0]
    assert collected.measurement["latent_shape"] == [1, 16, 1, 8, 8] and "width" not in collected.measurement
    assert collected.measurement["seed"] == 5


def test_an_exported_lora_names_its_vector_and_the_check_shows_the_same_id(nodes, wan, clip, basis, folders):
    """Nothing tied a LoRA to its vector file but comparing tensors. The LoRA now records the vector's
    content_sha256, the same whether the vector came straight from Low-Rank Refusal Vector or from the saved file
    (pairs as text or as digests), and the vector's method, rank, alpha, edit and fit_revision; Unlearning Check's
    table starts with the same short id."""
    from comfyui_video_unlearning.core.refusal import RefusalBasis
    from comfyui_video_unlearning.nodes import check

    def exported(vector):
        name = nodes.ExportLoRA.execute(wan, vector, 1.0, "safe_mean", "lora").ui["text"][0]
        return _read_metadata(folders / "loras" / name)

    ids = {exported(basis)["video_unlearning_vector_sha256"]}
    for pair_text in ("text", "digests"):
        name = nodes.SaveRefusalVector.execute(basis, "rv", pair_text).ui["text"][0]
        loaded = nodes.LoadRefusalVector.execute(name)[0]
        ids |= {exported(loaded)["video_unlearning_vector_sha256"],
                RefusalBasis.load(folders / "rv" / name).content_sha256()}
    assert len(ids) == 1 and len(next(iter(ids))) == 64
    metadata = exported(basis)
    assert {key.removeprefix("video_unlearning_"): metadata[key] for key in metadata if key.endswith(
        ("_method", "_rank", "_alpha", "_edit", "_fit_revision"))} == \
        {"method": "cpca", "rank": "4", "alpha": "1.0", "edit": "direction", "fit_revision": str(basis.fit_revision)}
    with torch.inference_mode():
        other = nodes.RefusalVectorNode.execute(
            nodes.CollectActivations.execute(wan, nodes.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0],
                                             64, 64, 1, "1", 0, "default", 0, -1)[0], "cpca", 4, 0.5)[0]
        assert other.content_sha256() not in ids  # another alpha, another id
        validation = nodes.PairEncoder.execute(clip, HELD_OUT, NEUTRAL, "Rolex")[0]
        table = check.UnlearningCheck.execute(wan, basis, "1", "all in vector", 0, -1, "safe_mean", "none", 64, 64, 1,
                                              "0.1", 0, validation_pairs=validation)[2]
    assert table.splitlines()[0] == f"vector sha256 {next(iter(ids))[:12]}"


def _read_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def test_a_lora_computed_on_patched_weights_says_so(nodes, wan, basis, folders, caplog):
    """Exported from a MODEL with a LoRA on the edited layers, the file is computed for W + its delta but its metadata
    read exactly like a bare-model export (loaded on the bare model it left 0.115 of |W d|). The metadata now counts
    the patched edited layers and fingerprints their weights, and the node and the log say when it is exact."""
    generator = torch.Generator().manual_seed(5)
    styled = wan.clone()
    patches = {f"diffusion_model.{layer}.weight": ("diff", (0.002 * torch.randn(
        wan.model.diffusion_model.get_submodule(layer).weight.shape, generator=generator),)) for layer in basis.layers}
    assert len(styled.add_patches(patches, 1.0)) == len(patches)
    bare = nodes.ExportLoRA.execute(wan, basis, 1.0, "zero", "bare").ui["text"]
    with caplog.at_level("WARNING"):
        shown = nodes.ExportLoRA.execute(styled, basis, 1.0, "zero", "styled").ui["text"]
    on_patches = [json.loads(_read_metadata(folders / "loras" / ui[0])["video_unlearning_computed_on_patches"])
                  for ui in (bare, shown)]
    assert on_patches[0] == {"layers": 0, "fingerprint": None}
    assert on_patches[1]["layers"] == len(basis.layers) and len(on_patches[1]["fingerprint"]) == 16
    assert len(bare) == 1 and "exact only when loaded after the same LoRAs" in shown[1]
    assert "exact only when loaded after the same LoRAs" in caplog.text


def test_a_text_encoder_patcher_that_raises_is_recorded_not_fatal(nodes):
    """The identity runs in every Pair Encoder run: another pack's patcher or hook object that raises while read
    (here a KeyError, which the reads let through until 2026-12-06) is recorded with its reason, never stops it."""
    class Raising:
        patches, backup = {}, {}

        @property
        def forced_hooks(self):
            raise KeyError("q")

    clip = types.SimpleNamespace(cond_stage_model=torch.nn.Linear(2, 2), patcher=Raising())
    identity = nodes.text_encoder_identity(clip)
    assert identity["patches"] is None and identity["patches_missing"] == "KeyError: 'q'"
    assert len(identity["fingerprint"]) == 16
