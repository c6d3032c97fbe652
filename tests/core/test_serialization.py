import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from core.fingerprint import fingerprint_weights
from core.refusal import RefusalBasis, RefusalFitter
from core.serialization import METADATA_KEY, RefusalFileError, read_metadata
from synthetic import planted


@pytest.fixture
def basis():
    _, _, unsafe, safe, neutral = planted(dim=32, seed=0)
    fitter = RefusalFitter().update("blocks.0.cross_attn.k", unsafe, safe).update_neutral("blocks.0.cross_attn.k", neutral)
    fitter.update("blocks.1.cross_attn.v", unsafe[:, :16], safe[:, :16])
    return fitter.fit(rank=3, alpha=0.5, concept="Rolex", pairs=[("a Rolex", "a watch")], model_family="wan21",
                      model_fingerprint="0123abcd")


def assert_same(a, b):
    assert a.layers == b.layers
    for layer in a.layers:
        for field in ("vector", "basis", "direction", "safe_mean", "subspace"):
            assert torch.equal(getattr(a[layer], field), getattr(b[layer], field)), (field, layer)
        assert a[layer].score == b[layer].score and a[layer].source == b[layer].source
    assert a.shared_inputs() == b.shared_inputs()
    for field in ("method", "rank", "alpha", "concept", "pairs", "model_family", "model_fingerprint", "fit_revision"):
        assert getattr(a, field) == getattr(b, field)


def test_round_trip_is_bit_exact(basis, tmp_path):
    path = tmp_path / "rolex.safetensors"
    basis.save(path)
    assert_same(basis, RefusalBasis.load(path))
    combined = RefusalBasis.combine([basis, basis.select(["blocks.0.cross_attn.k"])])
    combined.save(path)
    assert_same(combined, RefusalBasis.load(path))


def test_a_loaded_vector_owns_its_numbers_when_the_file_is_rewritten_in_place(basis, tmp_path):
    """``safetensors.torch.load_file`` maps the file: a vector loaded with it changed when the file was overwritten in
    place, past every check made when it was loaded, and reading it after the file was emptied killed the process
    (SIGBUS). The file is now read into memory."""
    path, other = tmp_path / "rolex.safetensors", tmp_path / "other.safetensors"
    basis.save(path)
    loaded = RefusalBasis.load(path)
    _, _, unsafe, safe, neutral = planted(dim=32, seed=5)
    fitter = RefusalFitter().update("blocks.0.cross_attn.k", unsafe, safe).update_neutral("blocks.0.cross_attn.k", neutral)
    fitter.update("blocks.1.cross_attn.v", unsafe[:, :16], safe[:, :16])
    fitter.fit(rank=3, alpha=0.5, concept="Rolex", pairs=[("a Rolex", "a watch")], model_family="wan21",
               model_fingerprint="0123abcd").save(other)
    assert other.stat().st_size == path.stat().st_size
    with open(path, "r+b") as handle:  # in place, as ``cp`` does: the same inode, new bytes
        handle.write(other.read_bytes())
    assert_same(loaded, basis)
    with open(path, "r+b") as handle:
        handle.truncate(0)
    assert_same(loaded, basis)


