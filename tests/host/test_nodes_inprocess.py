"""The nodes on a real ComfyUI, in process, with a tiny Wan 2.1 that ComfyUI's own loader detects."""

from __future__ import annotations

import dataclasses

import pytest
import torch

PAIRS = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
NEUTRAL = "a dog in a park\na red car\na tree in the wind\na bowl of soup"


@pytest.fixture(autouse=True)
def _inference_mode():
    with torch.inference_mode():  # ComfyUI runs nodes under inference mode; so do the tests
        yield


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
        return nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "2", 0, "all", 0, -1)[0]


@pytest.fixture(scope="module")
def basis(nodes, activations):
    with torch.inference_mode():
        return nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]


def generate(wan_patcher, clip, seed=3):
    """A short real sampling run through the stock KSampler path."""
    import nodes as comfy_nodes

    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a Rolex watch on a table"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    latent = {"samples": torch.zeros(1, 16, 2, 8, 8)}
    return comfy_nodes.common_ksampler(wan_patcher, seed, 3, 2.0, "euler", "simple", positive, negative, latent)[0]["samples"]


def test_pair_encoder_validation_names_the_line(nodes):
    message = nodes.PairEncoder.validate_inputs(pairs="a | b\nno separator\nc | d")
    assert message.startswith("Pair Encoder: line 2:") and "exactly one '|'" in message
    assert nodes.PairEncoder.validate_inputs(pairs=PAIRS) is True
    assert "timesteps" in nodes.CollectActivations.validate_inputs(timesteps="1.5, x")


def test_collected_activations_match_what_core_predicts(nodes, wan, encoded, activations):
    diffusion = wan.model.diffusion_model
    assert activations.family == "wan" and len(activations.sigmas) == 2
    assert {"blocks.0.cross_attn.k", "blocks.1.ffn.0"} <= set(activations.layers)
    # The text-side k/v input is the projected T5 context: predictable without running the blocks. (The tiny
    # test tokenizer's end token is not UMT5's, so ComfyUI zeroes no padding here: every row is pooled.)
    unsafe = torch.stack([diffusion.text_embedding(c[0][0]).double().mean(1)[0] for c in encoded.unsafe])
    safe = torch.stack([diffusion.text_embedding(c[0][0]).double().mean(1)[0] for c in encoded.safe])
    fitted = activations.fitter.fit(method="mean")
    expected = (unsafe - safe).mean(0)
    torch.testing.assert_close(fitted.vectors["blocks.1.cross_attn.k"].double(), expected, rtol=1e-4, atol=1e-5)
    # The text-side default group runs every prompt in one batched forward: the same rows, one timestep.
    batched = nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "2", 0, "default", 0, -1)[0]
    assert len(batched.sigmas) == 1
    torch.testing.assert_close(batched.fitter.fit(method="mean").vectors["blocks.1.cross_attn.k"].double(), expected,
                               rtol=1e-4, atol=1e-5)


def test_text_side_layers_pool_the_prompt_tokens_not_the_zero_padding(nodes, wan, encoded):
    """With UMT5's own tokenizer ComfyUI zeroes the context after the end token (up to 512 rows); emulate that."""
    diffusion = wan.model.diffusion_model

    def padded(conditionings, length):
        out = []
        for cond in conditionings:
            context = cond[0][0].clone()
            context[:, length:] = 0
            out.append([[context, cond[0][1]]])
        return tuple(out)

    zeroed = dataclasses.replace(encoded, unsafe=padded(encoded.unsafe, 9), safe=padded(encoded.safe, 7),
                                 neutral=padded(encoded.neutral, 8))
    with torch.inference_mode():
        collected = nodes.CollectActivations.execute(wan, zeroed, 64, 64, 1, "2", 0, "default", 0, -1)[0]
        unsafe = torch.stack([diffusion.text_embedding(c[0][0][:, :9]).double().mean(1)[0] for c in zeroed.unsafe])
        safe = torch.stack([diffusion.text_embedding(c[0][0][:, :7]).double().mean(1)[0] for c in zeroed.safe])
    fitted = collected.fitter.fit(method="mean").vectors["blocks.0.cross_attn.v"].double()
    torch.testing.assert_close(fitted, (unsafe - safe).mean(0), rtol=1e-4, atol=1e-5)


