"""Which names the refusal_vectors and loras folders take and how files are numbered (``nodes/storage.py``), rule by
rule: each test pins a rule whose wrong version gave no host-test failure in the mutation test of 2026-12-07 (a
folder name Windows cannot create, a name over the byte limit, a file numbered over another, a changed file taken for
the same one)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def storage(pack):
    from comfyui_video_unlearning.nodes import storage

    return storage


@pytest.mark.parametrize("prefix, problem", [
    ("a /b", "folder name ending in '.' or a space"),
    ("a./b", "folder name ending in '.' or a space"),
    ("aux/b", "Windows keeps for a device"),
    ("aux.d/b", "Windows keeps for a device"),  # Windows reads "aux.d" as the device too
    ("COM1 /b", "folder name ending"),
    (".hidden", "may not be empty or start with '.'"),
    ("\u00e9" * 101, "more than 200 bytes"),  # 101 characters, 202 bytes in UTF-8
])
def test_names_no_file_system_takes_are_refused(storage, prefix, problem):
    assert problem in storage.prefix_problem(prefix)


@pytest.mark.parametrize("prefix", ["aux", "rolex/aux", "a.", "\u00e9" * 100, "Rolex v2/run 1", "e\u0301t\u00e9"])
def test_file_names_take_what_only_folders_may_not(storage, prefix):
    """The last part names a file (it gets _00001.safetensors): a device name or a final '.' is fine there."""
    assert storage.prefix_problem(prefix) is None


def test_a_decomposed_name_is_judged_and_written_composed(storage, tmp_path):
    """macOS gives "é" as "e" + a combining accent: judged as one letter, and numbered with the composed name."""
    composed = "\u00e9" * 100  # 200 bytes: at the limit
    decomposed = "e\u0301" * 100  # 300 bytes as typed
    assert storage.prefix_problem(decomposed) is None
    path = storage.new_file_path(str(tmp_path), decomposed)
    assert os.path.basename(path) == f"{composed}_00001.safetensors"


def test_a_new_file_is_numbered_after_the_highest_whatever_its_case_or_width(storage, tmp_path):
    for name in ("rolex_00001.safetensors", "ROLEX_00003.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    # after the highest, not in the gap a deleted file left (ComfyUI's cache still knows that name)
    assert os.path.basename(storage.new_file_path(str(tmp_path), "rolex")) == "rolex_00004.safetensors"
    (tmp_path / "rolex_123456.safetensors").write_bytes(b"x")
    assert os.path.basename(storage.new_file_path(str(tmp_path), "rolex")) == "rolex_123457.safetensors"


def test_a_name_taken_between_listing_and_writing_is_never_overwritten(storage, tmp_path, monkeypatch):
    """Another process's file that the listing missed: the exclusive claim moves on to the next number."""
    taken = tmp_path / "rolex_00001.safetensors"
    taken.write_bytes(b"the other process's vector")
    monkeypatch.setattr(storage.os, "listdir", lambda _: [])
    path = storage.new_file_path(str(tmp_path), "rolex")
    assert os.path.basename(path) == "rolex_00002.safetensors"
    assert taken.read_bytes() == b"the other process's vector"


def test_a_file_changed_after_its_first_megabyte_gets_a_new_signature(storage, tmp_path, monkeypatch):
    import folder_paths

    folder = tmp_path / "vectors"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, storage.FOLDER, ([str(folder)], {".safetensors"}))
    folder_paths.filename_list_cache.clear()
    try:
        file = folder / "v.safetensors"
        head = b"h" * (1 << 20)
        file.write_bytes(head + b"a")
        before = storage.file_signature("v.safetensors")
        file.write_bytes(head + b"b")
        assert storage.file_signature("v.safetensors") != before
        assert storage.file_signature("missing.safetensors") is None
    finally:
        folder_paths.filename_list_cache.clear()


def test_the_yaml_folder_stays_first_and_the_listing_is_read_again(storage, tmp_path, monkeypatch):
    """Saves go to the first path: the one the user gave in extra_model_paths.yaml, not models/refusal_vectors; and a
    listing cached before registration (it showed every file, no extension) is dropped."""
    import folder_paths

    yaml_folder = str(tmp_path / "mine")
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, storage.FOLDER, ([yaml_folder], set()))
    monkeypatch.setitem(folder_paths.filename_list_cache, storage.FOLDER, (["stale.txt"], {}, 0.0))
    storage.register_folder()
    paths, extensions = folder_paths.folder_names_and_paths[storage.FOLDER]
    assert paths == [yaml_folder, os.path.join(str(tmp_path / "models"), storage.FOLDER)]
    assert ".safetensors" in extensions
    assert storage.FOLDER not in folder_paths.filename_list_cache


def test_a_failed_write_gives_its_claimed_name_back(storage, tmp_path):
    with pytest.raises(RuntimeError, match="disk full"):
        with storage.new_file(str(tmp_path), "rolex") as path:
            raise RuntimeError("disk full")
    assert not os.path.exists(path)
    assert os.path.basename(storage.new_file_path(str(tmp_path), "rolex")) == "rolex_00001.safetensors"