def test_bad_and_foreign_files(basis, tmp_path):
    with pytest.raises(RefusalFileError, match="not found"):
        RefusalBasis.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(RefusalFileError, match="not a readable safetensors"):
        RefusalBasis.load(junk)
    lora = tmp_path / "lora.safetensors"
    save_file({"x.lora_up.weight": torch.zeros(2, 2)}, str(lora))
    with pytest.raises(RefusalFileError, match="not a refusal vector"):
        RefusalBasis.load(lora)

    good = tmp_path / "good.safetensors"
    basis.save(good)
    tensors = load_file(str(good))
    from safetensors import safe_open
    with safe_open(str(good), framework="pt") as handle:
        header = handle.metadata()
    meta = json.loads(header[METADATA_KEY])

    def write(name, tensors=tensors, meta=meta):
        path = tmp_path / name
        save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})
        return path

    with pytest.raises(RefusalFileError, match="version 99"):
        RefusalBasis.load(write("v99.safetensors", meta={**meta, "format_version": 99}))
    with pytest.raises(RefusalFileError, match="missing"):
        RefusalBasis.load(write("partial.safetensors", tensors={k: v for k, v in tensors.items() if "direction" not in k}))
    with pytest.raises(RefusalFileError, match="NaN"):
        RefusalBasis.load(write("nan.safetensors", tensors={**tensors, "vector/blocks.0.cross_attn.k": torch.full((32,), float("nan"))}))
    with pytest.raises(RefusalFileError, match="expected width 32"):
        RefusalBasis.load(write("shape.safetensors", tensors={**tensors, "vector/blocks.0.cross_attn.k": torch.zeros(31)}))
    with pytest.raises(RefusalFileError, match="not orthonormal"):
        RefusalBasis.load(write("ortho.safetensors", tensors={**tensors, "subspace/blocks.0.cross_attn.k": torch.ones(32, 1)}))
    with pytest.raises(RefusalFileError, match="lacks"):
        RefusalBasis.load(write("meta.safetensors", meta={k: v for k, v in meta.items() if k != "dims"}))
    with pytest.raises(RefusalFileError, match="format"):
        RefusalBasis.load(write("foreign.safetensors", meta={**meta, "format": "someone-else"}))


def test_malformed_headers_are_refused_with_the_file_named(basis, tmp_path):
    """The file is parsed from memory (see above); every malformed header must still raise RefusalFileError naming
    the file, as safetensors' own reader did: a metadata value that is not a string raised a bare TypeError, a header
    nested past Python's recursion limit a RecursionError, and an unreadable file a PermissionError."""
    good = tmp_path / "good.safetensors"
    basis.save(good)
    data = good.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])

    def with_header(name: str, raw: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + size:])
        return path

    cases = {
        "short.safetensors": data[:4],
        "long_header.safetensors": (10**9).to_bytes(8, "little") + data[8:],
        "not_utf8.safetensors": None,
        "list.safetensors": None,
        "object_value.safetensors": None,
        "number_value.safetensors": None,
        "deep.safetensors": None,
    }
    for name, raw in cases.items():
        if raw is not None:
            (tmp_path / name).write_bytes(raw)
    with_header("not_utf8.safetensors", b"\xff\xfe{}")
    with_header("list.safetensors", b"[1, 2]")
    for name, value in (("object_value.safetensors", {"a": 1}), ("number_value.safetensors", 5)):
        with_header(name, json.dumps({**header, "__metadata__": {METADATA_KEY: value}}).encode())
    with_header("deep.safetensors", b"[" * 100_000 + b"]" * 100_000)
    for name in cases:
        with pytest.raises(RefusalFileError, match=f"{name} is not a readable safetensors file"):
            RefusalBasis.load(tmp_path / name)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[:-16])
    with pytest.raises(RefusalFileError, match="truncated.safetensors: tensors cannot be read"):
        RefusalBasis.load(truncated)


def test_an_unreadable_file_is_refused_with_the_remedy(basis, tmp_path, monkeypatch):
    path = tmp_path / "locked.safetensors"
    basis.save(path)

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(RefusalFileError, match="locked.safetensors cannot be read .Permission denied.; check its permissions"):
        RefusalBasis.load(path)


def test_fingerprint_tracks_weights():
    weights = {"a": torch.arange(10.0), "b": torch.ones(3, 3)}
    first = fingerprint_weights(weights)
    assert first == fingerprint_weights(dict(reversed(list(weights.items()))))
    assert first != fingerprint_weights({**weights, "a": torch.arange(10.0) + 1})
    # the same values in another dtype are the same weights (an fp16 file held in float32 on a CPU, float16 on a
    # GPU); the dtype is in the older form only, and rounded values are other weights
    held = {name: tensor.to(torch.float16) for name, tensor in weights.items()}
    assert fingerprint_weights(held) == first != fingerprint_weights(held, with_dtype=True)
    thirds = {"a": torch.arange(10.0) / 3}
    assert fingerprint_weights(thirds) != fingerprint_weights({"a": thirds["a"].to(torch.bfloat16)})
    assert len(first) == 16


