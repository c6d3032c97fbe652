"""The frozen refusal basis: a read-only mapping from layer name to one :class:`LayerRefusal` record per *input*,
and its file.

It is the result of :class:`core.refusal.RefusalFitter`. Layers that read one and the same
tensor (on Wan every block's text-side ``cross_attn.k`` / ``cross_attn.v`` reads the projected text context)
are fitted once and map to the same record; :meth:`RefusalBasis.shared_inputs` says which. A record holds the refusal
vector ``[d]``, the contrastive subspace U ``[d, k]``, the edit direction ``[d]``, the safe mean ``[d]`` (``[c, d]``
for c combined concepts) and what edits remove, the subspace ``[d, c]``. :meth:`RefusalBasis.save` and
:meth:`RefusalBasis.load` write and read it through ``core.serialization``; :meth:`RefusalBasis.combine` stacks
several concepts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch

from .pairs import DIGEST_PREFIX, exact_digest, prompt_digest
from .serialization import RefusalFileError, StoredBasis, StoredRecord, read_basis_file, write_basis_file

# The basis's messages (a file's load warnings) keep the logger they had before it moved out of core.refusal, so
# logging configured for that name still sees them.
logger = logging.getLogger(f"{__package__}.refusal")

#: What an edit removes: the one refusal direction per input, or the whole contrastive subspace U (rank k).
EDITS = ("direction", "subspace")
#: Which contrastive solve made a basis, stored in its file. 3: U keeps only eigenvectors of positive eigenvalue
#: (at most ``rank``; since 2026-12-01, later that day). 2: exact, but U took the top ``rank`` eigenvectors even
#: where fewer had positive eigenvalues. 1: files without the entry, whose ``cpca`` subspace came from a truncated
#: QR span and is approximate (on the organism the edit direction was off by 3-11 degrees and rank-4..16 subspaces
#: by 12-46 degrees).
FIT_REVISION = 3


@dataclass(frozen=True)
class LayerScore:
    """How strongly a layer carries the concept.

    Attributes:
        norm: |r|, the length of the raw refusal vector.
        relative_norm: |r| divided by the RMS length of the safe activations, comparable across
            layers of different scale.
        contrast: share of the pair differences' second moment that lies along the edit
            direction, minus alpha times the neutral variance there (normalised the same way).
            High means the direction is concept-specific, low means it is shared with ordinary
            variation.
        separation: Cohen's d of unsafe vs. safe activations projected on the edit direction.
            The main "this layer carries the concept" number.
    """

    norm: float
    relative_norm: float
    contrast: float
    separation: float

    def as_dict(self) -> dict[str, float]:
        return {"norm": self.norm, "relative_norm": self.relative_norm, "contrast": self.contrast,
                "separation": self.separation}


@dataclass(frozen=True, eq=False)
class LayerRefusal:
    """The frozen refusal record of one input (float32, CPU), shared by every layer that reads that input.

    Attributes:
        vector: the refusal vector r ``[d]`` (``[c, d]`` in a record combined from c concepts).
        basis: the contrastive concept subspace U ``[d, k]`` (orthonormal columns).
        direction: the unit edit direction ``[d]`` (``[c, d]`` combined).
        safe_mean: mean activation of the safe prompts ``[d]`` (``[c, d]`` combined); where the affine edit
            moves the removed component.
        subspace: what edits remove, ``[d, c']`` orthonormal: the direction(s), re-orthonormalised.
        score: how strongly this input carries the concept (:class:`LayerScore`).
        source: the name of the input this record was measured on: the layer's own name, or the name of a
            shared input (``"text_embedding"``: Wan's projected text context, read by every block's text-side
            ``cross_attn.k`` and ``cross_attn.v``).
    """

    vector: torch.Tensor
    basis: torch.Tensor
    direction: torch.Tensor
    safe_mean: torch.Tensor
    subspace: torch.Tensor
    score: LayerScore
    source: str

    def __post_init__(self):
        dim = self.basis.shape[0] if self.basis.ndim == 2 else -1
        shapes = {"vector": self.vector, "direction": self.direction, "safe_mean": self.safe_mean}
        bad = {name: tuple(t.shape) for name, t in shapes.items() if t.ndim not in (1, 2) or t.shape[-1] != dim}
        if dim < 1 or bad or self.subspace.ndim != 2 or self.subspace.shape[0] != dim:
            raise ValueError(f"LayerRefusal {self.source!r}: basis must be [d, k], subspace [d, c], vector / direction "
                             f"/ safe_mean [d] or [c, d]; got basis {tuple(self.basis.shape)}, subspace "
                             f"{tuple(self.subspace.shape)}, {bad or 'the rest fine'}")
        if not isinstance(self.score, LayerScore):
            raise TypeError(f"LayerRefusal {self.source!r}: score must be a LayerScore, "
                            f"got {type(self.score).__name__}")

    @property
    def dim(self) -> int:
        """Width d of the input."""
        return int(self.basis.shape[0])

    @property
    def concepts(self) -> int:
        """Number of concepts c stacked in this record."""
        return int(self.direction.reshape(-1, self.dim).shape[0])

    def target(self) -> torch.Tensor:
        """Where the affine edit moves the removed component ``[d]``: the safe mean; for a record combined from c
        concepts, the point whose component along each concept's direction is that concept's own safe mean's.

        Combined: ``t = m + U (D U)^+ (b - D m)`` with ``m`` the concepts' mean safe mean, ``D`` ``[c, d]`` their
        directions, ``b_c = d_c . mu_c`` and ``U`` the record's subspace; only ``U^T t`` reaches an edit. The mean
        alone (until 2026-12-06) left the trademark's component 19 % of its pair shift away from its safe mean on the
        organism's nudity + violence + trademark. Directions that are nearly dependent get the least-squares point."""
        if self.safe_mean.ndim == 1:
            return self.safe_mean
        means, directions = self.safe_mean.double(), self.direction.reshape(-1, self.dim).double()  # [c, d]
        mean = means.mean(0)
        u = self.subspace.double()  # [d, k]
        wanted = (directions * means).sum(1) - directions @ mean  # [c]
        step = torch.linalg.pinv(directions @ u, rtol=1e-6) @ wanted  # [k]
        return (mean + u @ step).to(self.safe_mean.dtype)


@dataclass(frozen=True, eq=False)
class RefusalBasis(Mapping):
    """Frozen result of :class:`RefusalFitter`: a read-only mapping from layer name to its :class:`LayerRefusal`.

    Layers that read one input map to the *same* record object (:meth:`shared_inputs` says which); a file
    stores such a record once. Edits use :meth:`subspace` ``[d, c]`` (orthonormal) and :meth:`target` ``[d]``.
    A basis combined from c concepts (:meth:`combine`) stacks each record's vectors, directions and safe means
    as ``[c, d]``. The global fields are the provenance: method and parameters, concept label and pairs, and the
    source model's family and weight fingerprint, and ``fit_revision`` (:data:`FIT_REVISION`; 1 for a file
    written before the exact contrastive solve, whose ``cpca`` subspace is approximate; 2 before U kept only
    directions of positive contrast).
    """

    records: Mapping[str, LayerRefusal]
    method: str = "cpca"
    rank: int = 1
    alpha: float | None = 1.0
    edit: str = "direction"
    concept: str = ""
    pairs: tuple = ()
    model_family: str = ""
    model_fingerprint: str = ""
    fit_revision: int = FIT_REVISION
    #: How the activations were measured, so a saved vector can be recomputed and audited (empty for a basis built in
    #: code and for files written before the field was added, 2026-12-06): the neutral prompts in order and their
    #: count, Collect Activations' seed, timesteps (and the sigmas they gave), latent size, layer group and block
    #: range, and the text encoder's identity (class, weight fingerprint, patches). JSON data, written as the file's
    #: ``measurement``.
    measurement: Mapping = dataclasses.field(default_factory=dict)
    #: One entry per concept of a basis made by :meth:`combine` (empty otherwise), in the order of its directions'
    #: rows: that concept's ``concept``, ``method``, ``rank``, ``alpha``, ``edit``, ``fit_revision``, ``pairs`` (how
    #: many of :attr:`pairs`, which lists them concept after concept), ``measurement`` and ``vector_sha256`` (its
    #: :meth:`content_sha256`). The global fields cannot say this: a combination of alpha 1.0 and alpha 0.25 recorded
    #: the first input's alpha for both (until 2026-12-06), so the file depended on the order of Combine's sockets.
    #: Saved as the file's ``combined_from``; combined files saved before then load with none.
    combined_from: tuple = ()

    def __post_init__(self):
        records = dict(self.records)
        if not records:
            raise ValueError("a RefusalBasis needs at least one layer")
        if self.edit not in EDITS:
            raise ValueError(f"RefusalBasis.edit must be one of {EDITS}, got {self.edit!r}")
        wrong = [layer for layer, record in records.items() if not isinstance(record, LayerRefusal)]
        if wrong:
            raise TypeError(f"RefusalBasis.records must map layer names to LayerRefusal; {wrong[:3]} do not")
        owners: dict[str, int] = {}
        for record in records.values():
            if owners.setdefault(record.source, id(record)) != id(record):
                raise ValueError(f"two different records are named input {record.source!r}; layers that read one "
                                 "input must share one record object")
        object.__setattr__(self, "records", MappingProxyType(records))
        object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))
        object.__setattr__(self, "measurement", MappingProxyType(dict(self.measurement)))
        object.__setattr__(self, "combined_from", tuple(dict(entry) for entry in self.combined_from))

    # Mapping: layer -> LayerRefusal
    def __getitem__(self, layer: str) -> LayerRefusal:
        try:
            return self.records[layer]
        except KeyError:
            raise KeyError(f"layer {layer!r} is not in this refusal vector; it has {self.layers}") from None

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def layers(self) -> list[str]:
        """The edited layers, in order."""
        return list(self.records)

    @property
    def dims(self) -> dict[str, int]:
        """Width d of each layer's input."""
        return {layer: record.dim for layer, record in self.records.items()}

    @property
    def concepts(self) -> int:
        """Number of concepts c stacked in this basis."""
        return next(iter(self.records.values())).concepts

    def shared_inputs(self) -> dict[str, list[str]]:
        """Input name -> the layers of this basis that read it (one record), for inputs read by two layers or more.

        On Wan every block's text-side ``cross_attn.k`` and ``cross_attn.v`` read the projected text context:
        ``{"text_embedding": ["blocks.0.cross_attn.k", "blocks.0.cross_attn.v", ...]}``. Their scores are one
        score, measured once."""
        groups: dict[str, list[str]] = {}
        for layer, record in self.records.items():
            groups.setdefault(record.source, []).append(layer)
        return {source: layers for source, layers in groups.items() if len(layers) > 1}

    def narrow_inputs(self) -> dict[str, int]:
        """Input -> directions kept, for the inputs of a contrastive fit that kept fewer than ``rank`` (U keeps only
        directions of positive contrast: with 5 text-side pairs at most 5)."""
        if self.method != "cpca":
            return {}
        records = {record.source: record for record in self.records.values()}
        return {source: record.basis.shape[1] for source, record in records.items()
                if record.basis.shape[1] < self.rank}

    def subspace(self, layer: str) -> torch.Tensor:
        """Orthonormal edit subspace ``[d, c]`` of ``layer``."""
        return self[layer].subspace

    def target(self, layer: str) -> torch.Tensor:
        """Where the affine edit moves the removed component ``[d]``: :meth:`LayerRefusal.target`."""
        return self[layer].target()

    def select(self, layers: Sequence[str]) -> "RefusalBasis":
        """The same basis restricted to ``layers`` (in that order); shared records stay shared."""
        layers = list(layers)
        if not layers:
            raise ValueError("select() needs at least one layer")
        return dataclasses.replace(self, records={layer: self[layer] for layer in layers})

    def with_pair_digests(self) -> "RefusalBasis":
        """The same basis with each pair's prompts replaced by :func:`core.pairs.prompt_digest`: saved so, the file
        does not carry the prompts' text, and a validation pair can still be told to be one of them. The neutral
        prompts of :attr:`measurement` are replaced by their digests too, in order. Those digests fold case and
        spacing, which the text encoder reads, so :attr:`measurement` also gets one :func:`core.pairs.exact_digest`
        of all the pairs (``pairs_exact_sha256``) and of all the neutral prompts (``neutral_exact_sha256``) as they
        were encoded; a basis whose prompts already are digests keeps the ones it has."""
        measurement = _neutral_digested(self.measurement)
        if any(not prompt.startswith(DIGEST_PREFIX) for pair in self.pairs for prompt in pair):
            measurement["pairs_exact_sha256"] = exact_digest(self.pairs)
        combined_from = [{**entry, "measurement": _neutral_digested(entry.get("measurement", {}))}
                         for entry in self.combined_from]
        return dataclasses.replace(self, pairs=tuple((prompt_digest(u), prompt_digest(s)) for u, s in self.pairs),
                                   measurement=measurement, combined_from=combined_from)

    def save(self, path, *, extra_metadata: dict[str, str] | None = None) -> None:
        """Write to ``path`` (safetensors + JSON provenance); a shared record is stored once."""
        records = {}
        for record in self.records.values():
            records[record.source] = StoredRecord(
                tensors={"vector": record.vector, "basis": record.basis, "direction": record.direction,
                         "safe_mean": record.safe_mean, "subspace": record.subspace},
                score=record.score.as_dict())
        stored = StoredBasis(
            layers={layer: record.source for layer, record in self.records.items()}, records=records,
            provenance=self._provenance())
        write_basis_file(stored, path, extra_metadata=extra_metadata)

    def _provenance(self) -> dict:
        """The provenance :meth:`save` writes (JSON data)."""
        return {"method": self.method, "rank": self.rank, "alpha": self.alpha, "edit": self.edit,
                "concept": self.concept,
                "pairs": [list(p) for p in self.pairs], "model_family": self.model_family,
                "model_fingerprint": self.model_fingerprint, "concepts": self.concepts,
                "fit_revision": self.fit_revision,
                **({"measurement": dict(self.measurement)} if self.measurement else {}),
                **({"combined_from": [dict(entry) for entry in self.combined_from]} if self.combined_from else {})}

    def content_sha256(self) -> str:
        """A SHA-256 (64 hex digits) of this vector's tensors and provenance, which an exported LoRA records as
        ``video_unlearning_vector_sha256`` to name the vector it was made from.

        It is the same for the basis straight from Low-Rank Refusal Vector, for the file Save Refusal Vector writes
        (with pair_text text or digests) and for that file loaded again, since it hashes what those share. To
        recompute it from a vector file, with this pack importable::

            RefusalBasis.load("models/refusal_vectors/rolex_00001.safetensors").content_sha256()

        What is hashed, in order: the compact JSON (keys sorted, ``ensure_ascii=False``, UTF-8) of the provenance
        :meth:`save` writes, in which the pairs are replaced by :func:`core.pairs.exact_digest` of the pairs (a
        digests file's ``measurement.pairs_exact_sha256``) and the measurement's neutral prompts by theirs (its
        ``neutral_exact_sha256``), plus ``sources`` (layer -> input, in edit order); then, for each input in sorted
        order and each tensor kind (vector, basis, direction, safe_mean, subspace), ``"<kind>/<input>|<shape>"``
        and the tensor's float32 little-endian bytes. The scores are left out (they describe the fit, not the edit).
        A digests file written before exact digests were added (2026-12-06) holds none, so its id differs from its
        text original's.
        """
        # A file's alpha loads as a float; a combination of different alphas has none.
        content = {**self._provenance(), "alpha": None if self.alpha is None else float(self.alpha)}
        measurement = dict(content.pop("measurement", {}))
        content["pairs"] = measurement.pop("pairs_exact_sha256", None) or exact_digest(self.pairs)
        content["measurement"] = _neutral_hashed(measurement)
        if self.combined_from:
            # A concept's pairs are in its vector_sha256 (and in the combination's pairs): its own exact pair digest,
            # which only a digests file holds, is left out so that text and digests files share an id.
            content["combined_from"] = [{**entry, "measurement": _neutral_hashed(
                {k: v for k, v in entry.get("measurement", {}).items() if k != "pairs_exact_sha256"})}
                for entry in self.combined_from]
        content["sources"] = {layer: record.source for layer, record in self.records.items()}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                           ensure_ascii=False).encode("utf-8"))
        records = {record.source: record for record in self.records.values()}
        for source in sorted(records):
            for kind in ("vector", "basis", "direction", "safe_mean", "subspace"):
                tensor = getattr(records[source], kind).detach().to("cpu", torch.float32).contiguous()
                digest.update(f"{kind}/{source}|{tuple(tensor.shape)}".encode("utf-8"))
                digest.update(tensor.numpy().astype("<f4", copy=False).tobytes())
        return digest.hexdigest()

    @classmethod
    def load(cls, path) -> "RefusalBasis":
        """Read and validate a refusal-vector file (this format or the previous one, see ``core.serialization``)."""
        stored = read_basis_file(path)
        name = Path(path).name
        records = {}
        for source, entry in stored.records.items():
            try:
                score = LayerScore(**{key: float(value) for key, value in entry.score.items()})
            except (TypeError, ValueError) as error:
                raise RefusalFileError(f"{name}: the score of {source!r} is malformed ({error})") from None
            try:
                records[source] = LayerRefusal(**entry.tensors, score=score, source=source)
            except ValueError as error:
                raise RefusalFileError(f"{name}: {error}; the file is corrupt") from None
        meta = stored.provenance
        rank, alpha = meta["rank"], meta["alpha"]
        mixed = alpha is None and bool(meta.get("combined_from"))  # a combination of different alphas
        if not isinstance(rank, int) or rank < 1 or not mixed and (
                not isinstance(alpha, (int, float)) or not math.isfinite(alpha)):
            raise RefusalFileError(f"{name}: rank {rank!r} / alpha {alpha!r} are invalid")
        edit = meta.get("edit", "direction")
        if edit not in EDITS:
            raise RefusalFileError(f"{name}: metadata 'edit' is {edit!r}, expected one of {EDITS}; the file is "
                                   "corrupt: compute the vector again with Low-Rank Refusal Vector")
        for source, record in records.items():
            _check_edit_subspace(name, source, record, edit, rank)
        revision = meta.get("fit_revision", 1)
        if not isinstance(revision, int) or not 1 <= revision <= FIT_REVISION:
            raise RefusalFileError(f"{name}: fit_revision {revision!r} is unknown to this version of the pack "
                                   f"(it knows 1-{FIT_REVISION}); update the pack")
        cpca = "cpca" in str(meta["method"])
        if revision == 1:
            # Revision 1 is every file written before fit_revision was recorded (2026-12-01), any method: those of
            # 2026-11-28/29 may have averaged Wan's zero padding rows into each prompt's statistics, which no
            # metadata records, so the mean difference is as suspect as the contrastive solve.
            logger.warning("%s has no fit_revision: it was computed before 2026-12-01, and one computed before "
                           "Collect Activations stopped pooling the prompts' padding rows (2026-11-29) holds a "
                           "diluted difference plus a words-minus-padding direction%s. Compute it again with "
                           "Collect Activations and Low-Rank Refusal Vector from the same pairs, the same neutral "
                           "prompts and the same Collect Activations settings (seed, timesteps, width, height, length, "
                           "layer group, block range; older files do not record them)", name,
                           "; its cpca solve was also approximate (a direction off by a few degrees, a subspace "
                           "edit by more)" if cpca else "")
        elif revision == 2 and cpca and (edit == "subspace" or rank > len(meta["pairs"])):
            # Revision 2 kept rank eigenvectors whatever their sign. A subspace edit removes them all, and some can
            # have non-positive contrast even with rank <= pairs (pairs whose differences are nearly parallel): a
            # 636096d file held 4 columns where a fresh fit keeps 3. A direction edit removes the top eigenvector
            # only, which is positive whenever any is; it keeps the earlier rank > pairs rule.
            logger.warning("%s was fitted with rank %d from %d pairs (%s edit) before the subspace kept only "
                           "directions of positive contrast (2026-12-01): it may hold directions along which neutral "
                           "prompts vary more than the pairs differ. Compute it again with Low-Rank Refusal Vector",
                           name, rank, len(meta["pairs"]), edit)
        return cls(
            records={layer: records[source] for layer, source in stored.layers.items()},
            method=meta["method"],
            rank=rank,
            alpha=None if alpha is None else float(alpha),
            edit=edit,
            concept=meta["concept"],
            pairs=tuple(tuple(p) for p in meta["pairs"]),
            model_family=meta["model_family"],
            model_fingerprint=meta["model_fingerprint"],
            fit_revision=revision,
            measurement=meta.get("measurement", {}),
            combined_from=meta.get("combined_from", ()),
        )

    @classmethod
    def combine(cls, bases: Sequence["RefusalBasis"]) -> "RefusalBasis":
        """Erase several concepts at once: stack their directions per layer and re-orthonormalise.

        Layers present in only some of the bases keep the directions of those. Layers that share one record
        in every basis share one combined record. All bases must come from the same model family (and, where
        recorded, the same weights).

        Each concept's provenance is kept in :attr:`combined_from` (a combined input contributes its own entries), and
        the global fields hold what holds for all: ``alpha`` is the inputs' alpha when they agree and None when they
        differ; ``method`` their methods, sorted and joined by ``+``; ``rank`` the largest (what bounds a concept's
        edit columns when the file is loaded); ``fit_revision`` the oldest; ``pairs`` every concept's, in order.
        """
        bases = list(bases)
        if len(bases) < 2:
            raise ValueError(f"combine() needs at least two refusal vectors, got {len(bases)}")
        families = {b.model_family for b in bases if b.model_family}
        if len(families) > 1:
            raise ValueError(f"cannot combine refusal vectors of different model families: {sorted(families)}")
        prints = {b.model_fingerprint for b in bases if b.model_fingerprint}
        if len(prints) > 1:
            named = "; ".join(f"{b.concept or 'unnamed'}: {b.model_fingerprint}" for b in bases if b.model_fingerprint)
            lacking = _lacking_top_level(bases)
            if lacking:
                # the same block layers, and a layer outside the blocks in some only: a group that gained that layer
                # (HunyuanVideo's 'all' took vector_in.in_layer on 2026-12-06) after the others were computed
                (layer, old), *_ = lacking.items()
                who, one = ", ".join(old), len(old) == 1
                raise ValueError(f"cannot combine these refusal vectors: their weight fingerprints differ ({named}) "
                                 f"because {who} {'lacks' if one else 'lack'} {layer!r}, a layer outside the blocks "
                                 "that the others cover (their layers in the blocks are the same), and each "
                                 f"fingerprint covers its own layers only: {who} {'was' if one else 'were'} computed "
                                 f"before {layer!r} was part of the layer group. Compute {'it' if one else 'them'} "
                                 "again with the same layer group and block range in Collect Activations, which now "
                                 f"takes {layer!r}: on one model the fingerprints then agree and they combine (a model "
                                 "without that layer is another model, whose vectors do not combine with these)")
            if len({frozenset(b.layers) for b in bases if b.model_fingerprint}) > 1:
                # Each fingerprint covers its vector's own layers (Collect Activations' group and block range), so two
                # vectors of one model over different layers differ too: the prints cannot tell one model from two.
                covered = ", ".join(f"{b.concept or 'unnamed'}: {len(b.layers)} layers from {b.layers[0]!r}"
                                    for b in bases if b.model_fingerprint)
                raise ValueError(f"cannot combine these refusal vectors: their weight fingerprints differ ({named}), "
                                 f"but they cover different layers ({covered}) and each fingerprint covers its own "
                                 "layers only, so Combine cannot tell whether they come from one model. Compute them "
                                 "with the same layer group and block range in Collect Activations: on one model "
                                 "their fingerprints then agree and they combine")
            raise ValueError(f"cannot combine refusal vectors whose weight fingerprints differ ({named}): they were "
                             "measured on different weights, or one was saved before 2026-12-06, when the fingerprint "
                             "also hashed the weights' dtype; compute that one again on the same model")
        layers = list(dict.fromkeys(layer for b in bases for layer in b.layers))
        combined: dict[tuple, LayerRefusal] = {}  # by the identity of the parts: shared parts, shared result
        names: set[str] = set()
        records = {}
        for layer in layers:
            parts = [b.records[layer] for b in bases if layer in b.records]
            key = tuple(id(b.records.get(layer)) for b in bases)
            if key not in combined:
                combined[key] = _combine_records(layer, parts, [b.concept for b in bases if layer in b.records], names)
            records[layer] = combined[key]
        entries = [entry for b in bases for entry in _concept_entries(b)]
        alphas = {entry["alpha"] for entry in entries}
        return cls(
            records=records,
            method="+".join(sorted({entry["method"] for entry in entries})),
            rank=max(b.rank for b in bases),
            alpha=alphas.pop() if len(alphas) == 1 else None,
            edit="subspace" if any(b.edit == "subspace" for b in bases) else "direction",
            concept=" + ".join(b.concept or "?" for b in bases),
            pairs=tuple(p for b in bases for p in b.pairs),
            model_family=next(iter(families), ""),
            model_fingerprint=next(iter(prints), ""),
            fit_revision=min(b.fit_revision for b in bases),
            combined_from=entries,
        )


