"""Refusal-vector files: safetensors tensors plus JSON provenance in the header metadata.

A file holds, for each layer ``L``, the tensors ``vector/L``, ``basis/L``, ``direction/L``,
``safe_mean/L`` and ``subspace/L``, and one metadata entry (``video_unlearning``) with the format
version, the method and its parameters, the concept label and pairs, the source model's family
and weight fingerprint, and the per-layer scores. Loading checks all of it and says exactly what
is wrong, because a refusal vector applied to the wrong model silently damages it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "video-unlearning/refusal-vector"
FORMAT_VERSION = 1
METADATA_KEY = "video_unlearning"
_KINDS = ("vector", "basis", "direction", "safe_mean", "subspace")


class RefusalFileError(ValueError):
    """A refusal-vector file that is missing, corrupt, foreign or inconsistent."""


def save_basis(basis, path, *, extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``basis`` to ``path`` (safetensors). ``extra_metadata`` adds string header entries."""
    path = Path(path)
    tensors = {}
    for layer in basis.layers:
        for kind, mapping in zip(_KINDS, (basis.vectors, basis.bases, basis.directions, basis.safe_means,
                                          basis.subspaces)):
            tensors[f"{kind}/{layer}"] = mapping[layer].to(torch.float32).contiguous()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": basis.method,
        "rank": basis.rank,
        "alpha": basis.alpha,
        "concept": basis.concept,
        "pairs": [list(p) for p in basis.pairs],
        "model_family": basis.model_family,
        "model_fingerprint": basis.model_fingerprint,
        "layers": basis.layers,
        "dims": basis.dims,
        "concepts": basis.concepts,
        "scores": {layer: basis.scores[layer].as_dict() for layer in basis.layers},
    }
    header = {METADATA_KEY: json.dumps(meta)}
    for key, value in (extra_metadata or {}).items():
        if key == METADATA_KEY or not isinstance(value, str):
            raise ValueError(f"extra metadata {key!r} must be a str entry other than {METADATA_KEY!r}")
        header[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    os.replace(tmp, path)  # never leave a half-written vector under the real name


def read_metadata(path) -> dict:
    """The JSON provenance of a refusal-vector file, validated for format and version."""
    path = Path(path)
    if not path.is_file():
        raise RefusalFileError(f"refusal vector file not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise RefusalFileError(f"{path.name} is not a readable safetensors file ({error}); re-save or re-download it") from None
    if METADATA_KEY not in header:
        raise RefusalFileError(
            f"{path.name} has no {METADATA_KEY!r} metadata: it is not a refusal vector (a LoRA or a model file?). "
            "Compute one with the Low-Rank Refusal Vector node and save it with Save Refusal Vector"
        )
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise RefusalFileError(f"{path.name}: its metadata is not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RefusalFileError(f"{path.name}: metadata format is {meta.get('format') if isinstance(meta, dict) else meta!r}, expected {FORMAT!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise RefusalFileError(
            f"{path.name}: format version {version!r} is not supported by this version of the pack "
            f"(it reads version {FORMAT_VERSION}); update the pack or re-create the vector"
        )
    return meta


def load_basis(path):
    """Read and validate a refusal-vector file into a :class:`~core.refusal.RefusalBasis`."""
    from .refusal import LayerScore, RefusalBasis

    path = Path(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise RefusalFileError(f"{path.name}: tensors cannot be read ({error}); the file is corrupt") from None
    required = ("method", "rank", "alpha", "concept", "pairs", "model_family", "model_fingerprint", "layers",
                "dims", "scores")
    missing = [key for key in required if key not in meta]
    if missing:
        raise RefusalFileError(f"{path.name}: metadata lacks {missing}; the file is incomplete")
    layers = meta["layers"]
    if not isinstance(layers, list) or not layers:
        raise RefusalFileError(f"{path.name}: metadata lists no layers")
    per_kind = {kind: {} for kind in _KINDS}
    for layer in layers:
        dim = meta["dims"].get(layer)
        for kind in _KINDS:
            key = f"{kind}/{layer}"
            if key not in tensors:
                raise RefusalFileError(f"{path.name}: tensor {key!r} is missing; the file is incomplete")
            tensor = tensors[key]
            if tensor.dtype != torch.float32 or tensor.shape[0 if kind in ("basis", "subspace") else -1] != dim:
                raise RefusalFileError(
                    f"{path.name}: tensor {key!r} has shape {tuple(tensor.shape)} / {tensor.dtype}, "
                    f"expected width {dim} float32"
                )
            if not torch.isfinite(tensor).all():
                raise RefusalFileError(f"{path.name}: tensor {key!r} contains NaN or Inf; the file is corrupt")
            per_kind[kind][layer] = tensor
        subspace = per_kind["subspace"][layer]
        gram = subspace.T.double() @ subspace.double()
        if not torch.allclose(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-4):
            raise RefusalFileError(f"{path.name}: the edit subspace of {layer!r} is not orthonormal; the file is corrupt")
    extra = sorted(set(tensors) - {f"{kind}/{layer}" for kind in _KINDS for layer in layers})
    if extra:
        raise RefusalFileError(f"{path.name}: unexpected tensors {extra[:5]}; the file was not written by this pack")
    try:
        scores = {layer: LayerScore(**{k: float(v) for k, v in meta["scores"][layer].items()}) for layer in layers}
    except (KeyError, TypeError) as error:
        raise RefusalFileError(f"{path.name}: per-layer scores are malformed ({error})") from None
    rank, alpha = meta["rank"], meta["alpha"]
    if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise RefusalFileError(f"{path.name}: rank {rank!r} / alpha {alpha!r} are invalid")
    return RefusalBasis(
        layers=layers,
        vectors=per_kind["vector"],
        bases=per_kind["basis"],
        directions=per_kind["direction"],
        safe_means=per_kind["safe_mean"],
        scores=scores,
        method=str(meta["method"]),
        rank=rank,
        alpha=float(alpha),
        concept=str(meta["concept"]),
        pairs=tuple(tuple(p) for p in meta["pairs"]),
        model_family=str(meta["model_family"]),
        model_fingerprint=str(meta["model_fingerprint"]),
        subspaces=per_kind["subspace"],
    )