def test_edited_layers_ignore_the_direction_and_the_base_model_is_untouched(nodes, wan, clip, basis, effective_weights):
    before = generate(wan, clip)
    patched = nodes.ApplyUnlearning.execute(wan, basis, 1.0, True, "all in vector", 0, -1, "zero")
    model = patched[0]
    assert patched.ui["video_unlearning"][0] == {"enabled": True, "strength": 1.0, "concept": "Rolex", "layers": len(basis.layers)}
    keys = [f"diffusion_model.{layer}.weight" for layer in basis.layers]
    edited = effective_weights(model, keys)
    for layer, key in zip(basis.layers, keys):
        d = basis.subspace(layer)[:, 0]
        x = torch.randn(7, d.shape[0])
        weight = edited[key]
        torch.testing.assert_close(x @ weight.T, (x + 3.0 * d) @ weight.T, atol=2e-5, rtol=1e-5)
    unlearned = generate(model, clip)
    after = generate(wan, clip)
    assert torch.equal(before, after), "the unpatched model changed after the patched one ran"
    assert not torch.equal(before, unlearned)
    assert all(not w.requires_grad for w in edited.values())


def test_disabled_is_identity_and_strength_scales(nodes, wan, basis, effective_weights):
    disabled = nodes.ApplyUnlearning.execute(wan, basis, 1.0, False, "all in vector", 0, -1, "zero")
    assert disabled[0].patches == {} and disabled.ui["video_unlearning"][0]["layers"] == 0
    key = f"diffusion_model.{basis.layers[0]}.weight"
    base = effective_weights(wan, [key])[key]
    full = effective_weights(nodes.ApplyUnlearning.execute(wan, basis, 1.0, True, "all in vector", 0, -1, "zero")[0], [key])[key]
    half = effective_weights(nodes.ApplyUnlearning.execute(wan, basis, 0.5, True, "all in vector", 0, -1, "zero")[0], [key])[key]
    torch.testing.assert_close(half - base, 0.5 * (full - base), atol=1e-6, rtol=1e-4)
    zero = effective_weights(nodes.ApplyUnlearning.execute(wan, basis, 0.0, True, "all in vector", 0, -1, "zero")[0], [key])[key]
    torch.testing.assert_close(zero, base, atol=1e-7, rtol=0)


def test_affine_target_patches_bias_and_layer_groups_narrow(nodes, wan, basis):
    model = nodes.ApplyUnlearning.execute(wan, basis, 1.0, True, "cross_attn.k+v", 1, 1, "safe_mean")[0]
    patched_keys = set(model.patches)
    assert patched_keys == {f"diffusion_model.blocks.1.cross_attn.{p}.{w}" for p in "kv" for w in ("weight", "bias")}


def test_lora_export_through_stock_loader_matches_apply(nodes, wan, basis, tmp_path, effective_weights):
    import folder_paths
    import nodes as comfy_nodes

    folder_paths.add_model_folder_path("loras", str(tmp_path), is_default=True)
    nodes.ExportLoRA.execute(wan, basis, 0.8, "safe_mean", "unlearning/test")
    name = "unlearning/test_00001.safetensors"
    assert name in folder_paths.get_filename_list("loras")
    loaded = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(wan, name, 1.0)[0]
    applied = nodes.ApplyUnlearning.execute(wan, basis, 0.8, True, "all in vector", 0, -1, "safe_mean")[0]
    keys = [f"diffusion_model.{layer}.{w}" for layer in basis.layers for w in ("weight", "bias")]
    assert set(loaded.patches) == set(applied.patches) == set(keys)
    via_lora, via_apply = effective_weights(loaded, keys), effective_weights(applied, keys)
    for key in keys:
        assert (via_lora[key] - via_apply[key]).abs().max() <= 1e-5, key


def test_stacks_with_a_lora_in_either_order(nodes, wan, basis, tmp_path, effective_weights):
    import folder_paths
    import nodes as comfy_nodes
    from safetensors.torch import save_file

    folder_paths.add_model_folder_path("loras", str(tmp_path), is_default=True)
    layer = "blocks.0.ffn.0"
    weight = wan.model.diffusion_model.get_submodule(layer).weight
    save_file({f"diffusion_model.{layer}.lora_up.weight": torch.randn(weight.shape[0], 2) * 0.01,
               f"diffusion_model.{layer}.lora_down.weight": torch.randn(2, weight.shape[1]),
               f"diffusion_model.{layer}.alpha": torch.tensor(2.0)}, str(tmp_path / "style.safetensors"))
    loader = comfy_nodes.LoraLoaderModelOnly()
    first = nodes.ApplyUnlearning.execute(loader.load_lora_model_only(wan, "style.safetensors", 1.0)[0], basis, 1.0,
                                          True, "cross_attn.k+v", 0, -1, "zero")[0]
    second = loader.load_lora_model_only(nodes.ApplyUnlearning.execute(wan, basis, 1.0, True, "cross_attn.k+v", 0, -1,
                                                                       "zero")[0], "style.safetensors", 1.0)[0]
    keys = [f"diffusion_model.{layer}.weight", "diffusion_model.blocks.0.cross_attn.k.weight"]
    a, b = effective_weights(first, keys), effective_weights(second, keys)
    for key in keys:
        torch.testing.assert_close(a[key], b[key])
    base = effective_weights(wan, keys)
    assert not torch.equal(a[keys[0]], base[keys[0]]) and not torch.equal(a[keys[1]], base[keys[1]])