def test_shared_records_are_stored_once_and_round_trip_bit_exact(tmp_path):
    _, _, unsafe, safe, neutral = planted(dim=32, seed=5)
    fitter = RefusalFitter().share("text_embedding", [f"blocks.{i}.cross_attn.{s}" for i in range(3) for s in "kv"])
    fitter.update("text_embedding", unsafe, safe).update_neutral("text_embedding", neutral)
    fitter.update("blocks.0.ffn.0", unsafe[:, :8], safe[:, :8])
    basis = fitter.fit(rank=2, concept="Rolex", model_family="wan")
    path = tmp_path / "shared.safetensors"
    basis.save(path)
    assert sorted(load_file(str(path))) == sorted(f"{kind}/{source}" for kind in ("vector", "basis", "direction", "safe_mean", "subspace")
                                                  for source in ("text_embedding", "blocks.0.ffn.0"))
    loaded = RefusalBasis.load(path)
    assert_same(basis, loaded)
    assert loaded["blocks.0.cross_attn.k"] is loaded["blocks.2.cross_attn.v"]
    assert loaded.layers == basis.layers and loaded.shared_inputs() == basis.shared_inputs()
    for picked in (basis.select(["blocks.2.cross_attn.v", "blocks.0.ffn.0", "blocks.1.cross_attn.k"]),
                   RefusalBasis.combine([basis, basis.select(["blocks.0.ffn.0"])])):
        picked.save(path)
        assert_same(picked, RefusalBasis.load(path))


def write_version_1(basis, path):
    """A file in the layout of format version 1: tensors named by layer, per-layer dims and scores, no sources."""
    tensors, meta = {}, {"format": "video-unlearning/refusal-vector", "format_version": 1, "method": basis.method,
                         "rank": basis.rank, "alpha": basis.alpha, "concept": basis.concept,
                         "pairs": [list(p) for p in basis.pairs], "model_family": basis.model_family,
                         "model_fingerprint": basis.model_fingerprint, "layers": basis.layers,
                         "dims": basis.dims, "concepts": basis.concepts, "scores": {}}
    for layer in basis.layers:
        record = basis[layer]
        for kind in ("vector", "basis", "direction", "safe_mean", "subspace"):
            tensors[f"{kind}/{layer}"] = getattr(record, kind).clone()
        meta["scores"][layer] = record.score.as_dict()
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})


def test_version_1_files_still_load(basis, tmp_path):
    old = tmp_path / "old.safetensors"
    write_version_1(basis, old)
    loaded = RefusalBasis.load(old)
    assert loaded.layers == basis.layers and loaded.shared_inputs() == {}
    for layer in basis.layers:
        assert loaded[layer].source == layer
        for field in ("vector", "basis", "direction", "safe_mean", "subspace"):
            assert torch.equal(getattr(loaded[layer], field), getattr(basis[layer], field))
        assert loaded[layer].score == basis[layer].score
    assert (loaded.concept, loaded.rank, loaded.alpha, loaded.model_fingerprint) == ("Rolex", 3, 0.5, "0123abcd")
    # Re-saved, it is a version 2 file with the same content.
    new = tmp_path / "new.safetensors"
    loaded.save(new)
    assert read_metadata(new)["format_version"] == 2
    assert_same(loaded, RefusalBasis.load(new))
    # A version 1 file that lacks a layer's tensor says which.
    tensors = load_file(str(old))
    with safe_open(str(old), framework="pt") as handle:
        header = handle.metadata()
    del tensors["subspace/blocks.1.cross_attn.v"]
    save_file(tensors, str(old), metadata=header)
    with pytest.raises(RefusalFileError, match="'subspace/blocks.1.cross_attn.v' is missing"):
        RefusalBasis.load(old)


def _rewrite_metadata(path, change):
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    meta = json.loads(header[METADATA_KEY])
    change(meta)
    save_file(tensors, str(path), metadata={**header, METADATA_KEY: json.dumps(meta)})


