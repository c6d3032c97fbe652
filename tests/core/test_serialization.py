import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.fingerprint import fingerprint_weights
from core.refusal import RefusalBasis, RefusalFitter
from core.serialization import METADATA_KEY, RefusalFileError
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
    for field in ("vectors", "bases", "directions", "safe_means", "subspaces"):
        for layer in a.layers:
            assert torch.equal(getattr(a, field)[layer], getattr(b, field)[layer]), (field, layer)
    assert a.scores == b.scores
    for field in ("method", "rank", "alpha", "concept", "pairs", "model_family", "model_fingerprint"):
        assert getattr(a, field) == getattr(b, field)


def test_round_trip_is_bit_exact(basis, tmp_path):
    path = tmp_path / "rolex.safetensors"
    basis.save(path)
    assert_same(basis, RefusalBasis.load(path))
    combined = RefusalBasis.combine([basis, basis.select(["blocks.0.cross_attn.k"])])
    combined.save(path)
    assert_same(combined, RefusalBasis.load(path))


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


def test_fingerprint_tracks_weights():
    weights = {"a": torch.arange(10.0), "b": torch.ones(3, 3)}
    first = fingerprint_weights(weights)
    assert first == fingerprint_weights(dict(reversed(list(weights.items()))))
    assert first != fingerprint_weights({**weights, "a": torch.arange(10.0) + 1})
    assert first != fingerprint_weights({**weights, "b": torch.ones(3, 3, dtype=torch.float16)})
    assert len(first) == 16