def test_save_load_through_the_folder_and_names_cannot_escape(nodes, basis, tmp_path):
    import folder_paths

    folder_paths.folder_names_and_paths["refusal_vectors"] = ([str(tmp_path)], {".safetensors"})
    nodes.SaveRefusalVector.execute(basis, "rolex/test")
    name = "rolex/test_00001.safetensors"
    assert nodes.LoadRefusalVector.validate_inputs(name) is True
    loaded = nodes.LoadRefusalVector.execute(name)[0]
    assert loaded.layers == basis.layers and torch.equal(loaded.directions[basis.layers[0]], basis.directions[basis.layers[0]])
    for bad in ("../escape", "/etc/passwd", "a/../../b"):
        with pytest.raises(ValueError, match="prefix"):
            nodes.SaveRefusalVector.execute(basis, bad)
    assert "not in models/refusal_vectors" in nodes.LoadRefusalVector.validate_inputs("../../secret.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        nodes.LoadRefusalVector.execute("corrupt.safetensors")


def test_wrong_architecture_and_width_fail_clearly(nodes, wan, basis, tiny):
    import dataclasses

    foreign = dataclasses.replace(basis, model_family="hunyuan_video")
    with pytest.raises(ValueError, match="measured on a 'hunyuan_video' model.*MODEL is 'wan'"):
        nodes.ApplyUnlearning.execute(wan, foreign, 1.0, True, "all in vector", 0, -1, "zero")
    renamed = dataclasses.replace(basis, layers=["double_blocks.0.txt_mlp.0"],
                                  vectors={"double_blocks.0.txt_mlp.0": basis.vectors[basis.layers[0]]},
                                  bases={"double_blocks.0.txt_mlp.0": basis.bases[basis.layers[0]]},
                                  directions={"double_blocks.0.txt_mlp.0": basis.directions[basis.layers[0]]},
                                  safe_means={"double_blocks.0.txt_mlp.0": basis.safe_means[basis.layers[0]]},
                                  scores={"double_blocks.0.txt_mlp.0": basis.scores[basis.layers[0]]}, subspaces=None)
    with pytest.raises(ValueError, match="no layer of the refusal vector"):
        nodes.ApplyUnlearning.execute(wan, renamed, 1.0, True, "all in vector", 0, -1, "zero")
    with pytest.raises(ValueError, match="unsupported model.*wan"):
        from comfyui_video_unlearning.nodes.adapters import adapter_for

        adapter_for(type("FakePatcher", (), {"model": object()})())
    with pytest.raises(ValueError, match="outside this model's blocks"):
        nodes.ApplyUnlearning.execute(wan, basis, 1.0, True, "all in vector", 5, -1, "zero")


def test_interrupt_stops_collection_and_removes_hooks(nodes, wan, encoded):
    import comfy.model_management

    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "2", 0, "all", 0, -1)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    for name, module in wan.model.diffusion_model.named_modules():
        assert not module._forward_pre_hooks, f"hook left on {name}"


def test_fp8_model_still_removes_the_direction(nodes, encoded, tiny):
    """fp8 weights: baking W' and re-quantising left 4.3-4.5 % of |W d| (measured); the weight wrapper
    applied at compute dtype removes the direction to float precision."""
    import comfy.model_management

    fp8 = tiny.load_tiny_wan(model_options={"dtype": torch.float8_e4m3fn})
    activations = nodes.CollectActivations.execute(fp8, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    basis = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    patched = nodes.ApplyUnlearning.execute(fp8, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    assert len(patched.weight_wrapper_patches) == len(basis.layers)
    comfy.model_management.unload_all_models()
    comfy.model_management.load_models_gpu([patched])
    try:
        for layer in basis.layers:
            module = patched.model.diffusion_model.get_submodule(layer)
            assert module.weight.dtype == torch.float8_e4m3fn
            d = basis.subspace(layer)[:, 0]
            x = torch.randn(3, 1, d.shape[0])
            change = (module(x + 3.0 * d) - module(x)).norm() / (3.0 * module.weight.float().norm())
            assert change < 1e-5, (layer, float(change))
    finally:
        comfy.model_management.unload_all_models()