def test_files_fitted_before_the_exact_solve_load_with_a_warning_to_refit(basis, tmp_path, caplog):
    path = tmp_path / "v.safetensors"
    basis.save(path)
    assert basis.fit_revision == 3 and read_metadata(path)["fit_revision"] == 3
    _rewrite_metadata(path, lambda meta: meta.pop("fit_revision"))
    with caplog.at_level("WARNING", logger="core.refusal"):
        old = RefusalBasis.load(path)
    assert old.fit_revision == 1 and "and Low-Rank Refusal Vector from the same pairs" in caplog.text
    # It stays marked through combine and a re-save, so the warning is not lost by saving the old fit again.
    assert RefusalBasis.combine([old, basis]).fit_revision == 1
    old.save(path)
    assert RefusalBasis.load(path).fit_revision == 1
    assert "padding rows (2026-11-29)" in caplog.text and "cpca solve was also approximate" in caplog.text
    # The mean difference never used the contrastive solve, but one of 2026-11-28/29 may have pooled the padding
    # rows, which no metadata records: it warns too (it loaded silently before).
    _rewrite_metadata(path, lambda meta: meta.update(method="mean"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="core.refusal"):
        assert RefusalBasis.load(path).fit_revision == 1
    assert "has no fit_revision" in caplog.text and "padding rows (2026-11-29)" in caplog.text
    assert "Compute it again with Collect Activations" in caplog.text and "cpca" not in caplog.text
    _rewrite_metadata(path, lambda meta: meta.update(fit_revision=4))
    with pytest.raises(RefusalFileError, match="fit_revision 4 .* update the pack"):
        RefusalBasis.load(path)


def test_files_whose_rank_exceeded_their_pairs_before_the_positive_cap_load_with_a_warning(basis, tmp_path, caplog):
    path = tmp_path / "v.safetensors"
    basis.save(path)  # rank 3, one pair
    _rewrite_metadata(path, lambda meta: meta.update(fit_revision=2))
    with caplog.at_level("WARNING", logger="core.refusal"):
        assert RefusalBasis.load(path).fit_revision == 2
    assert "rank 3 from 1 pairs" in caplog.text and "Compute it again" in caplog.text
    # As many pairs as the rank: every kept direction could have been positive, so no warning.
    _rewrite_metadata(path, lambda meta: meta.update(pairs=[["a", "b"], ["c", "d"], ["e", "f"]]))
    caplog.clear()
    with caplog.at_level("WARNING", logger="core.refusal"):
        RefusalBasis.load(path)
    assert caplog.text == ""


def test_revision_2_subspace_files_warn_whatever_their_rank(tmp_path, caplog):
    """Revision 2 kept every one of rank eigenvectors: a subspace edit removes those of non-positive contrast too,
    even with rank <= pairs (a 636096d file held 4 columns where a fresh fit keeps 3). It loaded silently before."""
    _, _, unsafe, safe, neutral = planted(dim=32, seed=0)
    fitter = RefusalFitter().update("L", unsafe, safe).update_neutral("L", neutral)
    pairs = [("a Rolex", "a watch"), ("Rolex box", "watch box"), ("Rolex ad", "watch ad"), ("Rolex shop", "shop")]
    path = tmp_path / "v.safetensors"
    fitter.fit(rank=2, edit="subspace", pairs=pairs, model_fingerprint="0123abcd").save(path)
    _rewrite_metadata(path, lambda meta: meta.update(fit_revision=2))
    with caplog.at_level("WARNING", logger="core.refusal"):
        assert RefusalBasis.load(path).fit_revision == 2
    assert "rank 2 from 4 pairs (subspace edit)" in caplog.text and "Compute it again" in caplog.text
    # The same file at fit_revision 3 (the current fit) loads silently.
    _rewrite_metadata(path, lambda meta: meta.update(fit_revision=3))
    caplog.clear()
    with caplog.at_level("WARNING", logger="core.refusal"):
        RefusalBasis.load(path)
    assert caplog.text == ""


def test_core_modules_import_no_circle():
    """core.serialization knows the file layout only: it imports nothing from core (refusal imports it)."""
    import ast
    from pathlib import Path

    import core

    tree = ast.parse((Path(core.__file__).parent / "serialization.py").read_text())
    relative = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0]
    assert relative == []


