"""dev.py stops before the suite when the temporary directory cannot hold the tests' scratch ComfyUI folders,
naming the folder and the remedy, instead of a dozen `No space left on device` errors minutes into the run."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest

import dev

Usage = namedtuple("Usage", "total used free")


def test_too_little_scratch_space_stops_the_run_with_the_folder_and_the_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(dev.tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100 * 2**30, 99 * 2**30, 2**30))
    with pytest.raises(SystemExit) as stopped:
        dev.require_scratch_space()
    message = str(stopped.value)
    assert str(tmp_path) in message and "1.0 GiB free" in message
    assert "TMPDIR" in message and "pytest-of-" in message


def test_enough_scratch_space_lets_the_run_go_on(monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: Usage(100 * 2**30, 50 * 2**30, int(dev.SCRATCH_NEEDED_GIB * 2**30)))
    dev.require_scratch_space()
