"""bench/fit_correction.py measures the old contrastive solve against the exact one: its re-creation of the old
solve must really differ where the old one failed (rows repeated across timesteps) and agree where it did not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from script_module import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fit_correction.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH, "fit_correction")


def _factors(repeat: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    safe = 3 * torch.randn(5, 64, generator=g, dtype=torch.float64)
    shift = 0.01 * (torch.randn(64, generator=g, dtype=torch.float64) + 0.05 * torch.randn(5, 64, generator=g,
                                                                                          dtype=torch.float64))
    pairs = (shift if repeat == 1 else shift.repeat_interleave(repeat, 0)) / (5 * repeat) ** 0.5
    neutral = 3 * torch.randn(8, 64, generator=g, dtype=torch.float64)
    return pairs, (neutral - neutral.mean(0)) / 7 ** 0.5


def test_the_old_solve_is_re_created_where_it_failed_and_agrees_where_it_did_not(bench, monkeypatch):
    from core import refusal
    from core.refusal import _top_contrastive_eigenvectors as exact

    repeated = _factors(repeat=3)  # text-side rows: the same at every timestep
    assert bench.largest_angle(bench.qr_span_solve(*repeated, 1.0, 2)[0], exact(*repeated, 1.0, 2)[0]) > 5  # degrees
    distinct = _factors(repeat=1)
    assert bench.largest_angle(bench.qr_span_solve(*distinct, 1.0, 2)[0], exact(*distinct, 1.0, 2)[0]) < 1e-4
    basis = exact(*distinct, 1.0, 3)[0]
    assert bench.largest_angle(basis, basis) == pytest.approx(0.0, abs=1e-5)
    # More samples than dimensions: both take the dense solve, also while the bench has put the old solve in the
    # module's place (as run_concept does).
    wide = tuple(torch.cat([f] * 8) for f in _factors(repeat=3, seed=1))
    monkeypatch.setattr(refusal, "_top_contrastive_eigenvectors", bench.qr_span_solve)
    assert bench.largest_angle(bench.qr_span_solve(*wide, 1.0, 2)[0], exact(*wide, 1.0, 2)[0]) < 1e-4