def test_inconsistent_record_shapes_are_a_file_error(basis, tmp_path):
    good = tmp_path / "good.safetensors"
    basis.save(good)
    tensors = load_file(str(good))
    with safe_open(str(good), framework="pt") as handle:
        header = handle.metadata()
    tensors["basis/blocks.0.cross_attn.k"] = torch.zeros(32, 3, 2)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=header)
    with pytest.raises(RefusalFileError, match="bad.safetensors.*corrupt"):
        RefusalBasis.load(bad)


_UNIT = torch.nn.functional.normalize(torch.arange(1.0, 33.0), dim=0)


def _orthogonal_to(direction):
    """A unit column ``[32, 1]`` orthogonal to ``direction`` ``[32]``."""
    column = _UNIT - (_UNIT @ direction) * direction
    return (column / column.norm())[:, None].contiguous()


def test_every_kind_of_vector_the_pack_writes_loads_with_its_subspace_checked(tmp_path):
    """Direction and subspace edits, the mean method, and combined vectors (a subspace with a direction, and two
    nearly equal directions, whose columns combine merges): each loads, and its directions lie in its subspace to
    float32 rounding; one column more than rank x concepts, or a direction off the subspace, is refused."""
    from core.refusal import SPAN_TOLERANCE

    def fit(seed, **options):
        _, _, unsafe, safe, neutral = planted(dim=32, pairs=6, seed=seed)
        fitter = RefusalFitter().update("blocks.0.cross_attn.k", unsafe, safe).update_neutral("blocks.0.cross_attn.k",
                                                                                               neutral)
        return fitter.fit(concept=f"c{seed}", pairs=[("a", "b")], model_fingerprint="0123abcd", **options)

    direction, subspace = fit(1, rank=3), fit(2, rank=3, edit="subspace")
    mean = fit(3, rank=2, method="mean", edit="subspace")
    assert subspace["blocks.0.cross_attn.k"].subspace.shape[1] > 1
    twin = RefusalBasis(records={"blocks.0.cross_attn.k": dataclasses.replace(
        direction["blocks.0.cross_attn.k"], direction=direction["blocks.0.cross_attn.k"].direction + 1e-8)},
        concept="twin", model_fingerprint="0123abcd")
    vectors = {"direction": direction, "subspace": subspace, "mean": mean,
               "subspace + direction": RefusalBasis.combine([subspace, direction]),
               "nearly equal directions": RefusalBasis.combine([direction, twin]),
               "combined twice": RefusalBasis.combine([RefusalBasis.combine([subspace, mean]), direction])}
    assert vectors["nearly equal directions"]["blocks.0.cross_attn.k"].subspace.shape[1] == 1  # merged
    for kind, vector in vectors.items():
        path = tmp_path / "v.safetensors"
        vector.save(path)
        record = RefusalBasis.load(path)["blocks.0.cross_attn.k"]
        rows = record.direction.reshape(-1, 32).double()
        u = record.subspace.double()
        assert float((rows - rows @ u @ u.T).norm(dim=1).max()) < SPAN_TOLERANCE / 100, kind
    # a subspace record of rank 3 and 1 concept with a fourth column (orthogonal to the first three)
    path = tmp_path / "v.safetensors"
    subspace.save(path)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    u = tensors["subspace/blocks.0.cross_attn.k"]  # [32, k'], k' <= 3: padded to 4 orthonormal columns
    q = torch.linalg.qr(torch.cat([u, torch.eye(32)[:, :4 - u.shape[1]]], 1).double())[0].float()
    tensors["subspace/blocks.0.cross_attn.k"] = torch.cat([u, q[:, u.shape[1]:]], 1).contiguous()
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(RefusalFileError, match=r"has 4 columns, .* at most 3 \(edit 'subspace', rank 3"):
        RefusalBasis.load(path)