def _concept_entries(basis: RefusalBasis) -> list[dict]:
    """The :attr:`RefusalBasis.combined_from` entries ``basis`` brings to a combination: its own, or one for it."""
    if basis.combined_from:
        return [dict(entry) for entry in basis.combined_from]
    return [{"concept": basis.concept, "method": basis.method, "rank": basis.rank,
             "alpha": None if basis.alpha is None else float(basis.alpha), "edit": basis.edit,
             "fit_revision": basis.fit_revision, "pairs": len(basis.pairs),
             "measurement": json.loads(json.dumps(dict(basis.measurement))), "vector_sha256": basis.content_sha256()}]


#: A block's key in its block list: its index (``blocks.3``), or ``block`` and the index where the list is a dict of
#: modules keyed so (Cosmos 1.0's ``blocks.block3``).
_BLOCK_KEY = re.compile(r"(?:block)?(\d+)")


def block_index(layer: str) -> int | None:
    """``blocks.3.ffn.0`` -> 3; ``blocks.block3.blocks.1.block.attn.to_k.0`` -> 3 (Cosmos 1.0); None for a layer name
    with no block key (``vector_in.in_layer``, ``txt_in.c_embedder.in_layer``). ``nodes.adapters`` reads block
    indices through this one rule."""
    parts = layer.split(".", 2)
    match = _BLOCK_KEY.fullmatch(parts[1]) if len(parts) == 3 else None
    return int(match[1]) if match else None


