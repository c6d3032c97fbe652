"""The nodes on a real ComfyUI, in process, with a tiny Wan 2.1 that ComfyUI's own loader detects."""

from __future__ import annotations

import dataclasses
import json
import os

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
    assert message.startswith("Pair Encoder: pairs: line 2:") and "exactly one '|'" in message
    assert nodes.PairEncoder.validate_inputs(pairs=PAIRS) is True
    assert "timesteps" in nodes.CollectActivations.validate_inputs(timesteps="1.5, x")
    # one neutral prompt has no variation: the contrast was silently off (the result of alpha 0)
    assert "neutral_prompts: one distinct prompt has no variation" in nodes.PairEncoder.validate_inputs(
        pairs=PAIRS, neutral_prompts="a cat on a sofa")
    assert "one distinct prompt (repeated lines count once)" in nodes.PairEncoder.validate_inputs(
        neutral_prompts="a cat on a sofa\na cat on a sofa")
    assert "one distinct prompt has no" in nodes.PairEncoder.validate_inputs(neutral_prompts="a cat\n# a note\n\n")
    assert "neutral_prompts: line 2: 'a Rolex watch | a watch' holds '|'" in nodes.PairEncoder.validate_inputs(
        neutral_prompts="a cat\na Rolex watch | a watch")
    assert nodes.PairEncoder.validate_inputs(pairs=PAIRS, neutral_prompts="") is True  # the safe sides stand in


def test_pair_encoder_checks_a_linked_text_and_what_the_encoder_receives(nodes, clip):
    """A linked pairs text is first read when the node runs: its errors name the node too. Sides that differ as text
    but reach the model as one encoding (an embedding ComfyUI cannot find is dropped; here a weight of 1.0) measured
    nothing and passed."""
    with pytest.raises(ValueError, match="^Pair Encoder: pairs: line 2: expected exactly one"):
        nodes.PairEncoder.execute(clip, "a | b\nno separator\nc | d", NEUTRAL, "Rolex")
    same = PAIRS + "\n(a watch on a table:1.0) | a watch on a table"
    with pytest.raises(ValueError, match="^Pair Encoder: line 6: both sides reach the model as the same text encoding"):
        nodes.PairEncoder.execute(clip, same, NEUTRAL, "Rolex")


def test_image_to_video_pairs_batch_with_their_neutral_prompts(nodes, clip):
    """With a CLIP vision output per side, the neutral prompts take the safe side's, so every prompt batches with the
    others (Collect Activations and Unlearning Check run pairs and neutral prompts in one batch; one image-less
    prompt made the stacking fail); one side alone is refused with the fix."""
    import comfy.clip_vision

    from comfyui_video_unlearning.nodes.check import negative_row
    from comfyui_video_unlearning.nodes.conditioning import stack_conditionings

    def vision(value):
        out = comfy.clip_vision.Output()
        out.penultimate_hidden_states = torch.full((1, 257, 1280), value)
        out.last_hidden_state = torch.full((1, 257, 1280), value)
        return out

    unsafe, safe = vision(1.0), vision(0.0)
    with torch.inference_mode():
        encoded = nodes.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex", unsafe_clip_vision_output=unsafe,
                                            safe_clip_vision_output=safe)[0]
        negative = negative_row(clip.encode_from_tokens_scheduled(clip.tokenize("blurry")), list(encoded.neutral))
        rows = [*encoded.unsafe, *encoded.safe, *encoded.neutral, negative]
        stacked = stack_conditionings(rows)[0][1]["clip_vision_output"].penultimate_hidden_states
        with pytest.raises(ValueError, match="only the unsafe side.*to both unsafe_clip_vision_output and safe"):
            nodes.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex", unsafe_clip_vision_output=unsafe)
    assert stacked.shape[0] == len(rows)
    assert stacked[:5].eq(1.0).all() and stacked[5:].eq(0.0).all()  # unsafe pairs' image; the safe one elsewhere


