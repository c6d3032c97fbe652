"""A MODEL sped up before the pack's nodes: compiled by ComfyUI's ``TorchCompileModel`` (``set_torch_compile_wrapper``),
or with one of ComfyUI's step caches (``EasyCache``, ``LazyCache``), which answer a call from an earlier one.

Collect Activations and Unlearning Check run the model with hooks that change from call to call. Until 2026-12-06
they ran it compiled: it recompiled again and again (tiny Wan, inductor on the CPU: Collect 49 s instead of 0.3 s,
the check 22 s instead of 0.4 s), and Collect on every layer group at two timesteps failed ("recorded 2 rows for a
batch of 2 at 2 timesteps"): the compiled graph skipped the recorder's hooks. With a step cache, the check read 0 %
removed and 0 collateral at every strength (recommending 0), and Collect failed. Both now run the model without these
wrappers (``nodes.collect.measuring_model``); the MODEL that goes on to the sampler keeps them. The tests compile with
a backend that counts compilations and runs the traced graph as it is.
"""

from __future__ import annotations

import pytest
import torch

from test_check_node import BENIGN, VALIDATION
from test_nodes_inprocess import NEUTRAL, PAIRS, generate

pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.fixture(scope="module")
def nodes(pack):
    from comfyui_video_unlearning.nodes import check, definitions

    return definitions, check


def compiled_clone(model):
    """``TorchCompileModel``'s output for ``model``, and the list its backend appends to at each compilation."""
    import torch._dynamo
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    torch._dynamo.reset()
    compilations = []

    def counting_backend(graph, example_inputs):
        compilations.append(len(example_inputs))
        return graph.forward

    compiled = model.clone()
    set_torch_compile_wrapper(model=compiled, backend=counting_backend)
    return compiled, compilations


def test_collect_and_check_run_a_compiled_model_uncompiled_and_sampling_stays_compiled(nodes, tiny, clip):
    definitions, check = nodes
    model = tiny.load_tiny_wan()
    compiled, compilations = compiled_clone(model)
    encoded = definitions.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
    validation = definitions.PairEncoder.execute(clip, VALIDATION, BENIGN, "Rolex")[0]

    def vector(m):
        activations = definitions.CollectActivations.execute(m, encoded, 64, 64, 1, "2", 0, "all", 0, -1)[0]
        return definitions.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]

    def checked(m, basis):
        out = check.UnlearningCheck.execute(m, basis, "0, 0.5, 1, 2", "default", 0, -1, "safe_mean", "none", 64, 64,
                                            1, "0.1, 0.4", 0, validation_pairs=validation)
        return out.ui["video_unlearning_check"][0]

    basis, reference = vector(compiled), vector(model)
    for layer in basis.layers:
        torch.testing.assert_close(basis.subspace(layer), reference.subspace(layer), atol=0, rtol=0)
    assert checked(compiled, basis) == checked(model, reference)
    assert compilations == [], "Collect Activations or Unlearning Check compiled the model"
    edited = definitions.ApplyUnlearning.execute(compiled, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    unlearned = generate(edited, clip)
    assert compilations, "the edited MODEL lost its torch.compile wrapper"
    expected = generate(definitions.ApplyUnlearning.execute(model, reference, 1.0, True, "all in vector", 0, -1,
                                                            "zero")[0], clip)
    torch.testing.assert_close(unlearned, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unlearned, generate(model, clip), atol=1e-4)


@pytest.mark.parametrize("cache", ["EasyCache", "LazyCache"])
def test_collect_and_check_run_the_model_without_a_step_cache(nodes, tiny, clip, cache):
    import comfy_extras.nodes_easycache as caches

    definitions, check = nodes
    model = tiny.load_tiny_wan()
    node = caches.EasyCacheNode if cache == "EasyCache" else caches.LazyCacheNode
    cached = node.execute(model, 0.2, 0.0, 1.0, False)[0]  # threshold, start, end: skips from the first step
    assert cache.lower() in cached.wrappers[next(iter(cached.wrappers))]
    encoded = definitions.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
    validation = definitions.PairEncoder.execute(clip, VALIDATION, BENIGN, "Rolex")[0]
    vectors = []
    for m in (cached, model):
        activations = definitions.CollectActivations.execute(m, encoded, 64, 64, 1, "0.1, 0.3, 0.5", 0, "all", 0, -1)[0]
        vectors.append(definitions.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0])
    for layer in vectors[1].layers:
        torch.testing.assert_close(vectors[0].subspace(layer), vectors[1].subspace(layer), atol=0, rtol=0)
    summaries = [check.UnlearningCheck.execute(m, vectors[1], "0, 0.5, 1, 2", "default", 0, -1, "safe_mean", "none",
                                               64, 64, 1, "0.1, 0.3, 0.5", 0, validation_pairs=validation)
                 .ui["video_unlearning_check"][0] for m in (cached, model)]
    assert summaries[0] == summaries[1] and summaries[1]["removed"] > 0.3
    assert not torch.equal(generate(cached, clip), generate(model, clip)), "the cache no longer acts when sampling"