@pytest.mark.parametrize("change, fragment", [
    (lambda m, t: m.update(pairs=5), "'pairs' is 5"),
    (lambda m, t: m.update(pairs=[1, 2]), r"'pairs' is \[1, 2\]"),
    (lambda m, t: m.update(pairs=None), "'pairs' is None"),
    (lambda m, t: m.update(pairs="ab"), "'pairs' is 'ab'"),  # would load as the pairs ("a",), ("b",)
    (lambda m, t: m.update(pairs=[["a", "b", "c"]]), "'pairs' is"),
    (lambda m, t: m.update(pairs=3, fit_revision=2), "'pairs' is 3"),  # the rank-above-pairs warning took len()
    (lambda m, t: m.update(concept=None), "'concept' is None, expected a string"),  # would load as "None"
    (lambda m, t: m.update(model_family=7), "'model_family' is 7"),
    (lambda m, t: m.update(edit="bogus"), r"'edit' is 'bogus', expected one of \('direction', 'subspace'\)"),
    (lambda m, t: m.update(edit=None), "'edit' is None"),
    (lambda m, t: m.update(rank=True), "'rank' is True, expected an integer"),
    (lambda m, t: m.update(fit_revision=True), "'fit_revision' is True"),
    (lambda m, t: m.update(alpha=None), "'alpha' is None, expected a number"),
    (lambda m, t: t.update({"subspace/blocks.0.cross_attn.k": _UNIT}), r"'subspace/blocks.0.cross_attn.k' has shape "
                                                                       r"\(32,\).*\[d, k\] with k >= 1"),
    (lambda m, t: t.update({"subspace/blocks.0.cross_attn.k": torch.zeros(32, 0)}), r"shape \(32, 0\)"),  # a no-op
    (lambda m, t: t.update({"basis/blocks.0.cross_attn.k": _UNIT}), r"'basis/blocks.0.cross_attn.k' has shape"),
    (lambda m, t: t.update({"vector/blocks.0.cross_attn.k": torch.zeros(2, 2, 32)}), r"\[d\] or \[c, d\]"),
    # orthonormal, but not what the metadata says was fitted: the whole width (erases all the layers read) ...
    (lambda m, t: t.update({"subspace/blocks.0.cross_attn.k": torch.eye(32)}), "the edit subspace of "
     r"'blocks.0.cross_attn.k' has 32 columns, but the file's own metadata allows at most 1 "
     r"\(edit 'direction', rank 3"),
    # ... or one column unrelated to the direction (erases nothing of the concept)
    (lambda m, t: t.update({"subspace/blocks.0.cross_attn.k": _orthogonal_to(t["direction/blocks.0.cross_attn.k"])}),
     r"the direction of 'blocks.0.cross_attn.k' does not lie in its edit subspace \(a share of 1 of it lies outside"),
    # finite, but a safe mean no layer input reaches: Apply moved an fp16 bias to Inf (every output NaN)
    (lambda m, t: t["safe_mean/blocks.0.cross_attn.k"].mul_(1e30), r"'safe_mean/blocks.0.cross_attn.k' reaches "
                                                                   r".*e\+30, beyond fp16's range \(65504\)"),
    (lambda m, t: t["safe_mean/blocks.1.cross_attn.v"].add_(7e4), "'safe_mean/blocks.1.cross_attn.v' reaches 7e"),
])
def test_malformed_metadata_and_tensors_are_file_errors_that_name_the_field_and_the_remedy(basis, tmp_path, change,
                                                                                           fragment):
    good = tmp_path / "good.safetensors"
    basis.save(good)
    tensors = load_file(str(good))
    with safe_open(str(good), framework="pt") as handle:
        meta = json.loads(handle.metadata()[METADATA_KEY])
    change(meta, tensors)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={METADATA_KEY: json.dumps(meta)})
    with pytest.raises(RefusalFileError, match=fragment) as caught:
        RefusalBasis.load(bad)
    assert str(caught.value).startswith("bad.safetensors: ") and "compute the vector again" in str(caught.value)