def _outside_blocks(layer: str) -> bool:
    """True for a layer name with no block index (``vector_in.in_layer``; ``blocks.3.ffn.0`` has one)."""
    return block_index(layer) is None


def _lacking_top_level(bases: Sequence["RefusalBasis"]) -> dict[str, list[str]]:
    """Layer outside the blocks -> the concepts of the fingerprinted ``bases`` that lack it, where they all cover the
    same (non-empty) layers in the blocks and differ only there; empty otherwise."""
    printed = [b for b in bases if b.model_fingerprint]
    inside = {frozenset(layer for layer in b.layers if not _outside_blocks(layer)) for b in printed}
    if len(inside) != 1 or not next(iter(inside)):
        return {}
    top = list(dict.fromkeys(layer for b in printed for layer in b.layers if _outside_blocks(layer)))
    lacking = {layer: [b.concept or "unnamed" for b in printed if layer not in b.layers] for layer in top}
    return {layer: concepts for layer, concepts in lacking.items() if concepts}


def _neutral_digested(measurement: Mapping) -> dict:
    """``measurement`` with its neutral prompts as :func:`core.pairs.prompt_digest` digests, plus one exact digest of
    them as encoded (``neutral_exact_sha256``) unless they already are digests (see :meth:`with_pair_digests`)."""
    measurement = dict(measurement)
    neutral = measurement.get("neutral_prompts")
    if neutral is not None:
        if any(not prompt.startswith(DIGEST_PREFIX) for prompt in neutral):
            measurement["neutral_exact_sha256"] = exact_digest(neutral)
        measurement["neutral_prompts"] = [prompt_digest(p) for p in neutral]
    return measurement


