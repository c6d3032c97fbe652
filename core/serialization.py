"""Refusal-vector files: safetensors tensors plus JSON provenance in the header metadata.

This module knows the file layout only; it imports nothing else from ``core`` (``core.refusal`` turns a
:class:`StoredBasis` into a ``RefusalBasis`` and back). A file of format version 2 holds, for each *record*
(one per input: a layer's own input, or an input several layers read, such as Wan's projected text context
that every block's ``cross_attn.k`` / ``cross_attn.v`` reads), the tensors ``vector/S``, ``basis/S``,
``direction/S``, ``safe_mean/S`` and ``subspace/S`` where ``S`` is the record's input name, and one metadata
entry (``video_unlearning``) with the format version, the method and its parameters, the concept label and
pairs, the source model's family and weight fingerprint, the edited layers with the input each one reads
(``sources``: layer -> S, so a shared record is stored once), and each record's width and scores.

Version 1 files (written before inputs could be shared) name tensors by layer and have no ``sources``: every
layer is its own input. They load unchanged. Loading checks everything and says exactly what is wrong, because
a refusal vector applied to the wrong model silently damages it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import load

FORMAT = "video-unlearning/refusal-vector"
FORMAT_VERSION = 2
#: Versions this module reads (1: one record per layer, no ``sources``).
READABLE_VERSIONS = (1, 2)
METADATA_KEY = "video_unlearning"
KINDS = ("vector", "basis", "direction", "safe_mean", "subspace")
_PROVENANCE = ("method", "rank", "alpha", "concept", "pairs", "model_family", "model_fingerprint")
#: Provenance added in later releases: older files lack it, and the reader's default stands in (edit: direction;
#: fit_revision: 1, the approximate contrastive solve; see ``core.refusal.FIT_REVISION``; measurement: none
#: recorded, see ``core.refusal.RefusalBasis.measurement``).
_OPTIONAL_PROVENANCE = ("edit", "fit_revision", "measurement", "combined_from")


#: Largest safe-mean entry a file may hold: float16's largest finite value (see the check in read_basis_file).
SAFE_MEAN_LIMIT = 65504.0
#: What to do about a file whose content is malformed: nothing in it can be trusted, so fit it again.
_REMEDY = "compute the vector again with Low-Rank Refusal Vector (and save it with Save Refusal Vector)"


class RefusalFileError(ValueError):
    """A refusal-vector file that is missing, corrupt, foreign or inconsistent."""


@dataclass(frozen=True)
class StoredRecord:
    """One record as stored: ``tensors`` (the :data:`KINDS`, float32) and ``score`` (name -> float)."""

    tensors: dict[str, torch.Tensor]
    score: dict[str, float]


@dataclass(frozen=True)
class StoredBasis:
    """A refusal-vector file's content as plain data.

    ``layers``: edited layer -> the input name of its record (in edit order); ``records``: input name ->
    :class:`StoredRecord`; ``provenance``: method, rank, alpha, concept, pairs, model_family,
    model_fingerprint (and ``concepts``, informative).
    """

    layers: dict[str, str]
    records: dict[str, StoredRecord]
    provenance: dict


def write_basis_file(stored: StoredBasis, path, *, extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``stored`` to ``path`` (safetensors, format version 2) atomically. ``extra_metadata`` adds string
    header entries."""
    path = Path(path)
    missing = sorted(set(stored.layers.values()) - set(stored.records))
    if missing:
        raise ValueError(f"layers read inputs {missing} that have no record")
    tensors = {f"{kind}/{source}": record.tensors[kind].to(torch.float32).contiguous()
               for source, record in stored.records.items() for kind in KINDS}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **stored.provenance,
        "layers": list(stored.layers),
        "sources": dict(stored.layers),
        "dims": {source: int(record.tensors["basis"].shape[0]) for source, record in stored.records.items()},
        "scores": {source: dict(record.score) for source, record in stored.records.items()},
    }
    header = {METADATA_KEY: json.dumps(meta)}
    for key, value in (extra_metadata or {}).items():
        if key == METADATA_KEY or not isinstance(value, str):
            raise ValueError(f"extra metadata {key!r} must be a str entry other than {METADATA_KEY!r}")
        header[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(tensors, path, header)


def save_atomic(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str]) -> None:
    """Write a safetensors file so that ``path`` is either absent or complete (never a half-written file under the
    real name): written to a temporary file beside it, then renamed over it (``os.replace``); on any error the
    temporary file is removed. Its name is short, as the file's own may be near the file system's limit.

    The same tensors and metadata always give the same bytes (:func:`_canonical_header`), so a file's SHA-256 can be
    checked against a re-export."""
    handle, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=Path(path).absolute().parent)
    os.close(handle)
    try:
        safetensors.torch.save_file(tensors, temporary, metadata=metadata)
        _canonical_header(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _canonical_header(path: Path) -> None:
    """Rewrite the JSON header of the safetensors file at ``path`` in a fixed order: ``__metadata__`` first with its
    entries sorted by key, then the tensors by name (each keeps its ``data_offsets``, so the data is untouched).

    safetensors writes ``__metadata__`` in hash-map order, which changes from call to call: four exports of one LoRA,
    tensors and metadata equal, gave four different SHA-256, so no auditor could match a shipped file to a
    re-export. The layout stays safetensors' own: an 8-byte little-endian size, then the compact JSON padded with
    spaces to a multiple of 8 (its tensor data stays 8-byte aligned)."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    ordered = {"__metadata__": dict(sorted(header.pop("__metadata__").items()))} if "__metadata__" in header else {}
    ordered.update(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(len(text).to_bytes(8, "little"))
        handle.write(text)
        handle.write(memoryview(data)[8 + size:])


def read_metadata(path) -> dict:
    """The JSON provenance of a refusal-vector file, validated for format and version."""
    return _read(Path(path))[1]


def _read(path: Path) -> tuple[bytes, dict]:
    """The bytes of a refusal-vector file and its validated provenance, read once (see :func:`read_basis_file`)."""
    if not path.is_file():
        raise RefusalFileError(f"refusal vector file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RefusalFileError(f"{path.name} cannot be read ({error.strerror}); check its permissions") from None
    return data, _provenance(_header_metadata(data, path.name), path.name)


def _provenance(header: dict, name: str) -> dict:
    if METADATA_KEY not in header:
        raise RefusalFileError(
            f"{name} has no {METADATA_KEY!r} metadata: it is not a refusal vector (a LoRA or a model file?). "
            "Compute one with the Low-Rank Refusal Vector node and save it with Save Refusal Vector"
        )
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise RefusalFileError(f"{name}: its metadata is not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RefusalFileError(f"{name}: metadata format is {meta.get('format') if isinstance(meta, dict) else meta!r}, expected {FORMAT!r}")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise RefusalFileError(
            f"{name}: format version {version!r} is not supported by this version of the pack "
            f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))}); update the pack or re-create the vector"
        )
    return meta


def _header_metadata(data: bytes, name: str) -> dict:
    """The ``__metadata__`` of a safetensors file held in ``data`` (8-byte little-endian header size, JSON header)."""
    try:
        if len(data) < 8:
            raise ValueError(f"{len(data)} bytes, shorter than a header")
        size = int.from_bytes(data[:8], "little")
        if size > len(data) - 8:
            raise ValueError(f"header of {size} bytes in a file of {len(data)}")
        header = json.loads(data[8:8 + size])
        metadata = (header.get("__metadata__") or {}) if isinstance(header, dict) else None
        if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
            raise ValueError("the header or its __metadata__ is not a JSON object of strings")
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise RefusalFileError(f"{name} is not a readable safetensors file ({error}); re-save or re-download it") from None
    return metadata


def read_basis_file(path) -> StoredBasis:
    """Read and validate a refusal-vector file (version 1 or 2) into a :class:`StoredBasis`.

    The file is read into memory once, metadata and tensors from the same bytes: ``load_file`` maps the file, so a
    vector loaded from it changed when the file was overwritten in place (the checks below not run again), and an
    emptied file killed the process (SIGBUS) when the vector was next read."""
    path = Path(path)
    data, meta = _read(path)
    try:
        tensors = load(data)
    except (SafetensorError, OSError, ValueError) as error:
        raise RefusalFileError(f"{path.name}: tensors cannot be read ({error}); the file is corrupt") from None
    missing = [key for key in (*_PROVENANCE, "layers", "dims", "scores") if key not in meta]
    if missing:
        raise RefusalFileError(f"{path.name}: metadata lacks {missing}; the file is incomplete")
    layers = meta["layers"]
    if not isinstance(layers, list) or not layers or not all(isinstance(layer, str) for layer in layers):
        raise RefusalFileError(f"{path.name}: metadata lists no layers")
    if meta["format_version"] == 1:
        sources = {layer: layer for layer in layers}  # version 1: every layer its own record, named by the layer
    else:
        sources = meta.get("sources")
        if not isinstance(sources, dict) or set(sources) != set(layers):
            raise RefusalFileError(f"{path.name}: metadata 'sources' must name the input of every layer in 'layers'; "
                                   "the file is incomplete")
        sources = {layer: str(sources[layer]) for layer in layers}
    records = {}
    for source in dict.fromkeys(sources.values()):
        dim = meta["dims"].get(source) if isinstance(meta["dims"], dict) else None
        entry = {}
        for kind in KINDS:
            key = f"{kind}/{source}"
            if key not in tensors:
                raise RefusalFileError(f"{path.name}: tensor {key!r} is missing; the file is incomplete")
            tensor = tensors[key]
            matrix = kind in ("basis", "subspace")  # [d, k], k >= 1; the others [d] or [c, d]
            if tensor.dtype != torch.float32 or tensor.ndim not in ((2,) if matrix else (1, 2)) or \
                    0 in tensor.shape or tensor.shape[0 if matrix else -1] != dim:
                raise RefusalFileError(
                    f"{path.name}: tensor {key!r} has shape {tuple(tensor.shape)} / {tensor.dtype}, expected width "
                    f"{dim} float32, shaped {'[d, k] with k >= 1' if matrix else '[d] or [c, d]'}; the file is "
                    f"corrupt: {_REMEDY}"
                )
            if not torch.isfinite(tensor).all():
                raise RefusalFileError(f"{path.name}: tensor {key!r} contains NaN or Inf; the file is corrupt")
            # The safe mean is a mean of the layer's inputs. These layers run in fp16 or bf16 in ComfyUI, and their
            # inputs (projected or normalised text and hidden states) stay far inside fp16's range, or fp16
            # inference would give Inf; the pack's own vectors hold a few units at most. Beyond it the file is
            # damaged or hand-made: a safe mean of 1e30 passed every other check and made Apply's model output NaN.
            if kind == "safe_mean" and float(tensor.abs().max()) > SAFE_MEAN_LIMIT:
                raise RefusalFileError(f"{path.name}: tensor {key!r} reaches {float(tensor.abs().max()):.3g}, beyond "
                                       f"fp16's range ({SAFE_MEAN_LIMIT:g}) that a mean of a layer's inputs never "
                                       f"leaves; the file is damaged or hand-edited: {_REMEDY}, or download it again")
            entry[kind] = tensor
        subspace = entry["subspace"]
        gram = subspace.T.double() @ subspace.double()
        if not torch.allclose(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-4):
            raise RefusalFileError(f"{path.name}: the edit subspace of {source!r} is not orthonormal; the file is corrupt")
        score = meta["scores"].get(source) if isinstance(meta["scores"], dict) else None
        if not isinstance(score, dict) or not all(isinstance(v, (int, float)) for v in score.values()):
            raise RefusalFileError(f"{path.name}: the scores of {source!r} are missing or malformed")
        records[source] = StoredRecord(tensors=entry, score=score)
    extra = sorted(set(tensors) - {f"{kind}/{source}" for kind in KINDS for source in records})
    if extra:
        raise RefusalFileError(f"{path.name}: unexpected tensors {extra[:5]}; the file was not written by this pack")
    provenance = {key: meta[key] for key in (*_PROVENANCE, *_OPTIONAL_PROVENANCE) if key in meta}
    _check_provenance(path.name, provenance)
    return StoredBasis(layers=sources, records=records, provenance=provenance)


def _check_provenance(name: str, provenance: dict) -> None:
    """The provenance's types as :func:`write_basis_file` writes them; a mistyped entry is a file error that names
    it (read as it stands, ``pairs = "ab"`` would become the pairs ``("a",), ("b",)`` and ``concept = null`` the
    label ``"None"``). Whether a value is known (an edit, a fit revision) is ``core.refusal``'s to judge."""
    def bad(key: str, expected: str) -> RefusalFileError:
        return RefusalFileError(f"{name}: metadata {key!r} is {provenance[key]!r}, expected {expected}; the file is "
                                f"corrupt: {_REMEDY}")

    for key in ("method", "concept", "model_family", "model_fingerprint", "edit"):
        if key in provenance and not isinstance(provenance[key], str):
            raise bad(key, "a string")
    pairs = provenance["pairs"]
    if not isinstance(pairs, list) or not all(isinstance(pair, list) and len(pair) == 2
                                              and all(isinstance(side, str) for side in pair) for pair in pairs):
        raise bad("pairs", 'a list of [unsafe prompt, safe prompt] string pairs, e.g. [["a Rolex", "a watch"]]')
    for key in ("rank", "fit_revision"):
        if key in provenance and (not isinstance(provenance[key], int) or isinstance(provenance[key], bool)):
            raise bad(key, "an integer")
    combined = provenance.get("combined_from")
    if combined is not None and (not isinstance(combined, list) or not all(isinstance(e, dict) for e in combined)):
        raise bad("combined_from", "a list of JSON objects, one per combined concept")
    # A combination of vectors fitted with different alphas has none of its own (its concepts' are in combined_from).
    if not (provenance["alpha"] is None and combined) and (
            isinstance(provenance["alpha"], bool) or not isinstance(provenance["alpha"], (int, float))):
        raise bad("alpha", "a number" + (" or null" if combined else ""))
    if "measurement" in provenance and not isinstance(provenance["measurement"], dict):
        raise bad("measurement", "a JSON object of Collect Activations' settings")