def test_a_vector_saved_with_pair_digests_holds_no_prompt_text(basis, tmp_path):
    """For a file shared without its prompts (explicit text, for some concepts): each prompt as a SHA-256 of its
    case- and spacing-folded text, the same for either spelling, nothing else changed."""
    from core.pairs import prompt_digest

    path = tmp_path / "digests.safetensors"
    basis.with_pair_digests().save(path)
    content = path.read_bytes()
    assert b"a Rolex" not in content and b"a watch" not in content  # the concept's label stays
    loaded = RefusalBasis.load(path)
    assert loaded.pairs == ((prompt_digest("A  ROLEX"), prompt_digest("a watch")),)
    assert prompt_digest(loaded.pairs[0][0]) == loaded.pairs[0][0]  # a digest stays itself
    assert_same(basis.with_pair_digests(), loaded)


def test_the_same_content_always_gives_the_same_bytes(basis, tmp_path):
    """safetensors wrote ``__metadata__`` in hash-map order, new each call: 4 saves of one 7-entry metadata gave 4
    SHA-256 (and 4 exports of one LoRA too). The header is now written sorted; the file still reads as before."""
    import hashlib

    from core.serialization import save_atomic

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    metadata = {f"key_{i}": f"value {i} é" for i in range(7)}
    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2, dtype=torch.float64), "c": torch.zeros(5)}
    paths = [tmp_path / f"plain_{i}.safetensors" for i in range(4)]
    for path in paths:
        save_atomic(tensors, path, metadata)
    assert len({digest(path) for path in paths}) == 1
    with safe_open(str(paths[0]), framework="pt") as handle:
        assert handle.metadata() == metadata
        assert all(torch.equal(handle.get_tensor(key), value) for key, value in tensors.items())
    vectors = [tmp_path / f"vector_{i}.safetensors" for i in range(4)]
    for path in vectors:
        basis.save(path, extra_metadata={f"note_{i}": str(i) for i in range(6)})
    assert len({digest(path) for path in vectors}) == 1
    assert_same(basis, RefusalBasis.load(vectors[0]))


def test_the_measurement_round_trips_and_files_without_it_load_as_before(basis, tmp_path):
    """Collect Activations' settings and the neutral prompts are saved as ``measurement``; files written before it
    load with none, a mistyped one is a file error, and the digest form hides the neutral prompts too."""
    from core.pairs import prompt_digest

    path = tmp_path / "rolex.safetensors"
    basis.save(path)
    assert "measurement" not in read_metadata(path) and RefusalBasis.load(path).measurement == {}
    measured = dataclasses.replace(basis, measurement={"neutral_prompts": ["a dog", "a car"], "neutral_count": 2,
                                                       "seed": 7, "timesteps": "0.1, 0.5"})
    measured.save(path)
    assert dict(RefusalBasis.load(path).measurement) == dict(measured.measurement)
    hidden = measured.with_pair_digests().measurement
    assert hidden["neutral_prompts"] == [prompt_digest("a dog"), prompt_digest("a car")] and hidden["seed"] == 7
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = json.loads(handle.metadata()[METADATA_KEY])
    meta["measurement"] = ["a dog"]
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})
    with pytest.raises(RefusalFileError, match="'measurement'.*JSON object"):
        RefusalBasis.load(path)


def test_digests_keep_one_exact_digest_of_the_text_as_encoded(basis, tmp_path):
    """The per-prompt digests fold case and spacing, but the encoder reads case: "a ROLEX" and "a Rolex" gave other
    vectors under the same digests, so a digests file could not confirm which text was measured. One exact digest
    of all the pairs (and of all the neutral prompts) in order is stored beside them; the folded ones stay."""
    from core.pairs import exact_digest, parse_pairs, prompt_digest

    text = "a Rolex on a table | a watch on a table\na Rolex  on a wrist | a watch on a wrist"
    pairs = [(p.unsafe, p.safe) for p in parse_pairs(text, warn=lambda *_: None)]
    shouting = [(unsafe.replace("Rolex", "ROLEX"), safe) for unsafe, safe in pairs]
    neutral = ["a dog in a park", "a red car"]
    saved = []
    for index, written in enumerate((pairs, shouting)):
        measured = dataclasses.replace(basis, pairs=written, measurement={"neutral_prompts": neutral})
        path = tmp_path / f"digests_{index}.safetensors"
        measured.with_pair_digests().save(path)
        saved.append(RefusalBasis.load(path))
    assert saved[0].pairs == saved[1].pairs == tuple((prompt_digest(u), prompt_digest(s)) for u, s in pairs)
    exact = [vector.measurement["pairs_exact_sha256"] for vector in saved]
    assert exact[0] == exact_digest(pairs) != exact[1] == exact_digest(shouting)
    assert exact[0] != exact_digest(list(reversed(pairs)))  # the order is part of it
    assert saved[0].measurement["neutral_exact_sha256"] == exact_digest(neutral)
    assert saved[0].measurement["neutral_prompts"] == [prompt_digest(p) for p in neutral]
    assert saved[0].with_pair_digests().measurement == saved[0].measurement  # digests again: kept, not re-hashed
    assert b"a dog in a park" not in (tmp_path / "digests_0.safetensors").read_bytes()


