"""What the pooled-text-path tests of HunyuanVideo (``vector_in``) and Mochi (``t5_y_embedder``) share: the prompts, and
the two checks every top-level pooled layer must pass (the edit removes the pairs' pooled difference along the vector
and nothing else; the exported LoRA, loaded by ComfyUI, patches the layer as Apply Unlearning does)."""

from __future__ import annotations

import torch

PAIRS = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(6))
VALIDATION = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(3))
NEUTRAL = "a dog in a park\na red car\na tree in the wind\na bowl of soup"
BENIGN = "a cat on a sofa\na boat on a lake"


def weight_key(layer: str) -> str:
    return f"diffusion_model.{layer}.weight"


def assert_apply_removes_the_pooled_difference(model, basis, layer: str, unsafe, safe, effective_weights) -> None:
    """``unsafe``, ``safe``: ``[pairs, d]`` float64 inputs of ``layer``. At strength 1, W' maps each pair's difference,
    along the refusal directions, to nearly zero (the edit of W (I - U U^T)) and leaves the rest; only ``layer`` is
    patched; strength 0 is the identity."""
    from comfyui_video_unlearning.nodes import definitions

    key = weight_key(layer)
    u = basis.subspace(layer).double()  # [d, c]
    along = (unsafe - safe) @ u @ u.T  # [pairs, d]: each pair's pooled difference in the vector's span
    assert ((unsafe - safe).norm(dim=1) > 0).all() and (along.norm(dim=1) > 0.3 * (unsafe - safe).norm(dim=1)).all()

    patched = definitions.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    assert set(patched.patches) == {key}
    w, w_edit = (effective_weights(p, [key])[key].double() for p in (model, patched))
    ratio = (along @ w_edit.T).norm(dim=1) / (along @ w.T).norm(dim=1)
    assert ratio.max() < 1e-5, ratio
    outside = (unsafe - safe) - along  # not in the vector's span: not touched
    torch.testing.assert_close(outside @ w_edit.T, outside @ w.T, rtol=1e-4, atol=1e-5)

    unchanged = definitions.ApplyUnlearning.execute(model, basis, 0.0, True, "all in vector", 0, -1, "zero")[0]
    assert key not in unchanged.patches
    torch.testing.assert_close(effective_weights(unchanged, [key])[key], effective_weights(model, [key])[key],
                               rtol=0, atol=0)


def assert_exported_lora_patches_as_apply(model, basis, layer: str | tuple[str, ...], folder, prefix: str,
                                          effective_weights) -> None:
    """Export LoRA into ``folder`` (registered as a loras folder), load it through ComfyUI's ``LoraLoaderModelOnly``
    (which maps the generic key ``diffusion_model.<layer>``, model_lora_keys_unet) and compare with Apply Unlearning.
    ``layer``: the vector's layer, or its layers (HunyuanVideo's txt_in group has two)."""
    import comfy.model_management
    import folder_paths
    import nodes as comfy_nodes

    from comfyui_video_unlearning.nodes import definitions

    layers = (layer,) if isinstance(layer, str) else tuple(layer)
    keys = [weight_key(name) for name in layers]
    folder_paths.add_model_folder_path("loras", str(folder), is_default=True)
    definitions.ExportLoRA.execute(model, basis, 1.0, "safe_mean", prefix)
    try:
        loaded = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, f"{prefix}_00001.safetensors", 1.0)[0]
        applied = definitions.ApplyUnlearning.execute(model, basis, 1.0, True, "all in vector", 0, -1, "safe_mean")[0]
        biases = {f"diffusion_model.{name}.bias" for name in layers}
        assert set(loaded.patches) == set(applied.patches) == {*keys, *biases}
        via_lora, direct = (effective_weights(p, keys) for p in (loaded, applied))
    finally:
        comfy.model_management.unload_all_models()
    unedited = effective_weights(model, keys)
    for key in keys:
        torch.testing.assert_close(via_lora[key], direct[key], rtol=1e-5, atol=1e-6)
        assert not torch.equal(via_lora[key], unedited[key])


def held_out_check(model, text, target: str, length: int):
    """``check(vector, layers, sweep)``: Unlearning Check of ``model`` at strengths 0 and 1 on :data:`VALIDATION` and
    :data:`BENIGN` (32 x 32, ``length`` frames, progress 0.5, seed 0, all blocks), returning the node's outputs
    (strength, chart, table)."""
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import UnlearningCheck

    held_out = definitions.PairEncoder.execute(text, VALIDATION, BENIGN, "Rolex")[0]

    def check(vector, layers: str, sweep: str):
        return UnlearningCheck.execute(model, vector, "0, 1", layers, 0, -1, target, sweep, 32, 32, length, "0.5", 0,
                                       validation_pairs=held_out).args

    return check


def measure_group(model, text, group: str, size: int, length: int):
    """Pair Encoder (:data:`PAIRS`, :data:`NEUTRAL`) -> Collect Activations (``group``, ``size`` x ``size``, ``length``
    frames, 2 timesteps, all blocks) -> Low-Rank Refusal Vector (cpca, rank 4): (encoded pairs, activations, vector)."""
    from comfyui_video_unlearning.nodes import definitions

    with torch.inference_mode():
        encoded = definitions.PairEncoder.execute(text, PAIRS, NEUTRAL, "Rolex")[0]
        acts = definitions.CollectActivations.execute(model, encoded, size, size, length, "2", 0, group, 0, -1)[0]
        return encoded, acts, definitions.RefusalVectorNode.execute(acts, "cpca", 4, 1.0)[0]
