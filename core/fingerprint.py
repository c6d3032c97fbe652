"""A fast fingerprint of model weights, so a refusal vector remembers what it was measured on.

Hashing every byte of a 14B-parameter model would take minutes; the fingerprint hashes each
tensor's name, shape and dtype plus a fixed strided sample of its values (about 4k per tensor).
Two checkpoints that differ only in unsampled entries collide; a fine-tune, a different size or a
different quantisation does not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch

SAMPLES_PER_TENSOR = 4096


def fingerprint_weights(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex digest (first 16 hex digits) over names, shapes, dtypes and sampled values."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        flat = tensor.reshape(-1)
        if flat.numel():
            step = max(1, flat.numel() // SAMPLES_PER_TENSOR)
            sample = flat[::step][:SAMPLES_PER_TENSOR].to("cpu", torch.float32)
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
