"""Weights stored packed: ComfyUI-GGUF's quantised tensors and newer ComfyUI's own, read as the numbers the layer uses.

ComfyUI-GGUF (``UnetLoaderGGUF``, the usual way to run Wan 14B on a consumer GPU) keeps each quantised weight as a
``torch.Tensor`` subclass that holds the file's raw blocks (``uint8``, e.g. ``[5120, 5440]`` for a Q8_0
``[5120, 5120]`` weight) and reports the logical shape through ``.shape`` and the block format through
``.tensor_type``; its layers dequantise on every forward. Arithmetic on the raw tensor is meaningless (Apply
Unlearning failed with "The size of tensor a (128) must match the size of tensor b (136)"), so the pack reads such
a weight through the format's reference decoder, ``gguf.quants.dequantize`` from the ``gguf`` package that
ComfyUI-GGUF requires. The patches a loaded clone attaches to the tensor (``.patches``) are not applied: this is
the file's weight, as :func:`nodes.weights.stored_weight` returns it for every other format.

ComfyUI itself, from about 0.8 on, holds a quantised layer (an official ``*_fp8_scaled`` file, NVFP4, MXFP8, int8) as a
comfy-kitchen ``QuantizedTensor``: its ``.dtype`` is the compute dtype, its stored elements and scale sit inside, and
``scale_weight`` is gone. Read as a plain tensor it looked like a bf16 or float32 layer to the pack: Apply Unlearning
let ComfyUI bake the edit and re-quantise it (3-4 % of the direction kept, where the fp8 route keeps 1e-7), and the
fingerprint changed with the ComfyUI version and the compute dtype (checked on ComfyUI 0.3.64 with such layers put
in place as ComfyUI 0.8 and later hold them, ``tests/host/test_quantized_layers.py``; a newer ComfyUI itself was not
run here). The values are read with the tensor's own ``dequantize`` (float32, the scale applied) and the file's
elements, for the fingerprint, with its own ``state_dict``.
"""

from __future__ import annotations

import torch


def is_packed(weight: torch.Tensor) -> bool:
    """True for a weight whose stored elements are not its values: a GGUF block format, GGUF BF16 (raw bytes), or a
    comfy-kitchen ``QuantizedTensor``.

    ComfyUI-GGUF's F32 and F16 tensors are plain views of their values (same size as their shape) and need nothing.
    """
    if is_quantised_tensor(weight):
        return True
    return getattr(weight, "tensor_type", None) is not None and tuple(weight.size()) != tuple(weight.shape)


def is_quantised_tensor(weight: torch.Tensor) -> bool:
    """True for a comfy-kitchen ``QuantizedTensor`` (known by its API, so that nothing is imported for it)."""
    return callable(getattr(weight, "requantize_from_float", None)) and callable(getattr(weight, "state_dict", None))


def file_elements(weight: torch.Tensor) -> torch.Tensor:
    """The elements a weight is stored as: a ``QuantizedTensor``'s own (fp8 values before their scale, or the packed
    blocks), as its ``state_dict`` writes them to a file; any other weight as it is. ComfyUI 0.3.64 holds a scaled-fp8
    layer's fp8 elements as its weight, so a fingerprint of these is the same on either ComfyUI and in any compute
    dtype."""
    return weight.state_dict("")[""] if is_quantised_tensor(weight) else weight


def unpacked_weight(weight: torch.Tensor) -> torch.Tensor:
    """The values of a packed weight, float32 ``[*shape]`` on the CPU (:func:`is_packed` must be true)."""
    if is_quantised_tensor(weight):
        # .to(float32) relabels the compute dtype the tensor dequantises to; the elements stay as stored
        return weight.detach().to(torch.float32).dequantize().cpu()
    try:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize
    except ImportError:
        raise ValueError(f"this layer's weight is stored in the GGUF format {weight.tensor_type!r}, and reading it "
                         "needs the 'gguf' package (a requirement of ComfyUI-GGUF): pip install gguf into ComfyUI's "
                         "Python") from None
    raw = weight.as_subclass(torch.Tensor).detach().cpu().numpy()
    try:
        values = dequantize(raw, GGMLQuantizationType(int(weight.tensor_type)))
    except (NotImplementedError, ValueError) as error:
        raise ValueError(f"the gguf package cannot decode this layer's weight format {weight.tensor_type!r} "
                         f"({error}); update gguf (pip install -U gguf) or load a GGUF file of another "
                         "quantisation (Q8_0, Q4_K_M ...)") from None
    return torch.from_numpy(values.astype("float32", copy=False)).reshape(tuple(weight.shape))