def _neutral_hashed(measurement: Mapping) -> dict:
    """``measurement`` as :meth:`RefusalBasis.content_sha256` hashes it: the neutral prompts as one exact digest, the
    same for the prompts' text and a digests file's ``neutral_exact_sha256``."""
    measurement = dict(measurement)
    if "neutral_prompts" in measurement:
        exact = measurement.pop("neutral_exact_sha256", None)
        measurement["neutral_prompts"] = exact or exact_digest(measurement["neutral_prompts"])
    return measurement


#: Largest share of a direction's length that may lie outside a loaded record's edit subspace, and of an edit-subspace
#: column's outside the record's basis U. The pack's own files measure 6e-9..3e-8 for the first: float32 rounding of
#: orthonormal columns. For the second, over 432 fits (cpca and mean, both edits, rank 1-8 from 2-6 pairs, alpha
#: 0-4), their version 1 files and 120 combinations of 2-3 of them (mixed methods, edits and alphas, some covering
#: fewer layers): at most 6.7e-8 for a fit, 3.4e-7 combined; a hand-edited column measures ~1.
SPAN_TOLERANCE = 1e-4


def _check_edit_subspace(name: str, source: str, record: LayerRefusal, edit: str, rank: int) -> None:
    """A loaded record's edit subspace must be what its own file says was fitted, since it is what Apply removes.

    Every writer of the pack makes it from the record's directions: an ``edit="direction"`` record's subspace is
    its c direction rows orthonormalised (c columns at most; files older than the ``edit`` entry hold only these);
    an ``edit="subspace"`` record's is U, at most ``rank`` columns per concept, which holds the direction; a combined
    record's is its parts' subspaces stacked and orthonormalised, so at most ``rank`` x its own concepts (the rows of
    its direction: a layer that only some of the combined vectors cover has fewer than the file's ``concepts``), and
    each part's direction lies in it. Every one of these columns also lies in the record's basis U ``[d, k]`` (the
    ``basis/`` tensor): a fit's direction is U's projection of the refusal vector (``method="mean"``: U is the
    direction itself), and a combined record's U is its parts' U stacked and orthonormalised. Only the file's
    orthonormality was checked before, so ``eye(d)`` (which erases everything the layers read) or a column unrelated
    to the direction (which erases nothing of the concept) loaded, and then a subspace that kept the direction but
    swapped another column for one outside U (that column's share outside U: 0.99999999), which made Apply erase a
    direction the fit never found.
    """
    directions = record.direction.reshape(-1, record.dim).double()  # [c, d]
    subspace = record.subspace.double()  # [d, c']
    concepts, columns = directions.shape[0], subspace.shape[1]
    most = concepts * (rank if edit == "subspace" else 1)
    remedy = ("the file is damaged or hand-edited: compute the vector again with Low-Rank Refusal Vector "
              "(or download it again)")
    if columns > most:
        raise RefusalFileError(f"{name}: the edit subspace of {source!r} has {columns} columns, but the file's own "
                               f"metadata allows at most {most} (edit {edit!r}, rank {rank}, {concepts} concept(s)), "
                               f"so Apply would remove more than the concept from what the layers read; {remedy}")
    outside = directions - (directions @ subspace) @ subspace.T  # [c, d]
    relative = float((outside.norm(dim=1) / directions.norm(dim=1)).max())  # nan for a zero direction: refused too
    if not relative <= SPAN_TOLERANCE:
        raise RefusalFileError(f"{name}: the direction of {source!r} does not lie in its edit subspace (a share of "
                               f"{relative:.2g} of it lies outside, more than {SPAN_TOLERANCE:g}), so Apply would not "
                               f"remove the concept the file describes; {remedy}")
    basis = record.basis.double()  # U [d, k], orthonormal
    beyond = (subspace - basis @ (basis.T @ subspace)).norm(dim=0) / subspace.norm(dim=0)  # [c'], share outside U
    worst = int(beyond.nan_to_num(float("inf")).argmax())
    if not float(beyond[worst]) <= SPAN_TOLERANCE:
        raise RefusalFileError(f"{name}: column {worst + 1} of {columns} of the edit subspace of {source!r} does not "
                               f"lie in the concept subspace the file says was fitted ('basis/{source}'; a share of "
                               f"{float(beyond[worst]):.2g} of it lies outside, more than {SPAN_TOLERANCE:g}), so "
                               f"Apply would remove a direction the fit never found from what the layers read; "
                               f"{remedy}")


