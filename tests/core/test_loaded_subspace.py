"""Load refuses an edit subspace that reaches outside the concept subspace U its own file says was fitted."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from core.refusal import SPAN_TOLERANCE, RefusalBasis, RefusalFitter
from core.serialization import METADATA_KEY, RefusalFileError
from synthetic import planted

LAYER = "blocks.0.cross_attn.k"


def _fit(seed, **options):
    _, _, unsafe, safe, neutral = planted(dim=32, pairs=6, seed=seed)
    fitter = RefusalFitter().update(LAYER, unsafe, safe).update_neutral(LAYER, neutral)
    return fitter.fit(concept=f"c{seed}", pairs=[("a", "b")], model_fingerprint="0123abcd", **options)


def _share_outside_basis(record):
    u, s = record.basis.double(), record.subspace.double()
    return float(((s - u @ (u.T @ s)).norm(dim=0) / s.norm(dim=0)).max())


def test_a_subspace_with_a_column_outside_the_fitted_basis_is_refused_and_the_packs_own_files_load(tmp_path):
    """The reviewer's hand edit: a subspace-edit file whose subspace keeps the fitted direction but swaps the other
    columns for one random column orthogonal to the file's own ``basis/`` tensor. It passed the column count (2 <= rank
    3) and the direction check, loaded, and Apply erased that foreign direction. The pack's own files still load."""
    subspace = _fit(2, rank=3, edit="subspace")
    path = tmp_path / "sub.safetensors"
    subspace.save(path)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    basis = tensors[f"basis/{LAYER}"].double()
    direction = tensors[f"direction/{LAYER}"].double()
    assert basis.shape[1] >= 2
    foreign = torch.randn(32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    foreign -= basis @ (basis.T @ foreign)
    tensors[f"subspace/{LAYER}"] = torch.stack([direction / direction.norm(), foreign / foreign.norm()], 1).float()
    bad = tmp_path / "foreign.safetensors"
    save_file(tensors, str(bad), metadata=header)
    with pytest.raises(RefusalFileError, match=rf"^foreign\.safetensors: column 2 of 2 of the edit subspace of "
                                               rf"'{LAYER}' does not lie in the concept subspace the file says was "
                                               rf"fitted \('basis/{LAYER}'; a share of 1 of it lies outside, more than "
                                               r"0\.0001\).*compute the vector again with Low-Rank Refusal Vector"):
        RefusalBasis.load(bad)

    # The same column count, but the edit metadata says direction (one column): the count is what is refused there.
    meta = json.loads(header[METADATA_KEY])
    save_file(tensors, str(bad), metadata={METADATA_KEY: json.dumps({**meta, "edit": "direction"})})
    with pytest.raises(RefusalFileError, match="has 2 columns, but the file's own metadata allows at most 1"):
        RefusalBasis.load(bad)

    direction_edit, mean = _fit(1, rank=3), _fit(3, rank=2, method="mean", edit="subspace")
    few_pairs = _fit(4, rank=8, alpha=0.0, edit="subspace")  # rank above the 6 pairs: U keeps fewer columns
    vectors = {"subspace": subspace, "direction": direction_edit, "mean": mean, "rank above pairs": few_pairs,
               "subspace + direction": RefusalBasis.combine([subspace, direction_edit]),
               "three, mixed methods": RefusalBasis.combine([subspace, mean, _fit(5, rank=2, alpha=4.0)]),
               "combined twice": RefusalBasis.combine([RefusalBasis.combine([subspace, mean]), few_pairs])}
    for kind, vector in vectors.items():
        vector.save(path)
        record = RefusalBasis.load(path)[LAYER]
        assert _share_outside_basis(record) < SPAN_TOLERANCE / 100, kind


def test_a_combination_whose_subspace_keeps_a_column_its_stacked_basis_dropped_still_loads(tmp_path):
    """Combine orthonormalises the parts' U and the parts' subspaces by separate SVDs, each dropping what lies below
    1e-6 of its own largest singular value. Three concepts whose U all hold one direction ``e`` (U's largest singular
    value sqrt(3), the subspace's sqrt(2)) and two of whose directions are 2.2e-6 rad apart: the subspace kept the
    difference of those two, U dropped it, and Load refused the file Combine had just written (share outside U: 1)."""
    from core.basis import LayerRefusal, LayerScore

    q = torch.linalg.qr(torch.randn(32, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    a, e, c, f = q.T
    close = (a + 2.2e-6 * c) / (a + 2.2e-6 * c).norm()

    def vector(direction, concept):
        u = torch.stack([direction, e], 1).float()  # orthonormal: e is orthogonal to a, c and f
        d = direction.float()
        record = LayerRefusal(vector=d, basis=u, direction=d, safe_mean=torch.zeros(32), subspace=d[:, None],
                              score=LayerScore(1.0, 1.0, 1.0, 1.0), source=LAYER)
        return RefusalBasis(records={LAYER: record}, rank=2, concept=concept, model_fingerprint="0123abcd")

    combined = RefusalBasis.combine([vector(a, "a"), vector(close, "close to a"), vector(f, "f")])
    assert combined[LAYER].subspace.shape[1] == 3  # the two close directions are kept apart
    path = tmp_path / "combined.safetensors"
    combined.save(path)
    record = RefusalBasis.load(path)[LAYER]
    assert _share_outside_basis(record) < SPAN_TOLERANCE / 100