def test_a_combined_vector_keeps_each_concepts_provenance_whatever_the_order(tmp_path):
    """Combine recorded the first input's alpha for the whole result (Combine(A, B) saved alpha 1.0, Combine(B, A)
    0.25, for equal subspaces), the largest rank, one flat pair list and no measurement, so which alpha, method, rank,
    pairs and measurement belonged to which concept was lost. Each concept's now travel in ``combined_from``, the
    same set in either order, saved and loaded (with pair digests too), and the global alpha is None when they
    differ; a combined file without ``combined_from`` (written before) loads as before."""
    def fit(seed, concept, pairs, neutral, **options):
        _, _, unsafe, safe, noise = planted(dim=32, pairs=6, seed=seed)
        fitted = RefusalFitter().update("blocks.0.cross_attn.k", unsafe, safe).update_neutral(
            "blocks.0.cross_attn.k", noise).fit(concept=concept, pairs=pairs, model_fingerprint="0123abcd", **options)
        return dataclasses.replace(fitted, measurement={"neutral_prompts": neutral, "seed": seed})

    a = fit(1, "Rolex", [("a Rolex", "a watch"), ("a gold Rolex", "a gold watch")], ["a dog"], rank=4, alpha=1.0)
    b = fit(2, "RolexBox", [("a Rolex box", "a box")], ["a car", "a tree"], rank=2, alpha=0.25, method="mean")
    ab, ba = RefusalBasis.combine([a, b]), RefusalBasis.combine([b, a])
    expected = [{"concept": v.concept, "method": v.method, "rank": v.rank, "alpha": v.alpha, "edit": v.edit,
                 "fit_revision": v.fit_revision, "pairs": len(v.pairs), "measurement": dict(v.measurement),
                 "vector_sha256": v.content_sha256()} for v in (a, b)]
    assert list(ab.combined_from) == expected and list(ba.combined_from) == expected[::-1]
    for combined in (ab, ba):
        assert combined.alpha is None and combined.method == "cpca+mean" and combined.rank == 4
        path = tmp_path / "combined.safetensors"
        combined.save(path)
        loaded = RefusalBasis.load(path)
        assert_same(combined, loaded)
        assert loaded.combined_from == combined.combined_from
        assert loaded.content_sha256() == combined.content_sha256()
        combined.with_pair_digests().save(path)
        hidden = RefusalBasis.load(path)
        assert [e["measurement"]["neutral_exact_sha256"] for e in hidden.combined_from] == [
            e["measurement"]["neutral_exact_sha256"] for e in combined.with_pair_digests().combined_from]
        assert "a dog" not in path.read_bytes().decode("latin-1")
        assert hidden.content_sha256() == combined.content_sha256()
    # Combining a combination keeps one entry per concept; equal alphas stay the global alpha.
    c = fit(3, "knife", [("a knife", "a spoon")], [], rank=4, alpha=1.0)
    assert [e["concept"] for e in RefusalBasis.combine([ab, c]).combined_from] == ["Rolex", "RolexBox", "knife"]
    assert RefusalBasis.combine([a, c]).alpha == 1.0
    old = dataclasses.replace(RefusalBasis.combine([a, c]), combined_from=())
    old.save(tmp_path / "old.safetensors")
    assert RefusalBasis.load(tmp_path / "old.safetensors").combined_from == ()
