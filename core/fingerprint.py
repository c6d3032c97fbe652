"""A fast fingerprint of model weights, so a refusal vector remembers what it was measured on.

Hashing every byte of a 14B-parameter model would take minutes; the fingerprint hashes each
tensor's name and shape plus a fixed strided sample of its values (about 4k per tensor), as float32.
Two checkpoints that differ only in unsampled entries collide; a fine-tune, a different size or a
quantisation that rounds the values does not. The same values held in another dtype (an fp16 file kept
in float32 on a CPU and in float16 on a GPU, or under ``--fp16-unet``) are the same weights; until
2026-12-06 the dtype was hashed too (``with_dtype=True`` gives that older fingerprint, which saved
vectors may hold).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch

SAMPLES_PER_TENSOR = 4096


def fingerprint_weights(tensors: Mapping[str, torch.Tensor], *, with_dtype: bool = False) -> str:
    """sha256 hex digest (first 16 hex digits) over names, shapes and sampled values (and dtypes: the form before
    2026-12-06)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"{name}|{tuple(tensor.shape)}{f'|{tensor.dtype}' if with_dtype else ''}".encode())
        flat = tensor.reshape(-1)
        if flat.numel():
            step = max(1, flat.numel() // SAMPLES_PER_TENSOR)
            sample = flat[::step][:SAMPLES_PER_TENSOR].to("cpu", torch.float32)
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
