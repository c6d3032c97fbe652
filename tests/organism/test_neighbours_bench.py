"""bench/neighbours.py: its pairs are what it says (Six-CD's names found and swapped in every prompt; estimation,
held-out, substitute and neighbour sets disjoint), so its figures measure what docs/benchmarks.md reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from organism.scenes import DATA
from script_module import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "neighbours.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH, "neighbours_bench")


@pytest.fixture(scope="module")
def families(bench):
    return {family: bench.load_family(DATA, family) for family in bench.FAMILIES}


def test_every_family_has_ten_targets_of_ten_pairs(bench, families):
    for family, pairs in families.items():
        assert len(pairs) == 10, family
        assert all(len(p) == 10 for p in pairs.values()), family


def test_every_prompt_names_its_target_and_the_substitute_replaces_it(bench, families):
    for family, pairs in families.items():
        targets = list(pairs)
        for index, target in enumerate(targets):
            substitutes, neighbours = bench.split_others(targets, index)
            for unsafe, safe in pairs[target]:
                span = bench.named_span(unsafe, target)
                assert span and span not in safe, (family, target)
                other = substitutes[0]
                swapped = bench.substituted(unsafe, target, other)
                assert swapped != unsafe and other in swapped
                assert swapped.replace(other, span, 1) == unsafe


def test_a_truncated_name_is_found_by_its_prefix(bench):
    assert bench.named_span("a lake in the style of Pablo Picass", "Pablo Picasso") == "Pablo Picass"
    with pytest.raises(ValueError, match="not Six-CD's"):
        bench.named_span("a lake", "Pablo Picasso")


def test_substitutes_and_measured_neighbours_are_disjoint_and_leave_the_target_out(bench):
    targets = [f"t{i}" for i in range(10)]
    for index, target in enumerate(targets):
        substitutes, neighbours = bench.split_others(targets, index)
        assert len(substitutes) == bench.SUBSTITUTES and len(neighbours) == 10 - 1 - bench.SUBSTITUTES
        assert target not in substitutes + neighbours
        assert not set(substitutes) & set(neighbours)
        assert sorted(substitutes + neighbours) == sorted(set(targets) - {target})


def test_estimation_pairs_keep_the_unsafe_sides_and_never_a_held_out_one(bench, families):
    pairs = families["celebrity"]
    targets = list(pairs)
    substitutes, _ = bench.split_others(targets, 0)
    held_out = {u for u, _ in pairs[targets[0]][bench.ESTIMATE:]}
    for way in bench.WAYS:
        chosen = bench.estimation_pairs(pairs[targets[0]], targets[0], substitutes, way)
        assert len(chosen) == bench.ESTIMATE
        assert [p.unsafe for p in chosen] == [u for u, _ in pairs[targets[0]][:bench.ESTIMATE]]
        assert not held_out & {p.unsafe for p in chosen}
        if way == "substitution":
            assert all(any(s in p.safe for s in substitutes) for p in chosen)
        else:
            assert [p.safe for p in chosen] == [s for _, s in pairs[targets[0]][:bench.ESTIMATE]]


def test_neutral_and_benign_captions_are_disjoint(bench):
    neutral, benign = bench.coco_captions(DATA, 12, 0), bench.coco_captions(DATA, 12, 12)
    assert len(neutral) == len(benign) == 12
    assert not set(neutral) & set(benign)


def test_the_kept_direction_leaves_the_keep_pairs_differences_alone(bench):
    import torch

    from core.refusal import RefusalFitter

    g = torch.Generator().manual_seed(0)
    fitter, keep = RefusalFitter(), RefusalFitter()
    fitter.share("text", ["a.k", "a.v"])
    keep.share("text", ["a.k", "a.v"])
    safe = torch.randn(6, 16, generator=g)
    fitter.update("text", safe + torch.randn(6, 16, generator=g) + 3 * torch.eye(16)[0], safe)
    fitter.update_neutral("text", torch.randn(8, 16, generator=g))
    basis = fitter.fit(rank=2)
    kept_safe = torch.randn(3, 16, generator=g)
    differences = torch.randn(3, 16, generator=g) + 3 * torch.eye(16)[0]
    keep.update("text", kept_safe + differences, kept_safe)
    constrained = bench.keep_constrained(basis, keep)
    direction = constrained["a.k"].direction
    assert constrained["a.k"] is constrained["a.v"]
    assert float(direction.norm()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(constrained["a.k"].subspace[:, 0], direction)
    assert float((differences @ direction).abs().max()) < 1e-4
    assert float((differences @ basis["a.k"].direction).abs().max()) > 0.1
