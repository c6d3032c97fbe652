"""Weights stored packed by another pack: ComfyUI-GGUF's quantised tensors, read as the numbers the layer uses.

ComfyUI-GGUF (``UnetLoaderGGUF``, the usual way to run Wan 14B on a consumer GPU) keeps each quantised weight as a
``torch.Tensor`` subclass that holds the file's raw blocks (``uint8``, e.g. ``[5120, 5440]`` for a Q8_0
``[5120, 5120]`` weight) and reports the logical shape through ``.shape`` and the block format through
``.tensor_type``; its layers dequantise on every forward. Arithmetic on the raw tensor is meaningless (Apply
Unlearning failed with "The size of tensor a (128) must match the size of tensor b (136)"), so the pack reads such
a weight through the format's reference decoder, ``gguf.quants.dequantize`` from the ``gguf`` package that
ComfyUI-GGUF requires. The patches a loaded clone attaches to the tensor (``.patches``) are not applied: this is
the file's weight, as :func:`nodes.weights.stored_weight` returns it for every other format.
"""

from __future__ import annotations

import torch


def is_packed(weight: torch.Tensor) -> bool:
    """True for a weight whose stored elements are not its values: a GGUF block format, or GGUF BF16 (raw bytes).

    ComfyUI-GGUF's F32 and F16 tensors are plain views of their values (same size as their shape) and need nothing.
    """
    return getattr(weight, "tensor_type", None) is not None and tuple(weight.size()) != tuple(weight.shape)


def unpacked_weight(weight: torch.Tensor) -> torch.Tensor:
    """The values of a packed weight, float32 ``[*shape]`` on the CPU (:func:`is_packed` must be true)."""
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
