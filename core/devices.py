"""Numbers crossing between the model's device and the CPU, where the fits run in float64.

Not every accelerator has float64: Apple's MPS raises on it ("Cannot convert a MPS Tensor to float64 dtype"), and
Intel's Arc GPUs lack it in hardware. Conversions to float64 are exact and conversions from it round to nearest
wherever they are done, so doing them on the CPU gives the same numbers on every device.
"""

from __future__ import annotations

import torch

#: Device types known to hold float64 (ROCm reports "cuda"): a token mean is reduced there, before the copy.
FLOAT64_DEVICES = ("cpu", "cuda")


def cpu_float64(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float64 on the CPU, copied in its own dtype and converted there."""
    return tensor.detach().cpu().to(torch.float64)


def token_mean_float64(tokens: torch.Tensor) -> torch.Tensor:
    """The float64 mean over axis 1 of ``tokens`` ``[batch, tokens, d]``, as ``[batch, d]`` on the CPU.

    Reduced on the tokens' device where it holds float64, so that only ``[batch, d]`` is copied (a Wan 14B layer's
    tokens at 480p are ~0.7 GB); elsewhere the tokens are copied to the CPU first (the same float64 sums)."""
    tokens = tokens.detach()
    if tokens.device.type in FLOAT64_DEVICES:
        return tokens.to(torch.float64).mean(dim=1).cpu()
    return cpu_float64(tokens).mean(dim=1)


def to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A CPU ``tensor`` (float64 from a fit) in ``dtype`` on ``device``: converted on the CPU, then copied."""
    return tensor.to(dtype).to(device)