def _combine_records(layer: str, parts: list[LayerRefusal], concepts: list[str], names: set[str]) -> LayerRefusal:
    """One record from the records of several concepts for the same input; ``names`` keeps input names unique."""
    dim = parts[0].dim
    for part, concept in zip(parts, concepts):
        if part.dim != dim:
            raise ValueError(f"layer {layer!r} has width {part.dim} in {concept!r} but {dim} in an earlier "
                             "refusal vector")
    stack = lambda field: torch.cat([getattr(p, field).reshape(-1, dim) for p in parts])  # noqa: E731
    sources = {p.source for p in parts}
    source = sources.pop() if len(sources) == 1 else layer
    if source in names:  # the same input, shared by a different set of layers in some basis
        source = layer
    names.add(source)
    directions = stack("direction")
    basis = _orthonormal_columns(torch.cat([p.basis for p in parts], dim=1))  # [d, k]
    subspace = _orthonormal_columns(torch.cat([p.subspace for p in parts], dim=1))  # [d, c']
    # Each SVD drops what lies below 1e-6 of its own largest singular value, and U's can be the larger (a direction
    # every part's U holds): two concepts' directions about 2e-6..2.4e-6 rad apart, with a third, kept a subspace
    # column U had dropped, and Load refused the file Combine wrote (that column's share outside U: 1). U then takes
    # that column too; elsewhere the subspace lies in U to float32 rounding and U is left as it was, bit for bit.
    outside = subspace.double() - basis.double() @ (basis.double().T @ subspace.double())  # [d, c']
    if float(outside.norm(dim=0).max()) > SPAN_TOLERANCE / 10:  # pack-made combinations: 3.4e-7 at most
        basis = torch.cat([basis, _orthonormal_columns(outside)], dim=1)
    return LayerRefusal(
        vector=stack("vector"),
        basis=basis,
        direction=directions,
        safe_mean=stack("safe_mean"),
        subspace=subspace,
        score=max((p.score for p in parts), key=lambda s: abs(s.separation)),
        source=source,
    )


def _orthonormal_columns(matrix: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis ``[d, c']`` of the columns of ``matrix`` ``[d, c]``; near-dependent columns
    (concepts whose directions coincide) are merged rather than amplified into noise."""
    m = matrix.to(torch.float64)
    if m.shape[1] == 1:
        return (m / m.norm()).to(torch.float32).contiguous()
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    keep = s > tol * s.max()
    if int(keep.sum()) < m.shape[1]:
        logger.info("combined directions are nearly dependent: keeping %d of %d", int(keep.sum()), m.shape[1])
    basis = u[:, keep]
    # Deterministic signs: each column points along the sum of the input columns.
    basis = basis * torch.where(basis.T @ m.sum(1) < 0, -1.0, 1.0)
    return basis.to(torch.float32).contiguous()
