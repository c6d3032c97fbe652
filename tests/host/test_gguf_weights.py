"""Weights that ComfyUI-GGUF keeps packed (``UnetLoaderGGUF``, the usual way to run Wan 14B on a consumer GPU).

Apply Unlearning, Export as LoRA and Unlearning Check compute the edit from a layer's weight. On a GGUF model that
tensor holds the file's raw blocks, and until 2026-12-06 Apply failed with "The size of tensor a (128) must match the
size of tensor b (136)". ComfyUI-GGUF is on no registry, so CI cannot install it: these tests put real GGUF blocks
(quantised by the ``gguf`` package) into a tiny Wan's k/v layers as ComfyUI-GGUF holds them (``GGUFStandIn``) and
compare what the pack computes with its float twin, whose layers hold the decoded values. ``bench/gguf_compat.py``
runs the real ComfyUI-GGUF end to end (docs/nodes.md, "GGUF models").
"""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

pytestmark = pytest.mark.usefixtures("inference_mode")

KV = [f"blocks.{b}.cross_attn.{p}" for b in range(2) for p in "kv"]
PAIRS = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
NEUTRAL = "a dog in a park\na red car\na tree in the wind\na bowl of soup"


@pytest.fixture(scope="module")
def modules(pack):
    from comfyui_video_unlearning.nodes import check, definitions, packed_weights, patching

    return definitions, patching, check, packed_weights


def measured_on(definitions, clip, model):
    """A refusal vector measured on ``model`` (a float twin: a GGUF-packed layer cannot run here)."""
    encoded = definitions.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
    activations = definitions.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
    return definitions.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]


def for_model(basis, patching, model):
    return dataclasses.replace(basis, model_fingerprint=patching.weights_fingerprint(model, list(basis.layers)))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "BF16"])
def test_apply_export_and_check_read_packed_weights_as_their_values(modules, tiny, clip, qtype):
    definitions, patching, check, packed_weights = modules
    packed, twin = tiny.tiny_wan_gguf_twins(KV, qtype)
    weight = packed.model.diffusion_model.get_submodule(KV[0]).weight
    assert packed_weights.is_packed(weight) and weight.dtype == torch.uint8 and tuple(weight.shape) == (128, 128)
    basis = measured_on(definitions, clip, twin)
    on_packed, on_twin = for_model(basis, patching, packed), for_model(basis, patching, twin)
    assert on_packed.model_fingerprint != on_twin.model_fingerprint  # another quantisation is another model
    for target in ("zero", "safe_mean"):
        edited = definitions.ApplyUnlearning.execute(packed, on_packed, 1.0, True, "all in vector", 0, -1, target)[0]
        reference = definitions.ApplyUnlearning.execute(twin, on_twin, 1.0, True, "all in vector", 0, -1, target)[0]
        assert set(edited.patches) == set(reference.patches)
        for key, patches in edited.patches.items():
            for ours, theirs in zip(patches[0][1].weights if key.endswith("weight") else patches[0][1][1],
                                    reference.patches[key][0][1].weights if key.endswith("weight")
                                    else reference.patches[key][0][1][1]):
                if isinstance(ours, torch.Tensor):
                    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
        # the MODEL already carrying the edit: a second Apply changes nothing (it adds no patch: the earlier edit
        # covers its whole subspace)
        twice = definitions.ApplyUnlearning.execute(edited, on_packed, 1.0, True, "all in vector", 0, -1, target)[0]
        assert {key: len(p) for key, p in twice.patches.items()} == {key: len(p) for key, p in edited.patches.items()}
    exported = patching.lora_state_dict(packed, on_packed, strength=0.8, target="safe_mean")
    expected = patching.lora_state_dict(twin, on_twin, strength=0.8, target="safe_mean")
    assert set(exported) == set(expected)
    for key in exported:
        torch.testing.assert_close(exported[key], expected[key], atol=1e-6, rtol=1e-5)
    for layer in KV:
        decoded = tiny.decoded_gguf(packed.model.diffusion_model.get_submodule(layer).weight)
        torch.testing.assert_close(check.layer_weight(packed, layer), decoded, atol=0, rtol=0)


def test_a_format_that_cannot_be_read_is_named_with_the_fix(modules, tiny, clip, monkeypatch):
    definitions, patching, _, _ = modules
    packed, twin = tiny.tiny_wan_gguf_twins(KV, "Q8_0")
    basis = for_model(measured_on(definitions, clip, twin), patching, packed)
    import gguf.quants

    def unsupported(data, qtype):
        raise NotImplementedError(f"Dequantization for {qtype.name} is not yet implemented")

    monkeypatch.setattr(gguf.quants, "dequantize", unsupported)
    with pytest.raises(ValueError, match="cannot decode this layer's weight format.*update gguf"):
        definitions.ApplyUnlearning.execute(packed, basis, 1.0, True, "all in vector", 0, -1, "zero")
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ValueError, match="needs the 'gguf' package.*pip install gguf"):
        definitions.ApplyUnlearning.execute(packed, basis, 1.0, True, "all in vector", 0, -1, "zero")