def test_image_to_video_wan_runs_the_whole_graph(nodes, clip, tiny):
    """A tiny Wan 2.1 I2V that ComfyUI's detection loads as ``WAN21_I2V``: pairs with CLIP vision outputs collect,
    fit, check (with the sampler's text-only negative prompt) and unlearn, and sampling with the image condition
    changes only on the patched clone."""
    import comfy.clip_vision
    import comfy.model_management
    import nodes as comfy_nodes

    from comfyui_video_unlearning.nodes.check import UnlearningCheck

    def vision(value):
        out = comfy.clip_vision.Output()
        out.penultimate_hidden_states = torch.full((1, 257, 1280), value)
        out.last_hidden_state = torch.full((1, 257, 1280), value)
        return out

    model = tiny.load_tiny_wan(state=tiny.tiny_wan_state_dict(0, i2v=True))
    assert type(model.model.model_config).__name__ == "WAN21_I2V"
    unsafe, safe = vision(0.5), vision(-0.5)
    images_read = []  # the image embedding runs: the vision outputs reach the model in every step
    hook = model.model.diffusion_model.img_emb.register_forward_hook(lambda m, a, o: images_read.append(o.shape[0]))
    validation = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5))
    try:
        with torch.inference_mode():
            encoded = nodes.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex", unsafe_clip_vision_output=unsafe,
                                                safe_clip_vision_output=safe)[0]
            held_out = nodes.PairEncoder.execute(clip, validation, NEUTRAL, "Rolex", unsafe_clip_vision_output=unsafe,
                                                 safe_clip_vision_output=safe)[0]
            activations = nodes.CollectActivations.execute(model, encoded, 64, 64, 1, "2", 0, "default", 0, -1)[0]
            basis = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
            negative = clip.encode_from_tokens_scheduled(clip.tokenize("blurry"))
            out = UnlearningCheck.execute(model, basis, "0, 0.5, 1", "default", 0, -1, "safe_mean", "none", 64, 64, 1,
                                          "0.1", 0, validation_pairs=held_out, negative=negative, cfg=5.0)
            strength, _, table = out.args
            patched = nodes.ApplyUnlearning.execute(model, basis, strength, True, "all in vector", 0, -1,
                                                    "safe_mean")[0]
            cond = [[c[0][0], {**c[0][1], "clip_vision_output": unsafe}] for c in encoded.unsafe[:1]]
            latent = {"samples": torch.zeros(1, 16, 2, 8, 8)}

            def generate(m):
                return comfy_nodes.common_ksampler(m, 3, 2, 2.0, "euler", "simple", cond, negative, latent)[0]["samples"]

            before, unlearned, after = generate(model), generate(patched), generate(model)
    finally:
        hook.remove()
        comfy.model_management.unload_all_models()
    assert len(images_read) >= 4 and max(images_read) > 1  # collect, check (batched rows) and the samplers
    summary = out.ui["video_unlearning_check"][0]
    assert "guided" in table and summary["strength"] == strength and strength > 0
    assert torch.equal(before, after) and not torch.equal(before, unlearned)


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
    torch.testing.assert_close(fitted["blocks.1.cross_attn.k"].vector.double(), expected, rtol=1e-4, atol=1e-5)
    # The text-side default group runs every prompt in one batched forward: the same rows, one timestep.
    batched = nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "2", 0, "default", 0, -1)[0]
    assert len(batched.sigmas) == 1
    torch.testing.assert_close(batched.fitter.fit(method="mean")["blocks.1.cross_attn.k"].vector.double(), expected,
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
    fitted = collected.fitter.fit(method="mean")["blocks.0.cross_attn.v"].vector.double()
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


def test_a_lora_on_the_edited_layers_is_measured_and_edited_with_them(nodes, wan, clip, encoded, tiny,
                                                                    effective_weights):
    """A LoRA loaded before the pack's nodes on the very layers they edit (text-side k/v): Collect Activations measures
    the LoRA'd model and Apply Unlearning accepts its vector (both fingerprint the file's weights); the edit is taken
    from the weights the MODEL uses, so at strength 1 (target zero) no part of the direction is left, LoRA included;
    a second Apply changes nothing, and Unlearning Check refuses a MODEL that already carries the edit."""
    from comfyui_video_unlearning.nodes.check import UnlearningCheck

    styled = tiny.with_text_lora(wan)
    activations = nodes.CollectActivations.execute(styled, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    vector = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    patched = nodes.ApplyUnlearning.execute(styled, vector, 1.0, True, "all in vector", 0, -1, "zero")[0]
    twice = nodes.ApplyUnlearning.execute(patched, vector, 1.0, True, "all in vector", 0, -1, "zero")[0]
    keys = [f"diffusion_model.{layer}.weight" for layer in vector.layers]
    lora, once, again = (effective_weights(m, keys) for m in (styled, patched, twice))
    for key, layer in zip(keys, vector.layers):
        u = vector.subspace(layer).float()
        assert (once[key] @ u).norm() < 1e-5 * (lora[key] @ u).norm()
        torch.testing.assert_close(again[key], once[key], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="already carries Apply Unlearning's edit.*from before Apply Unlearning"):
        UnlearningCheck.execute(patched, vector, "0, 1", "all in vector", 0, -1, "zero", "none", 64, 64, 1, "0.1", 0,
                                validation_pairs=nodes.PairEncoder.execute(clip, HELD_OUT, NEUTRAL, "Rolex")[0])


def test_the_largest_seed_measures(nodes, wan, encoded):
    """Rows add their index to the seed; at the top of the widget's range they wrap instead of overflowing."""
    top = nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "1", 2**64 - 1, "default", 0, -1)[0]
    assert top.fitter.fit(rank=4).layers


def test_save_load_through_the_folder_and_names_cannot_escape(nodes, basis, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    monkeypatch.delitem(folder_paths.folder_names_and_paths, "refusal_vectors", raising=False)
    tmp_path = tmp_path / "refusal_vectors"
    nodes.SaveRefusalVector.execute(basis, "rolex/test")
    name = "rolex/test_00001.safetensors"
    assert nodes.LoadRefusalVector.validate_inputs(name) is True
    loaded = nodes.LoadRefusalVector.execute(name)[0]
    assert loaded.layers == basis.layers and torch.equal(loaded[basis.layers[0]].direction, basis[basis.layers[0]].direction)
    for bad in ("../escape", "/etc/passwd", "a/../../b", "a//b", ".hidden", "a\\b", ""):
        with pytest.raises(ValueError, match="prefix"):
            nodes.SaveRefusalVector.execute(basis, bad)
        assert "filename prefix" in nodes.SaveRefusalVector.validate_inputs(filename_prefix=bad)
        assert "filename prefix" in nodes.ExportLoRA.validate_inputs(filename_prefix=bad)
    for good in ("wan2.1_rolex", "Rolex_été/v1.2", "my vectors/rolex"):
        assert nodes.SaveRefusalVector.validate_inputs(filename_prefix=good) is True
    nodes.SaveRefusalVector.execute(basis, "wan2.1_rolex")
    first = tmp_path / "wan2.1_rolex_00001.safetensors"
    signature = nodes.LoadRefusalVector.fingerprint_inputs(first.name)
    assert signature[0] == first.name
    content, stat = first.read_bytes(), first.stat()
    # rewritten in place with other numbers of the same size, within the file system's time resolution (FAT, SMB):
    # size and modification time, the signature until 2026-12-06, did not see it and ComfyUI served the old vector
    first.write_bytes(content[:-4] + bytes(4))
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert nodes.LoadRefusalVector.fingerprint_inputs(first.name) != signature
    first.write_bytes(content)  # the same bytes back: ComfyUI's cache answers, as it should
    assert nodes.LoadRefusalVector.fingerprint_inputs(first.name) == signature
    # a deleted file's number is not reused (a loader that read it under that name would answer from the cache)
    nodes.SaveRefusalVector.execute(basis, "wan2.1_rolex")
    first.unlink()
    nodes.SaveRefusalVector.execute(basis, "wan2.1_rolex")
    assert sorted(p.name for p in tmp_path.glob("wan2.1_rolex_*")) == ["wan2.1_rolex_00002.safetensors",
                                                                        "wan2.1_rolex_00003.safetensors"]
    # names differing in case only are one file on Windows and macOS: counted together, never overwritten
    nodes.SaveRefusalVector.execute(basis, "WAN2.1_Rolex")
    assert (tmp_path / "WAN2.1_Rolex_00004.safetensors").is_file()
    assert "not in models/refusal_vectors" in nodes.LoadRefusalVector.validate_inputs("../../secret.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        nodes.LoadRefusalVector.execute("corrupt.safetensors")


def test_wrong_architecture_and_width_fail_clearly(nodes, wan, basis, tiny):
    import dataclasses

    foreign = dataclasses.replace(basis, model_family="hunyuan_video")
    with pytest.raises(ValueError, match="measured on a 'hunyuan_video' model.*MODEL is 'wan'"):
        nodes.ApplyUnlearning.execute(wan, foreign, 1.0, True, "all in vector", 0, -1, "zero")
    renamed = dataclasses.replace(basis, records={"double_blocks.0.txt_mlp.0": basis[basis.layers[0]]})
    with pytest.raises(ValueError, match="1 of the 1 layers of this refusal vector .* not in this wan MODEL"):
        nodes.ApplyUnlearning.execute(wan, renamed, 1.0, True, "all in vector", 0, -1, "zero")
    first_block = basis.select([layer for layer in basis.layers if layer.startswith("blocks.0.")])
    with pytest.raises(ValueError, match="no layer of the refusal vector"):
        nodes.ApplyUnlearning.execute(wan, first_block, 1.0, True, "all in vector", 1, 1, "zero")
    with pytest.raises(ValueError, match="unsupported model.*wan"):
        from comfyui_video_unlearning.nodes.adapters import adapter_for

        adapter_for(type("FakePatcher", (), {"model": object()})())
    with pytest.raises(ValueError, match="block_start 5 is beyond the last block"):
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


@pytest.mark.parametrize("kind", ["scaled fp8 file", "fp8_e4m3fn_fast"])
def test_fp8_matrix_multiplication_samples_with_the_edit_rounded_to_fp8(nodes, encoded, clip, tiny, monkeypatch, kind):
    """On a GPU with fp8 compute, ComfyUI multiplies in fp8 (``comfy.ops.fp8_linear``: a scaled-fp8 file such as the
    official Wan 2.2 experts, or weight_dtype fp8_e4m3fn_fast) and hands the weight wrapper the fp8 weight itself.
    The wrapper did fp8 arithmetic, which torch does not have: sampling failed ('"mul_cpu_reduced_float" not
    implemented for Float8_e4m3fn'). It now edits in float32 and rounds W' to the nearest fp8 value, so the layer
    keeps what rounding W' to fp8 keeps of the direction, as a LoRA there does. The CPU has no fp8 compute: the
    test says it has, and torch's CPU ``_scaled_mm`` runs the product."""
    import comfy.model_management as mm
    import comfy.ops

    monkeypatch.setattr(mm, "supports_fp8_compute", lambda device=None: True)
    model = tiny.load_tiny_wan_as(kind)
    activations = nodes.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    basis = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    patched = nodes.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    mm.unload_all_models()
    stored = {}
    for layer in basis.layers:
        module = model.model.diffusion_model.get_submodule(layer)
        scale = module.scale_weight.float() if getattr(module, "scale_weight", None) is not None else torch.ones(())
        stored[layer] = (module.weight.float() * scale, scale)
    mm.load_models_gpu([patched])
    try:
        for layer in basis.layers:
            module, u = patched.model.diffusion_model.get_submodule(layer), basis.subspace(layer)
            fp8_weight, _ = comfy.ops.cast_bias_weight(module, torch.zeros(1, 1, u.shape[0]), dtype=torch.float8_e4m3fn,
                                                       bias_dtype=torch.float32)  # as fp8_linear reads it
            weight, scale = stored[layer]
            assert fp8_weight.dtype == torch.float8_e4m3fn, layer
            kept = float(((fp8_weight.float() * scale) @ u[:, 0]).norm() / (weight @ u[:, 0]).norm())
            assert kept < 0.08, (layer, kept)  # 2.4-3.1 % on the scaled file, 4.2-5.0 % on the unscaled tiny weights
    finally:
        mm.unload_all_models()
    unlearned = generate(patched, clip)
    assert torch.isfinite(unlearned).all() and not torch.equal(unlearned, generate(model, clip))


@pytest.mark.parametrize("kind", ["bf16", "fp8_e4m3fn", "scaled fp8 file"])
def test_a_saved_model_carries_the_edit(nodes, encoded, tiny, tmp_path, kind):
    """ComfyUI's Save Model / Save Checkpoint write what the loaded modules hold, patches baked, weight wrappers not.
    Until 2026-12-06 an fp8 layer's edit was a wrapper alone, so a saved fp8 model kept all of the concept (and,
    with target safe_mean, the moved bias). The edit is now also a patch there: the file holds W' re-quantised."""
    import comfy.model_management as mm
    import comfy.sd
    import comfy.utils

    model = tiny.load_tiny_wan_as(kind)
    activations = nodes.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    basis = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    patched = nodes.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    mm.unload_all_models()

    def weights(state, prefix=""):
        out = {}
        for layer in basis.layers:
            weight = state[f"{prefix}{layer}.weight"].float()
            scale = state.get(f"{prefix}{layer}.scale_weight")
            out[layer] = weight if scale is None else weight * scale.float()
        return out

    before = weights(model.model.diffusion_model.state_dict())
    path = str(tmp_path / "unlearned.safetensors")
    comfy.sd.save_checkpoint(path, patched)
    saved = weights(comfy.utils.load_torch_file(path), "model.diffusion_model.")
    for layer in basis.layers:
        d = basis.subspace(layer)[:, 0]
        kept = float((saved[layer] @ d).norm() / (before[layer] @ d).norm())
        assert kept < (3e-3 if kind == "bf16" else 0.06), (layer, kept)  # bf16 1.5-2e-3, fp8 3.1-5.0 %


def test_chained_vectors_on_fp8_weights_run_the_chained_edit_and_strength_zero_changes_nothing(nodes, encoded, tiny,
                                                                                                 clip):
    """Two Apply Unlearning nodes in a row with vectors whose directions overlap. ComfyUI applies every patch before
    any weight wrapper, so with one wrapper per Apply the first pinned its direction after the second's patch had
    moved it: 1.7 % of the first concept kept where the chained edit, as a bf16 model runs it and as Save Model
    writes it, kept 23 %. A later Apply now replaces the earlier wrapper by one over both subspaces. The chained edit
    itself is now Combine's, W - W P(span(U1, U2)) (it was W (I - P1)(I - P2), which put back part of the first
    concept; test_vectors_in_series_make_the_combined_vectors_edit), so here it is that. And strength 0 adds nothing:
    a zero patch baked into fp8 weights re-rounded some of them."""
    import comfy.model_management as mm
    import comfy.ops

    other = nodes.PairEncoder.execute(clip, "\n".join(f"a shiny Rolex car number {i} on a road | a car number {i} on "
                                                       "a road" for i in range(5)), NEUTRAL, "Rolex car")[0]
    model = tiny.load_tiny_wan(model_options={"dtype": torch.float8_e4m3fn})
    first, second = (nodes.RefusalVectorNode.execute(nodes.CollectActivations.execute(
        model, pairs, 64, 64, 1, "1", 0, "default", 0, -1)[0], "cpca", 1, 1.0)[0] for pairs in (encoded, other))
    once = nodes.ApplyUnlearning.execute(model, first, 1.0, True, "all in vector", 0, -1, "zero")[0]
    chained = nodes.ApplyUnlearning.execute(once, second, 1.0, True, "all in vector", 0, -1, "zero")[0]
    mm.unload_all_models()
    stored = {layer: model.model.diffusion_model.get_submodule(layer).weight.float().clone() for layer in first.layers}
    mm.load_models_gpu([chained])
    try:
        for layer in first.layers:
            u1, u2 = first.subspace(layer), second.subspace(layer)
            assert float((u1.T @ u2).abs()) > 0.1, layer  # the directions overlap, or the test shows nothing
            weight, _ = comfy.ops.cast_bias_weight(chained.model.diffusion_model.get_submodule(layer),
                                                   torch.zeros(1, 1, u1.shape[0]))
            w0 = stored[layer]
            span = torch.linalg.svd(torch.cat([u1, u2], 1).double(), full_matrices=False)[0].float()  # [in, 2]
            exact = w0 - (w0 @ span) @ span.T
            torch.testing.assert_close(weight.float() @ torch.cat([u1, u2], 1), exact @ torch.cat([u1, u2], 1),
                                       atol=1e-5 * float((w0 @ u1).norm()), rtol=0)
            assert len(chained.weight_wrapper_patches[f"diffusion_model.{layer}.weight"]) == 1
    finally:
        mm.unload_all_models()
    zero = nodes.ApplyUnlearning.execute(model, first, 0.0, True, "all in vector", 0, -1, "safe_mean")[0]
    assert zero.patches == {} and not zero.weight_wrapper_patches
    assert torch.equal(generate(zero, clip), generate(model, clip))


def test_a_second_apply_on_fp8_weights_changes_nothing(nodes, encoded, tiny):
    """On fp8 weights the edit is a weight wrapper, not a patch: a second Apply took W U from the wrapped weight
    (zero along the direction after the first), so with target safe_mean it moved no bias again (it added the same
    bias change a second time until 2026-12-06). A later Apply now removes only what the earlier edits do not cover
    (vectors in series make Combine's edit), so the same vector again adds no patch at all, weight or bias, and the
    wrappers stay the first Apply's."""
    fp8 = tiny.load_tiny_wan(model_options={"dtype": torch.float8_e4m3fn})
    activations = nodes.CollectActivations.execute(fp8, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    basis = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    once = nodes.ApplyUnlearning.execute(fp8, basis, 1.0, True, "all in vector", 0, -1, "safe_mean")[0]
    twice = nodes.ApplyUnlearning.execute(once, basis, 1.0, True, "all in vector", 0, -1, "safe_mean")[0]
    half = nodes.ApplyUnlearning.execute(nodes.ApplyUnlearning.execute(fp8, basis, 0.5, True, "all in vector", 0, -1,
                                                                      "safe_mean")[0],
                                         basis, 0.5, True, "all in vector", 0, -1, "safe_mean")[0]
    for layer in basis.layers:
        for key in (f"diffusion_model.{layer}.bias", f"diffusion_model.{layer}.weight"):
            assert len(once.patches[key]) == len(twice.patches[key]) == len(half.patches[key]) == 1, key
            assert twice.weight_wrapper_patches[key] == once.weight_wrapper_patches[key], key


BLOOD = "\n".join(f"a bloody knife number {i} on a table | a knife number {i} on a table" for i in range(5))


def _loaded_weights(patcher, layers):
    """Each layer's weight as the loaded ``patcher``'s forward uses it (patches baked, weight wrappers run), float32."""
    import comfy.model_management as mm
    import comfy.ops

    mm.unload_all_models()
    mm.load_models_gpu([patcher])
    try:
        out = {}
        for layer in layers:
            module = patcher.model.diffusion_model.get_submodule(layer)
            weight, _ = comfy.ops.cast_bias_weight(module, torch.zeros(1, 1, module.weight.shape[1]))
            out[layer] = weight.float().clone()
        return out
    finally:
        mm.unload_all_models()


@pytest.mark.parametrize("kind", ["bf16", "fp8_e4m3fn"])
def test_vectors_in_series_make_the_combined_vectors_edit(nodes, encoded, tiny, clip, kind):
    """Two Apply Unlearning nodes in series with two concepts' vectors on the same layers. The later one took W' U2 from
    the edited weight, so the chain was W (I - P1)(I - P2), which put back part of the first concept: 23-50 % of
    |W d1| kept at strength 1 (directions at cosine 0.25-0.68) where Combine Refusal Vectors -> one Apply keeps 0.2 %.
    A later Apply now removes only the part of its subspace orthogonal to the earlier edits: the chain is Combine's
    edit, in either order and at strength 1 and 0.5."""
    model = tiny.load_tiny_wan_as(kind)
    blood = nodes.PairEncoder.execute(clip, BLOOD, NEUTRAL, "blood")[0]
    rolex, knife = (nodes.RefusalVectorNode.execute(nodes.CollectActivations.execute(
        model, pairs, 64, 64, 1, "1", 0, "default", 0, -1)[0], "cpca", 4, 1.0)[0] for pairs in (encoded, blood))
    combined = nodes.CombineRefusalVectors.execute(rolex, knife)[0]
    layers = rolex.layers
    assert list(knife.layers) == list(layers)

    def apply(patcher, vector, strength):
        return nodes.ApplyUnlearning.execute(patcher, vector, strength, True, "all in vector", 0, -1, "zero")[0]

    base = _loaded_weights(model, layers)
    overlap = max(float((rolex.subspace(layer).T @ knife.subspace(layer)).abs().max()) for layer in layers)
    assert overlap > 0.1  # the subspaces overlap, or the chain's old form shows nothing
    for strength in (1.0, 0.5):
        one = _loaded_weights(apply(model, combined, strength), layers)
        for first, second in ((rolex, knife), (knife, rolex)):
            chain = _loaded_weights(apply(apply(model, first, strength), second, strength), layers)
            for layer in layers:
                span = combined.subspace(layer)  # [in, c1 + c2]
                scale = float((base[layer] @ span).norm())
                # bf16: both are rounded to bf16 (4e-3 of a weight); fp8: the wrapper runs each edit exactly on U
                torch.testing.assert_close(chain[layer] @ span, one[layer] @ span, rtol=0,
                                           atol=(1e-2 if kind == "bf16" else 1e-4) * scale)
                for vector in (rolex, knife):
                    d = vector.subspace(layer)[:, 0]
                    kept = float((chain[layer] @ d).norm() / (base[layer] @ d).norm())
                    assert abs(kept - (1.0 - strength)) < 0.01, (layer, vector.concept, strength, kept)


@pytest.mark.parametrize("kind", ["bf16", "fp8_e4m3fn"])
def test_apply_in_series_keeps_every_concept_removed_whatever_comes_between(nodes, encoded, tiny, clip, kind):
    """A later Apply leaves an earlier edit's subspace to it only when that edit removed it as completely and nothing
    came after it; otherwise it removes that subspace again. Leaving it (two reviews' measures): after Rolex at 0.5,
    blood at 1 kept 0.34-0.50 of its direction; with a LoRA of 1 % of the weights between Rolex and blood at 1, Rolex
    came back to 0.50; Rolex at 1.01 after blood at 1 gave back 0.57 of blood; blood at 1 after Rolex at 3 kept 1.45
    of its direction (an edit at 3 negates rather than removes)."""
    model = tiny.load_tiny_wan_as(kind)
    blood = nodes.PairEncoder.execute(clip, BLOOD, NEUTRAL, "blood")[0]
    rolex, knife = (nodes.RefusalVectorNode.execute(nodes.CollectActivations.execute(
        model, pairs, 64, 64, 1, "1", 0, "default", 0, -1)[0], "cpca", 4, 1.0)[0] for pairs in (encoded, blood))
    layers = rolex.layers

    def apply(patcher, vector, strength):
        return nodes.ApplyUnlearning.execute(patcher, vector, strength, True, "all in vector", 0, -1, "zero")[0]

    def kept(patcher, vector):
        weights = _loaded_weights(patcher, layers)
        return max(float((weights[l] @ vector.subspace(l)[:, 0]).norm() / (base[l] @ vector.subspace(l)[:, 0]).norm())
                   for l in layers)

    def with_lora(patcher, scale):
        patched = patcher.clone()
        generator = torch.Generator().manual_seed(0)
        accepted = patched.add_patches({f"diffusion_model.{l}.weight": ("diff", (scale * base[l].std() * torch.randn(
            base[l].shape, generator=generator),)) for l in layers})
        assert len(accepted) == len(layers)
        return patched

    base = _loaded_weights(model, layers)
    bf16 = 0.01  # both concepts' directions are removed to bf16's rounding (fp8: the wrapper keeps them exact)
    weaker_first = apply(apply(model, rolex, 0.5), knife, 1.0)
    assert kept(weaker_first, knife) < bf16 and kept(weaker_first, rolex) < bf16  # Rolex raised to the later 1
    for scale in (0.01, 2.5):  # a LoRA between the two Applies, small or large
        lora_between = apply(with_lora(apply(model, rolex, 1.0), scale), knife, 1.0)
        assert kept(lora_between, knife) < bf16 and kept(lora_between, rolex) < bf16, scale
    slightly_stronger = apply(apply(model, knife, 1.0), rolex, 1.01)
    assert kept(slightly_stronger, knife) < bf16 and kept(slightly_stronger, rolex) < bf16
    overshoot_first = apply(apply(model, rolex, 3.0), knife, 1.0)
    assert kept(overshoot_first, knife) < bf16 and kept(overshoot_first, rolex) < bf16
    # An earlier edit that removed more still covers its part: blood at 0.5 after Rolex at 1 keeps at most half
    assert kept(apply(apply(model, rolex, 1.0), knife, 0.5), knife) < 0.5 + bf16


def test_an_edit_inside_a_merge_is_recognised(nodes, wan, clip, basis, tmp_path):
    """ModelMergeSimple(base, unlearned) holds the edit inside one nested patch entry. It was taken for no edit:
    Export at ratio 0 wrote an empty LoRA (|up| 3e-8 against 0.24) with the base fingerprint, the check measured on
    top of the edit, and a later Apply could give back the merged concept where the two overlap (a review's
    measure). Now Export and the check refuse it, and a later Apply removes the merged edit's subspace again."""
    from comfy_extras.nodes_model_merging import ModelMergeSimple
    from comfyui_video_unlearning.nodes import check, patching

    with torch.inference_mode():
        edited = nodes.ApplyUnlearning.execute(wan, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
        merged = ModelMergeSimple().merge(wan, edited, 0.5)[0]
        assert patching.edited_layers(merged, list(basis.layers)) == list(basis.layers)
        with pytest.raises(ValueError, match="already carries this refusal vector's edit"):
            patching.lora_state_dict(merged, basis)
        validation = nodes.PairEncoder.execute(clip, "\n".join(
            f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5)), NEUTRAL, "Rolex")[0]
        with pytest.raises(ValueError, match="already carries Apply Unlearning's edit"):
            check.run_unlearning_check(merged, basis, validation, "0, 1", group="default", block_start=0, block_end=-1,
                                       target="zero", width=64, height=64, length=1, timesteps="0.1", seed=0)
        again = nodes.ApplyUnlearning.execute(merged, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
        key = f"diffusion_model.{basis.layers[0]}.weight"
        assert len(again.patches[key]) == len(merged.patches[key]) + 1  # the merged edit is not taken as covering


def _read_lora(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}


def test_lora_export_refuses_a_model_that_already_carries_an_apply_edit(nodes, wan, clip, basis, tmp_path):
    """Exported from a MODEL that already carries Apply Unlearning's edit with the same vector, the LoRA held nothing
    (|up| 1.6e-8 against 0.24) while its metadata named the concept and strength. Another vector's edit on the
    exported layers is refused too: the file was computed on the edited weight while its metadata named only its own
    concept (loaded on the base model it left 0.672 of blood's |W d|); the model from before Apply exports."""
    import folder_paths

    folder_paths.add_model_folder_path("loras", str(tmp_path), is_default=True)
    edited = nodes.ApplyUnlearning.execute(wan, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    with pytest.raises(ValueError, match="already carries this refusal vector's edit.*from before Apply Unlearning"):
        nodes.ExportLoRA.execute(edited, basis, 1.0, "zero", "unlearning/again")
    pairs = "\n".join(f"a shiny Rolex car number {i} on a road | a car number {i} on a road" for i in range(5))
    other = nodes.RefusalVectorNode.execute(nodes.CollectActivations.execute(
        wan, nodes.PairEncoder.execute(clip, pairs, NEUTRAL, "Rolex car")[0], 64, 64, 1, "1", 0, "default", 0, -1)[0],
        "cpca", 1, 1.0)[0]
    from comfyui_video_unlearning.nodes.patching import lora_state_dict

    with pytest.raises(ValueError, match="carries Apply Unlearning's edit with another refusal vector \\('Rolex'\\).*"
                                         "from before Apply Unlearning.*Combine Refusal Vectors"):
        lora_state_dict(edited, other, strength=1.0, target="zero")
    tensors = lora_state_dict(wan, other, strength=1.0, target="zero")
    assert max(float(t.norm()) for key, t in tensors.items() if key.endswith("lora_up.weight")) > 1e-3


def test_lora_export_metadata_names_family_fingerprint_concept_and_strength(nodes, wan, basis, tmp_path):
    import folder_paths

    folder_paths.add_model_folder_path("loras", str(tmp_path), is_default=True)
    nodes.ExportLoRA.execute(wan, basis, 0.8, "zero", "meta/test")
    metadata, tensors = _read_lora(tmp_path / "meta" / "test_00001.safetensors")
    assert metadata["video_unlearning_model_family"] == "wan"
    assert metadata["video_unlearning_model_fingerprint"] == basis.model_fingerprint != ""
    assert metadata["video_unlearning_concept"] == "Rolex"
    assert float(metadata["video_unlearning_strength"]) == 0.8 and metadata["video_unlearning_target"] == "zero"
    assert json.loads(metadata["video_unlearning_layers"]) == list(basis.layers)
    assert metadata["video_unlearning_fp8_layers"] == "0"
    assert {key for key in tensors if key.endswith(".lora_up.weight")} == \
        {f"diffusion_model.{layer}.lora_up.weight" for layer in basis.layers}


def test_lora_export_writes_whole_files_or_none(nodes, wan, basis, tmp_path, monkeypatch):
    """The file appears complete (temp file + os.replace) or not at all: a failing write leaves nothing behind."""
    import folder_paths
    import safetensors.torch

    folder_paths.add_model_folder_path("loras", str(tmp_path), is_default=True)
    real_save = safetensors.torch.save_file

    def fail_halfway(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:  # a partial file, then the disk fills up
            handle.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", fail_halfway)
    with pytest.raises(OSError, match="No space left"):
        nodes.ExportLoRA.execute(wan, basis, 1.0, "zero", "atomic/test")
    assert list((tmp_path / "atomic").iterdir()) == []
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    nodes.ExportLoRA.execute(wan, basis, 1.0, "zero", "atomic/test")
    assert [p.name for p in (tmp_path / "atomic").iterdir()] == ["test_00001.safetensors"]
    assert _read_lora(tmp_path / "atomic" / "test_00001.safetensors")[0]["video_unlearning_concept"] == "Rolex"


def _residual_along_direction(patcher, basis, original):
    """max over layers of |W' d| / |W d|, W' the weight the loaded patcher's forward uses (at compute dtype)."""
    import comfy.model_management

    comfy.model_management.unload_all_models()
    comfy.model_management.load_models_gpu([patcher])
    try:
        worst = 0.0
        for layer in basis.layers:
            module = patcher.model.diffusion_model.get_submodule(layer)
            d = basis.subspace(layer)[:, 0]
            effective = (module(torch.eye(d.shape[0])[None])[0] - module.bias.float()).T  # W' [out, in]
            worst = max(worst, float((effective @ d).norm() / (original[layer] @ d).norm()))
        return worst
    finally:
        comfy.model_management.unload_all_models()


@pytest.mark.parametrize("kind", ["fp8_e4m3fn", "scaled fp8 file"])
def test_lora_on_fp8_weights_leaves_a_few_percent_where_apply_removes_the_direction(nodes, encoded, tiny, tmp_path, kind):
    """What the node's description says: a stock LoRA loader re-quantises the baked edit to fp8 (0.031-0.046 of
    |W d| left, measured), Apply Unlearning's weight wrapper leaves ~1e-6."""
    import folder_paths
    import nodes as comfy_nodes

    from comfyui_video_unlearning.nodes.patching import FP8_LORA_NOTE

    model = tiny.load_tiny_wan_as(kind)
    basis = nodes.RefusalVectorNode.execute(
        nodes.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0], "cpca", 4, 1.0)[0]
    diffusion = model.model.diffusion_model
    original = {layer: diffusion.get_submodule(layer).weight.float()
                * getattr(diffusion.get_submodule(layer), "scale_weight", torch.tensor(1.0)).float() for layer in basis.layers}
    folder_paths.add_model_folder_path("loras", str(tmp_path), is_default=True)
    out = nodes.ExportLoRA.execute(model, basis, 1.0, "zero", f"fp8/{kind}")
    assert out.ui["text"][1] == FP8_LORA_NOTE
    via_lora = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, f"fp8/{kind}_00001.safetensors", 1.0)[0]
    via_apply = nodes.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    lora_residual = _residual_along_direction(via_lora, basis, original)
    apply_residual = _residual_along_direction(via_apply, basis, original)
    assert 0.01 < lora_residual < 0.06, lora_residual
    assert apply_residual < 1e-5, apply_residual


def test_a_vector_measured_on_other_weights_is_refused(nodes, basis, tiny):
    other = tiny.load_tiny_wan(seed=1)  # same family and size, other weights
    with pytest.raises(ValueError, match="measured on other weights.*compute a vector on this model"):
        nodes.ApplyUnlearning.execute(other, basis, 1.0, True, "all in vector", 0, -1, "zero")
    with pytest.raises(ValueError, match="measured on other weights"):
        nodes.ExportLoRA.execute(other, basis, 1.0, "zero", "never_written")
    # A vector of before 2026-12-06 measured on a MODEL with a LoRA hashed the LoRA'd weights: refused as other
    # weights, with a message that blamed only the checkpoint, quantisation or dtype.
    with pytest.raises(ValueError, match="before 2026-12-06 on a MODEL with a LoRA .*: compute it again"):
        nodes.ApplyUnlearning.execute(other, basis, 1.0, True, "all in vector", 0, -1, "zero")


def test_a_vector_with_layers_the_model_lacks_is_refused_not_applied_in_part(nodes, wan, encoded, tiny, monkeypatch):
    """A vector measured on a 4-block Wan of the same width: until 2026-12-06 the layers missing here switched the
    fingerprint check off and were dropped, so Apply edited 4 of its 8 layers of another model without a word, and
    Export wrote this MODEL's fingerprint for it."""
    monkeypatch.setitem(tiny.TINY_WAN, "num_layers", 4)
    deeper = tiny.load_tiny_wan(seed=9)
    monkeypatch.undo()
    vector = nodes.RefusalVectorNode.execute(
        nodes.CollectActivations.execute(deeper, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0], "mean", 1, 1.0)[0]
    assert len(vector.layers) == 8 and vector.model_fingerprint
    refused = "4 of the 8 layers of this refusal vector .Rolex. are not in this wan MODEL .'blocks.2.cross_attn.k'"
    for layers in ("all in vector", "default"):
        with pytest.raises(ValueError, match=refused + r".*another model.*compute a vector on this model"):
            nodes.ApplyUnlearning.execute(wan, vector, 1.0, True, layers, 0, -1, "zero")
    with pytest.raises(ValueError, match=refused):
        nodes.ExportLoRA.execute(wan, vector, 1.0, "zero", "never_written")
    nodes.ApplyUnlearning.execute(deeper, vector, 1.0, True, "all in vector", 0, 1, "zero")  # its own model: fine


def test_load_refuses_a_file_without_a_model_fingerprint(nodes, basis, tmp_path, monkeypatch):
    """Every file the pack writes holds the fingerprint; an emptied one (a hand edit) would skip Apply's check."""
    import folder_paths
    import safetensors.torch
    from safetensors import safe_open

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    monkeypatch.delitem(folder_paths.folder_names_and_paths, "refusal_vectors", raising=False)
    nodes.SaveRefusalVector.execute(basis, "fp")
    path = tmp_path / "refusal_vectors" / "fp_00001.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors, header = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    meta = json.loads(header["video_unlearning"])
    assert meta["model_fingerprint"] == basis.model_fingerprint != ""
    meta["model_fingerprint"] = ""
    safetensors.torch.save_file(tensors, str(path), metadata={**header, "video_unlearning": json.dumps(meta)})
    with pytest.raises(ValueError, match="'fp_00001.safetensors' has an empty model_fingerprint.*edited by hand.*"
                                         "Compute the vector again"):
        nodes.LoadRefusalVector.execute("fp_00001.safetensors")


def test_a_safe_mean_that_would_overflow_the_bias_is_refused(nodes, basis, tiny):
    """A huge safe mean (finite) passed project_edit's float64 check, then ComfyUI cast the patched bias to fp16: Inf,
    and every output of the model was NaN. A file holding one is refused on load (beyond fp16's range); a vector
    built in code is refused by the edit, which names the layer."""
    from comfyui_video_unlearning.core.serialization import SAFE_MEAN_LIMIT

    # the pack's own vectors hold safe means of a few units: far inside the limit the file check sets
    assert max(float(basis[layer].safe_mean.abs().max()) for layer in basis.layers) < SAFE_MEAN_LIMIT / 1000
    scaled = {}
    for record in basis.records.values():
        scaled.setdefault(id(record), dataclasses.replace(record, safe_mean=record.safe_mean * 1e8))
    damaged = dataclasses.replace(basis, records={layer: scaled[id(record)] for layer, record in basis.records.items()},
                                  model_fingerprint="")  # fp16-held weights: another fingerprint, not the point here
    half = tiny.load_tiny_wan(model_options={"dtype": torch.float16})
    with pytest.raises(ValueError, match=f"layer '{basis.layers[0]}': the edit would move its bias to .*e\\+0[5-9], "
                                         r"beyond the 6.55e\+04 its torch.float16 can hold.*damaged or hand-edited"):
        nodes.ApplyUnlearning.execute(half, damaged, 1.0, True, "all in vector", 0, -1, "safe_mean")
    nodes.ApplyUnlearning.execute(half, damaged, 1.0, True, "all in vector", 0, -1, "zero")  # no bias moved: fine



def planted_bias_vector(model, scale: float):
    """``(vector, layer, u)``: a rank-1 vector for ``model``'s default layers whose safe prompts' mean lies ``scale``
    along its direction ``u`` (Load accepts up to 65504), and the first layer."""
    from comfyui_video_unlearning.core.refusal import RefusalFitter
    from comfyui_video_unlearning.nodes.adapters import layers_for
    from comfyui_video_unlearning.nodes.patching import weights_fingerprint

    layers = layers_for(model, "default", 0, -1)
    width = model.model.diffusion_model.get_submodule(layers[0]).weight.shape[1]
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(width, generator=generator)
    u /= u.norm()
    fitter = RefusalFitter()
    fitter.share("text_embedding", layers)
    safe = torch.randn(12, width, generator=generator) + scale * u
    fitter.update("text_embedding", safe + (1 + torch.rand(12, 1, generator=generator)) * u, safe)
    vector = fitter.fit(rank=1, method="mean", concept="big", model_family="wan",
                        model_fingerprint=weights_fingerprint(model, layers))
    return vector, layers[0], u


def test_a_large_bias_change_is_judged_where_the_bias_is_computed(nodes, tiny):
    """The bias range check took the bias's stored dtype. On fp8 (a scaled-fp8 file, or weight_dtype fp8) that
    refused, at 448, edits whose bias the fp8 route runs exact at compute dtype (a review: old code exact to 1.5e-4,
    then refused); a bf16-held bias computed in fp16 passed it (a review: a safe mean of 53,000, 63 of 384 outputs
    Inf). The narrowest dtype the bias passes through is used, an fp8 bias's being its compute dtype."""
    import comfy.lora
    import comfy.model_management as mm
    import comfy.ops

    for kind in ("scaled fp8 file", "fp8_e4m3fn"):
        model = tiny.load_tiny_wan_as(kind)
        vector, layer, u = planted_bias_vector(model, 3000.0)
        edited = nodes.ApplyUnlearning.execute(model, vector, 4.0, True, "all in vector", 0, -1, "safe_mean")[0]
        key, module = f"diffusion_model.{layer}.bias", edited.model.diffusion_model.get_submodule(layer)
        exact = comfy.lora.calculate_weight(edited.patches[key], module.bias.float().clone(), key)
        mm.load_models_gpu([edited], force_full_load=True)
        try:
            _, running = comfy.ops.cast_bias_weight(module, torch.zeros(1, 1, u.shape[0]))
        finally:
            mm.unload_all_models()
        assert float(exact.abs().max()) > 448, kind  # beyond what fp8 holds
        torch.testing.assert_close(running.float(), exact, atol=1e-3, rtol=1e-6)
    model = tiny.load_tiny_wan(model_options={"dtype": torch.bfloat16})
    model.model.manual_cast_dtype = torch.float16  # as a GPU without bf16 computes a bf16-held model
    vector, layer, _ = planted_bias_vector(model, 1e6)  # built in code: no load limit
    with pytest.raises(ValueError, match=f"layer '{layer}': .* beyond the 6.55e\\+04 its torch.float16 can hold"):
        nodes.ApplyUnlearning.execute(model, vector, 4.0, True, "all in vector", 0, -1, "safe_mean")


def test_a_linked_strength_outside_the_widget_range_is_refused(nodes, wan, basis):
    """ComfyUI checks min/max only for a widget's own value: a strength linked from a Primitive Float (any number)
    ran Apply and Export at 50 or 1e6 without a word."""
    for strength in (4.05, 50.0, 1e6, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"Apply Unlearning: strength .* is outside its range 0..4 .*linked"):
            nodes.ApplyUnlearning.execute(wan, basis, strength, True, "all in vector", 0, -1, "zero")
        with pytest.raises(ValueError, match=r"Export Unlearning as LoRA: strength .* is outside its range 0..4"):
            nodes.ExportLoRA.execute(wan, basis, strength, "zero", "never_written")
    with pytest.raises(ValueError, match="strength 50 is outside"):
        nodes.ApplyUnlearning.execute(wan, basis, 50, True, "all in vector", 0, -1, "zero")
    # a math node's 4 + 1 ulp: the message said "strength 4 is outside its range 0..4"
    with pytest.raises(ValueError, match=r"strength 4\.000000000000001 is outside"):
        nodes.ApplyUnlearning.execute(wan, basis, 0.1 * 3 * 40 / 3, True, "all in vector", 0, -1, "zero")
    for strength in (0.0, 4.0):  # the range's ends
        nodes.ApplyUnlearning.execute(wan, basis, strength, True, "all in vector", 0, -1, "zero")
    nodes.ApplyUnlearning.execute(wan, None, None, False, "all in vector", 0, -1, "zero")  # off: not computed


def test_apply_reads_the_file_weights_while_a_patched_clone_is_loaded(nodes, wan, basis):
    """Clones share one module; a loaded patched clone bakes its edit into it. Apply must still edit W, not W'."""
    import comfy.model_management

    from comfyui_video_unlearning.nodes.patching import layer_edits

    layers = list(basis.layers)
    expected = layer_edits(wan, basis, layers, 1.0, "zero")
    patched = nodes.ApplyUnlearning.execute(wan, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    comfy.model_management.unload_all_models()
    comfy.model_management.load_models_gpu([patched])
    try:
        baked = wan.model.diffusion_model.get_submodule(layers[0]).weight
        assert float((baked.float() @ basis.subspace(layers[0])).norm()) < 1e-4  # the shared module holds W' now
        again = layer_edits(wan, basis, layers, 1.0, "zero")
        for layer in layers:
            torch.testing.assert_close(again[layer].up, expected[layer].up, rtol=0, atol=0)
    finally:
        comfy.model_management.unload_all_models()


def test_wan22_ti2v_5b_collects_on_its_48_channel_16x_latent_and_unlearns(nodes, wan22_5b, encoded, clip):
    import nodes as comfy_nodes

    from comfyui_video_unlearning.nodes.adapters import adapter_for
    from comfyui_video_unlearning.nodes.collect import empty_latent

    assert type(wan22_5b.model).__name__ == "WAN22" and adapter_for(wan22_5b).family == "wan"
    assert list(empty_latent(wan22_5b, 1280, 704, 121).shape) == [1, 48, 31, 44, 80]
    activations = nodes.CollectActivations.execute(wan22_5b, encoded, 128, 128, 5, "2", 0, "all", 0, -1)[0]
    basis = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    patched = nodes.ApplyUnlearning.execute(wan22_5b, basis, 1.0, True, "all in vector", 0, -1, "safe_mean")[0]
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a Rolex watch on a table"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    latent = {"samples": torch.zeros(1, 48, 2, 8, 8)}

    def generate(model):
        return comfy_nodes.common_ksampler(model, 3, 2, 2.0, "euler", "simple", positive, negative, latent)[0]["samples"]

    before, unlearned, after = generate(wan22_5b), generate(patched), generate(wan22_5b)
    assert torch.equal(before, after) and not torch.equal(before, unlearned)


def test_wan22_a14b_pair_one_vector_per_expert(nodes, wan22_experts, encoded, clip):
    """The two experts share no weights: each gets its own activations and vector, each vector is refused on the
    other expert, and the two-stage sampling (high noise, then low noise) changes only with both patched."""
    import comfy.model_management
    import nodes as comfy_nodes

    vectors, patched = {}, {}
    for expert, model in wan22_experts.items():
        activations = nodes.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
        vectors[expert] = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
        patched[expert] = nodes.ApplyUnlearning.execute(model, vectors[expert], 1.0, True, "all in vector", 0, -1,
                                                        "zero")[0]
        assert len(patched[expert].weight_wrapper_patches) == len(vectors[expert].layers)  # scaled fp8: wrapper route
    layer = "blocks.0.cross_attn.k"
    cosine = float(vectors["high"][layer].direction @ vectors["low"][layer].direction)
    assert abs(cosine) < 0.9, cosine  # different weights, different directions
    with pytest.raises(ValueError, match="other expert of a Wan 2.2 pair"):
        nodes.ApplyUnlearning.execute(wan22_experts["low"], vectors["high"], 1.0, True, "all in vector", 0, -1, "zero")

    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a Rolex watch on a table"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    latent = {"samples": torch.zeros(1, 16, 2, 8, 8)}
    sampler = comfy_nodes.KSamplerAdvanced()

    def two_stage(high, low):  # as ComfyUI's Wan 2.2 14B template: steps 0-2 on high noise, 2-4 on low noise
        first = sampler.sample(high, "enable", 5, 4, 2.0, "euler", "simple", positive, negative, latent, 0, 2, "enable")[0]
        return sampler.sample(low, "disable", 5, 4, 2.0, "euler", "simple", positive, negative, first, 2, 10000,
                              "disable")[0]["samples"]

    base = two_stage(wan22_experts["high"], wan22_experts["low"])
    both = two_stage(patched["high"], patched["low"])
    again = two_stage(wan22_experts["high"], wan22_experts["low"])
    comfy.model_management.unload_all_models()
    assert torch.equal(base, again) and not torch.equal(base, both)
    for expert, model in patched.items():  # each expert's own direction is gone from its own layers
        comfy.model_management.load_models_gpu([model])
        module = model.model.diffusion_model.get_submodule(layer)
        d = vectors[expert].subspace(layer)[:, 0]
        x = torch.randn(3, 1, d.shape[0])
        change = (module(x + 3.0 * d) - module(x)).norm() / (3.0 * module.weight.float().norm())
        comfy.model_management.unload_all_models()
        assert change < 1e-5, (expert, float(change))


def test_combined_vectors_remove_both_concepts_in_one_patch(nodes, wan, clip, basis, effective_weights):
    other_pairs = "\n".join(f"a bloody knife number {i} on a table | a knife number {i} on a table" for i in range(5))
    other_encoded = nodes.PairEncoder.execute(clip, other_pairs, NEUTRAL, "blood")[0]
    other_activations = nodes.CollectActivations.execute(wan, other_encoded, 64, 64, 1, "2", 0, "all", 0, -1)[0]
    other = nodes.RefusalVectorNode.execute(other_activations, "cpca", 4, 1.0)[0]
    combined = nodes.CombineRefusalVectors.execute(basis, other)[0]
    assert combined.concept == "Rolex + blood" and set(combined.layers) == set(basis.layers)
    model = nodes.ApplyUnlearning.execute(wan, combined, 1.0, True, "all in vector", 0, -1, "zero")[0]
    key = f"diffusion_model.{basis.layers[0]}.weight"
    weight = effective_weights(model, [key])[key]
    x = torch.randn(5, weight.shape[1])
    for single in (basis, other):  # each concept's direction is ignored by the one combined edit
        d = single.subspace(basis.layers[0])[:, 0]
        torch.testing.assert_close(x @ weight.T, (x + 3.0 * d) @ weight.T, atol=5e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="at least two"):
        nodes.RefusalBasis.combine([basis])


def test_subspace_edit_blinds_the_layers_to_every_direction_of_the_fit(nodes, wan, activations, effective_weights):
    """edit = subspace: Apply removes the whole rank-k contrastive subspace (one rank-k patch per layer)."""
    subspace = nodes.RefusalVectorNode.execute(activations, "cpca", 3, 1.0, "subspace")[0]
    assert subspace.edit == "subspace"
    model = nodes.ApplyUnlearning.execute(wan, subspace, 1.0, True, "all in vector", 0, -1, "zero")[0]
    keys = [f"diffusion_model.{layer}.weight" for layer in subspace.layers]
    edited = effective_weights(model, keys)
    for layer, key in zip(subspace.layers, keys):
        u = subspace.subspace(layer)
        assert u.shape[1] == 3
        x = torch.randn(5, u.shape[0])
        torch.testing.assert_close(x @ edited[key].T, (x + torch.randn(5, 3) @ u.T * 3.0) @ edited[key].T,
                                   atol=5e-5, rtol=1e-5)
    # An API prompt written before the input existed still runs: the default edit is the one direction.
    assert nodes.RefusalVectorNode.execute(activations, "cpca", 3, 1.0)[0].subspace(subspace.layers[0]).shape[1] == 1


def test_a_rank_above_the_pairs_keeps_only_directions_of_positive_contrast(nodes, wan, activations, effective_weights):
    """rank 64 from a handful of pairs: the text input keeps at most one direction per pair, the chart says how many,
    and Apply's patch is that wide and blinds the layers to it."""
    output = nodes.RefusalVectorNode.execute(activations, "cpca", 64, 1.0, "subspace")
    wide = output[0]
    layer = "blocks.0.cross_attn.k"
    kept = wide.subspace(layer).shape[1]
    assert 1 <= kept <= len(activations.pairs) < 64
    chart = output.ui["video_unlearning_chart"][0]
    assert chart["narrow_inputs"]["text_embedding"] == kept and "of 64 kept" in chart["title"]
    model = nodes.ApplyUnlearning.execute(wan, wide, 1.0, True, "all in vector", 0, -1, "zero")[0]
    key = f"diffusion_model.{layer}.weight"
    edited = effective_weights(model, [key])[key]
    u = wide.subspace(layer)
    assert float((edited.float() @ u).norm()) < 1e-4 * float(edited.float().norm())


def test_a_pair_written_the_other_way_round_is_named_on_the_node(nodes, wan, clip, activations, caplog):
    """One line of six swapped: its sides differ along the fitted direction against the others', and the node names
    that line (chart data the editor shows, and the log); the shipped-style pairs get no note."""
    lines = PAIRS.splitlines() + ["a watch number 9 on a shelf | a Rolex watch number 9 on a shelf"]
    with torch.inference_mode():
        encoded = nodes.PairEncoder.execute(clip, "\n".join(lines), NEUTRAL, "Rolex")[0]
        mixed = nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "2", 0, "all", 0, -1)[0]
        with caplog.at_level("WARNING"):
            output = nodes.RefusalVectorNode.execute(mixed, "cpca", 4, 1.0)
        notes = output.ui["video_unlearning_chart"][0]["pair_notes"]
        assert len(notes) == 1 and notes[0].startswith("line 6:") and "swapped" in notes[0]
        assert "line 6:" in caplog.text
        clean = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)
        # Video-side inputs are not judged: on the organism a correct benchmark pair read -0.09 there
        video = nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "2", 0, "cross_attn.o", 0, -1)[0]
        unjudged = nodes.RefusalVectorNode.execute(video, "cpca", 4, 1.0)
    assert clean.ui["video_unlearning_chart"][0]["pair_notes"] == []
    assert unjudged.ui["video_unlearning_chart"][0]["pair_notes"] == []


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float8_e4m3fn])
def test_partial_loading_runs_the_edit_in_every_forward(nodes, encoded, tiny, monkeypatch, dtype):
    """ComfyUI loads a model partially when it does not fit the GPU (lowvram: each layer's weight is cast, patched and
    wrapped in its forward, by ``LowVramPatch``), as most users of Wan 14B run it; the CPU never chooses that, so the
    test forces it. The edit must act there as when the model is loaded whole."""
    import comfy.model_management as mm

    model = tiny.load_tiny_wan(model_options={"dtype": dtype})
    activations = nodes.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    basis = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    patched = nodes.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "safe_mean")[0]
    generator = torch.Generator().manual_seed(1)
    x = {layer: torch.randn(3, 1, basis.dims[layer], generator=generator) for layer in basis.layers}
    mm.unload_all_models()  # clones share their modules: read |W d| while no patched clone is loaded
    direction = {layer: float((model.model.diffusion_model.get_submodule(layer).weight.float() @
                               basis.subspace(layer)[:, 0]).norm()) for layer in basis.layers}

    def run():
        """Each layer's output on ``x``, what it keeps of the direction (|W' d| / |W d|), whether loaded partially."""
        mm.unload_all_models()
        mm.load_models_gpu([patched])
        try:
            out, kept = {}, {}
            for layer in basis.layers:
                module, d = patched.model.diffusion_model.get_submodule(layer), basis.subspace(layer)[:, 0]
                out[layer] = module(x[layer]).float()
                change = (module(x[layer] + 3 * d) - module(x[layer])).float().norm() / 3
                kept[layer] = float(change) / direction[layer]
            return out, kept, patched.model.model_lowvram
        finally:
            mm.unload_all_models()

    whole, kept_whole, lowvram = run()
    assert not lowvram
    load = mm.LoadedModel.model_load
    monkeypatch.setattr(mm.LoadedModel, "model_load", lambda self, memory=0, force_patch_weights=False:
                        load(self, 0.1, force_patch_weights))
    partial, kept_partial, lowvram = run()
    assert lowvram
    for layer in basis.layers:
        # loaded whole, a bf16 weight is baked and rounded to bf16 (2.5-3.5e-3 kept); loaded partially, the patch is
        # added in each forward at compute precision (1e-6 kept)
        assert kept_whole[layer] < 1e-2 and kept_partial[layer] < 1e-4, (layer, kept_whole[layer], kept_partial[layer])
        # The bias change of target safe_mean acts too. Loaded whole, fp8 layers hold the edit baked and re-quantised
        # (the wrapper then restores the exact action on the direction), and the fp8 bias too: up to 5.6 % apart on
        # the tiny model, whose weights sit near fp8's smallest normal values, where re-quantising moves them most.
        tolerance = 0.03 if dtype == torch.bfloat16 else 0.1
        bound = tolerance * float(whole[layer].abs().max())
        torch.testing.assert_close(partial[layer], whole[layer], atol=bound, rtol=0)