def test_collect_and_check_measure_an_fp8_matrix_multiplication_model_at_compute_dtype(nodes, tiny, clip, monkeypatch):
    """On a GPU with fp8 compute, ComfyUI multiplies a scaled-fp8 file's layers in fp8 (``comfy.ops.fp8_linear``),
    rounding each layer's input to fp8; the CPU has none, so the test says it has (torch's CPU ``_scaled_mm`` runs
    the product). That rounding flips with the small changes the check measures: on this tiny model it read 98 %
    removed at strength 0.5 and collateral 0.5, and recommended 0. Both nodes now measure at compute dtype and give
    what they give without fp8 compute; sampling still multiplies in fp8."""
    import comfy.model_management as mm
    import comfy.ops

    definitions, check = nodes
    encoded = definitions.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
    validation = definitions.PairEncoder.execute(clip, VALIDATION, BENIGN, "Rolex")[0]
    fp8_product = comfy.ops.fp8_linear
    results = {}
    for fp8_compute in (False, True):
        monkeypatch.setattr(mm, "supports_fp8_compute", lambda device=None, answer=fp8_compute: answer)
        model = tiny.load_tiny_wan(state=tiny.tiny_wan22_expert_state_dict("high"))
        activations = definitions.CollectActivations.execute(model, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
        basis = definitions.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
        summary = check.UnlearningCheck.execute(model, basis, "0, 0.5, 1, 2", "default", 0, -1, "safe_mean", "none",
                                                64, 64, 1, "0.1", 0, validation_pairs=validation)
        results[fp8_compute] = (basis, summary.ui["video_unlearning_check"][0])
        assert comfy.ops.fp8_linear is fp8_product
    (plain, plain_summary), (fp8, fp8_summary) = results[False], results[True]
    for layer in plain.layers:
        torch.testing.assert_close(fp8.subspace(layer), plain.subspace(layer), atol=0, rtol=0)
    assert fp8_summary == plain_summary and plain_summary["strength"] == 1.0
    calls = []
    monkeypatch.setattr(comfy.ops, "fp8_linear", lambda module, input: calls.append(1) or fp8_product(module, input))
    edited = definitions.ApplyUnlearning.execute(model, fp8, 1.0, True, "all in vector", 0, -1, "safe_mean")[0]
    generate(edited, clip)
    assert calls, "sampling no longer multiplies in fp8"


def test_compute_precision_needs_no_fp8_products_in_the_host(pack, monkeypatch):
    """A ComfyUI without ``comfy.ops.fp8_linear`` (older, or a later rename) has nothing to switch off."""
    import comfy.ops
    from comfyui_video_unlearning.nodes.collect import compute_precision

    monkeypatch.delattr(comfy.ops, "fp8_linear")
    with compute_precision(torch.nn.Linear(2, 2)):
        assert not hasattr(comfy.ops, "fp8_linear")
    assert not hasattr(comfy.ops, "fp8_linear")
