"""Boundaries of what a refusal-vector file may hold that test_serialization.py leaves open (found by mutation
testing: each test here fails on a small change of core/serialization.py or core/refusal.py's loader that every
earlier test let pass)."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from core.refusal import RefusalBasis, RefusalFitter
from core.serialization import METADATA_KEY, SAFE_MEAN_LIMIT, RefusalFileError, read_basis_file
from synthetic import planted

LAYER = "blocks.0.cross_attn.k"


def _rewritten(tmp_path, change, change_meta=lambda meta: None):
    """A file the pack wrote, its tensors changed by ``change(tensors)`` (its metadata by ``change_meta(meta)``) and
    written again."""
    _, _, unsafe, safe, neutral = planted(dim=32, seed=0)
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    RefusalFitter().update(LAYER, unsafe, safe).update_neutral(LAYER, neutral).fit(rank=3, alpha=0.5).save(good)
    tensors = load_file(str(good))
    with safe_open(str(good), framework="pt") as handle:
        meta = json.loads(handle.metadata()[METADATA_KEY])
    change(tensors)
    change_meta(meta)
    save_file(tensors, str(bad), metadata={METADATA_KEY: json.dumps(meta)})
    return bad


def test_a_safe_mean_at_exactly_fp16s_largest_value_loads_and_one_above_does_not(tmp_path):
    """SAFE_MEAN_LIMIT (65504) is the largest value allowed, not the first refused."""
    def peak(value):
        def change(tensors):
            tensors[f"safe_mean/{LAYER}"][0] = value
        return change

    assert read_basis_file(_rewritten(tmp_path, peak(SAFE_MEAN_LIMIT))).records[LAYER].tensors["safe_mean"][0] \
        == SAFE_MEAN_LIMIT
    with pytest.raises(RefusalFileError, match="beyond fp16's range"):
        read_basis_file(_rewritten(tmp_path, peak(-65536.0)))


def test_an_edit_subspace_a_percent_off_orthonormal_is_a_file_error(tmp_path):
    """The reader checks ``S^T S = I`` to 1e-4: columns 1 % too long would remove 2 % more than the concept's
    component (past the target), so such a file is refused as not orthonormal."""
    def stretch(tensors):
        tensors[f"subspace/{LAYER}"].mul_(1.01)

    with pytest.raises(RefusalFileError, match="is not orthonormal; the file is corrupt"):
        read_basis_file(_rewritten(tmp_path, stretch))


def test_a_zero_direction_is_a_file_error_not_a_nan_share_that_passes(tmp_path):
    """A zero direction has no share inside its subspace (0 / 0): the loader refuses it rather than let the NaN
    compare as within tolerance."""
    def zero(tensors):
        tensors[f"direction/{LAYER}"].zero_()

    with pytest.raises(RefusalFileError, match="does not lie in its edit subspace"):
        RefusalBasis.load(_rewritten(tmp_path, zero))


def test_a_direction_a_percent_outside_its_edit_subspace_is_a_file_error(tmp_path):
    """SPAN_TOLERANCE (1e-4) bounds the share of the direction outside the subspace Apply removes: float32 rounding
    is 1e-8, a direction turned by 1 % out of it (what Apply would leave of the concept) is refused."""
    def turn(tensors):
        direction, subspace = tensors[f"direction/{LAYER}"], tensors[f"subspace/{LAYER}"].double()
        other = torch.randn(direction.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        other = other - subspace @ (subspace.T @ other)
        direction.add_((0.01 * other / other.norm()).float())

    with pytest.raises(RefusalFileError, match=r"does not lie in its edit subspace \(a share of 0.01"):
        RefusalBasis.load(_rewritten(tmp_path, turn))


def test_a_file_with_a_tensor_no_record_names_is_refused(tmp_path):
    def add(tensors):
        tensors["vector/blocks.9.other"] = torch.zeros(32)

    with pytest.raises(RefusalFileError, match=r"unexpected tensors \['vector/blocks.9.other'\]"):
        read_basis_file(_rewritten(tmp_path, add))


def test_an_alpha_written_as_a_boolean_is_refused(tmp_path):
    """JSON ``true`` is no alpha, though Python's bool is an int."""
    with pytest.raises(RefusalFileError, match="'alpha' is True, expected a number"):
        read_basis_file(_rewritten(tmp_path, lambda tensors: None, lambda meta: meta.update(alpha=True)))


def test_a_header_longer_than_the_file_is_named_so(tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes((1000).to_bytes(8, "little") + b'{"a": 1}  ')
    with pytest.raises(RefusalFileError, match="header of 1000 bytes in a file of 18"):
        read_basis_file(path)