def test_a_vector_follows_its_weights_into_another_dtype(nodes, clip, encoded, tiny):
    """An fp16 file is held in float32 on a CPU and in float16 on a GPU or under --fp16-unet: the same weights. The
    fingerprint hashed the dtype and refused the vector there (until 2026-12-06); values rounded to bf16 are
    another model, and a vector saved with the older fingerprint is still taken where it was measured."""
    import dataclasses

    from comfyui_video_unlearning.nodes.patching import weights_fingerprint

    file = {key: value.half() if value.is_floating_point() else value
            for key, value in tiny.tiny_wan_state_dict().items()}
    held = {dtype: tiny.load_tiny_wan(state=dict(file), model_options={"dtype": dtype})
            for dtype in (torch.float32, torch.float16, torch.bfloat16)}
    assert {str(held[d].model.diffusion_model.blocks[0].cross_attn.k.weight.dtype) for d in held} == {
        "torch.float32", "torch.float16", "torch.bfloat16"}
    vector = nodes.RefusalVectorNode.execute(nodes.CollectActivations.execute(
        held[torch.float32], encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0], "cpca", 4, 1.0)[0]
    nodes.ApplyUnlearning.execute(held[torch.float16], vector, 1.0, True, "all in vector", 0, -1, "zero")
    with pytest.raises(ValueError, match="measured on other weights"):
        nodes.ApplyUnlearning.execute(held[torch.bfloat16], vector, 1.0, True, "all in vector", 0, -1, "zero")
    older = dataclasses.replace(vector, model_fingerprint=weights_fingerprint(held[torch.float32], list(vector.layers),
                                                                              with_dtype=True))
    nodes.ApplyUnlearning.execute(held[torch.float32], older, 1.0, True, "all in vector", 0, -1, "zero")


def test_nodes_that_show_results_ask_a_newer_comfyui_to_keep_them_for_cached_runs(pack):
    """A newer ComfyUI keeps the UI results of a run's cached nodes in its history only for output nodes and those
    whose schema sets ``has_intermediate_output``; the editor reads a cached run's badge, charts and recommendation
    from there. The nodes that show results set it wherever the host's Schema has the field (0.3.64's has not,
    and keeps every node's results)."""
    import dataclasses

    from comfy_api.latest import io
    from comfyui_video_unlearning.nodes import check, definitions

    supported = "has_intermediate_output" in {field.name for field in dataclasses.fields(io.Schema)}
    for node in (definitions.PairEncoder, definitions.RefusalVectorNode, definitions.ApplyUnlearning,
                 check.UnlearningCheck):
        schema = node.define_schema()
        assert getattr(schema, "has_intermediate_output", False) is supported, node
    assert definitions.SHOWS_RESULTS == ({"has_intermediate_output": True} if supported else {})
