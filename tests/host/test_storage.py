"""Where Save Refusal Vector and Export Unlearning as LoRA write, and which names they take, as users' folders are:
a folder in extra_model_paths.yaml, a read-only models folder, a subfolder linked to another disk, two ComfyUI
processes sharing one folder, names in any script and near the file systems' length limit."""

from __future__ import annotations

import os

import pytest
import torch

PAIRS = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
NEUTRAL = "a cat on a sofa\na bowl of fruit\na city street at night"

pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.fixture(scope="module")
def nodes(pack):
    from comfyui_video_unlearning.nodes import definitions

    return definitions


@pytest.fixture(scope="module")
def storage(pack):
    from comfyui_video_unlearning.nodes import storage

    return storage


@pytest.fixture(scope="module")
def basis(nodes, wan, clip):
    with torch.inference_mode():
        encoded = nodes.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
        activations = nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "1", 0, "default", 0, -1)[0]
        return nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]


@pytest.fixture
def folders(storage, tmp_path, monkeypatch):
    """A fresh models folder (not yet holding refusal_vectors) and loras folder for one test."""
    import folder_paths

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path / "loras")], {".safetensors"}))
    monkeypatch.delitem(folder_paths.folder_names_and_paths, storage.FOLDER, raising=False)
    folder_paths.filename_list_cache.clear()
    yield tmp_path
    folder_paths.filename_list_cache.clear()


def test_a_yaml_entry_for_the_folder_keeps_the_saved_vectors_and_the_extension(nodes, storage, basis, folders):
    """ComfyUI reads extra_model_paths.yaml before the pack: its entry had no extension and no models/refusal_vectors,
    so every file of the shared folder was offered and the vectors saved in models/ vanished from the list. The yaml's
    folder stays first, so saves go where the user pointed the folder."""
    import folder_paths

    storage.register_folder()
    nodes.SaveRefusalVector.execute(basis, "mine/rolex")
    shared = folders / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text("not a vector")
    del folder_paths.folder_names_and_paths[storage.FOLDER]
    folder_paths.add_model_folder_path(storage.FOLDER, str(shared), is_default=True)  # what the yaml does
    folder_paths.filename_list_cache.clear()
    nodes.SaveRefusalVector.execute(basis, "team/rolex")
    assert (shared / "team" / "rolex_00001.safetensors").is_file()
    assert storage.list_vectors() == ["mine/rolex_00001.safetensors", "team/rolex_00001.safetensors"]
    assert folder_paths.get_folder_paths(storage.FOLDER) == [str(shared), str(folders / "models" / "refusal_vectors")]
    assert nodes.LoadRefusalVector.execute("mine/rolex_00001.safetensors")[0].layers == basis.layers


def test_registering_creates_nothing_so_a_read_only_models_folder_still_loads_the_pack(storage, folders):
    storage.register_folder()
    assert not (folders / "models").exists() and storage.list_vectors() == []


def test_a_folder_that_cannot_be_written_is_named_with_the_remedy(nodes, basis, folders, storage):
    storage.register_folder()
    (folders / "models").write_text("a file where the folder should be")
    with pytest.raises(ValueError, match=r"cannot write into .*models.*make that folder writable"):
        nodes.SaveRefusalVector.execute(basis, "rolex")


def test_two_processes_sharing_a_folder_never_take_one_name(storage, folders):
    """The name is claimed exclusively when chosen: a second save that lists the folder before the first has written
    its file takes the next number, where both took _00001 and the later replaced the earlier."""
    first = storage.new_file_path(str(folders), "shared/rolex")
    second = storage.new_file_path(str(folders), "shared/rolex")
    assert [os.path.basename(first), os.path.basename(second)] == ["rolex_00001.safetensors", "rolex_00002.safetensors"]


def test_a_failed_write_leaves_no_claimed_name(nodes, wan, basis, folders):
    patched = nodes.ApplyUnlearning.execute(wan, basis, 1.0, True, "all in vector", 0, -1, "zero")[0]
    with pytest.raises(ValueError, match="already carries"):  # refused: it carries the edit
        nodes.ExportLoRA.execute(patched, basis, 1.0, "zero", "unlearning/rolex")
    assert not any(path.is_file() for path in (folders / "loras").rglob("*"))


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_subfolder_linked_to_another_disk_is_written_as_comfyui_writes_it(nodes, wan, basis, folders):
    (folders / "elsewhere").mkdir()
    (folders / "loras").mkdir()
    os.symlink(folders / "elsewhere", folders / "loras" / "team")
    shown = nodes.ExportLoRA.execute(wan, basis, 1.0, "zero", "team/rolex").ui["text"][0]
    assert shown == "team/rolex_00001.safetensors"  # the subfolder shown, as the loaders list it
    assert (folders / "elsewhere" / "rolex_00001.safetensors").is_file()


def test_names_in_any_script_and_near_the_length_limit(nodes, wan, basis, folders, storage):
    storage.register_folder()
    decomposed = "Cafe\u0301"  # "Café" as macOS file names hold it
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # a zero-width non-joiner inside the word
    for name in (decomposed, "नमस्ते", "สวัสดี", "ロレックス", persian, "CON", "a" * 200, "ロ" * 66, "com10/x"):
        assert nodes.SaveRefusalVector.validate_inputs(filename_prefix=name) is True, name
        assert nodes.ExportLoRA.validate_inputs(filename_prefix=name) is True, name
    assert nodes.SaveRefusalVector.execute(basis, decomposed).ui["text"] == ["Caf\u00e9_00001.safetensors"]
    (folders / "models" / "refusal_vectors" / "Cafe\u0301_00007.safetensors").write_bytes(b"")  # as macOS lists it
    assert nodes.SaveRefusalVector.execute(basis, "Caf\u00e9").ui["text"] == ["Caf\u00e9_00008.safetensors"]
    long_name = "ロ" * 66  # 198 bytes: with the number and extension 216, its temporary file's name under 255
    shown = nodes.ExportLoRA.execute(wan, basis, 1.0, "zero", long_name).ui["text"][0]
    assert shown == f"{long_name}_00001.safetensors"
    for name, problem in (("a" * 201, "more than 200 bytes"), ("ロ" * 67, "more than 200 bytes"),
                          ("aux/rolex", "its part 'aux' is a folder name Windows keeps for a device"),
                          ("Nul.txt/rolex", "Windows keeps for a device"), ("com0/x", "Windows keeps for a device"),
                          ("lpt\u00b2/x", "Windows keeps for a device"),
                          ("rolex./v1", "ending in '.' or a space"), ("rolex /v1", "ending in '.' or a space"),
                          ("\u0301rolex", "start with")):
        assert problem in nodes.SaveRefusalVector.validate_inputs(filename_prefix=name), name
        with pytest.raises(ValueError, match=problem.replace(".", "\\.").replace("(", "\\(")):
            nodes.SaveRefusalVector.execute(basis, name)


def test_a_vector_saved_with_pair_digests_keeps_the_check_from_reusing_its_pairs(nodes, storage, basis, wan, clip,
                                                                                  folders):
    """pair_text 'digests': the file holds no prompt of its pairs, and Unlearning Check still refuses validation pairs
    that are among them. The input is optional: a prompt or workflow from before it saves the text, as then."""
    from comfyui_video_unlearning.nodes.check import UnlearningCheck

    storage.register_folder()
    shown = nodes.SaveRefusalVector.execute(basis, "shared/rolex", "digests").ui["text"][0]
    path = folders / "models" / "refusal_vectors" / shown
    assert b"Rolex watch number" not in path.read_bytes()
    loaded = nodes.LoadRefusalVector.execute(shown)[0]
    assert all(side.startswith("sha256:") for pair in loaded.pairs for side in pair)
    reused = nodes.PairEncoder.execute(clip, PAIRS.upper(), NEUTRAL, "Rolex")[0]  # other case: the same prompts
    with pytest.raises(ValueError, match="5 of the 5 validation pairs are among the pairs the refusal vector"):
        UnlearningCheck.execute(wan, loaded, "0, 1", "all in vector", 0, -1, "zero", "none", 64, 64, 1, "1", 0,
                                validation_pairs=reused)
    text = nodes.SaveRefusalVector.execute(basis, "shared/rolex").ui["text"][0]
    assert b"Rolex watch number" in (folders / "models" / "refusal_vectors" / text).read_bytes()
    assert "pair_text" in nodes.SaveRefusalVector.define_schema().get_v1_info(nodes.SaveRefusalVector).input["optional"]


def test_a_long_bad_prefix_is_quoted_cut_and_its_bad_character_named(nodes, storage):
    """The prefix was quoted whole: a pasted 10,000-line prefix made a 30,131-character message for each node. It is
    now cut as Pair Encoder's lines are (core.pairs._quoted), and the message names the first character refused."""
    huge = "x\n" * 10000
    for node in (nodes.SaveRefusalVector, nodes.ExportLoRA):
        message = node.validate_inputs(filename_prefix=huge)
        assert len(message) < 400 and "(20000 characters)" in message, message
        assert "has '\\n' (U+000A) at character 2" in message, message
    long_part = nodes.SaveRefusalVector.validate_inputs(filename_prefix="a" * 5000 + "/rolex")
    assert len(long_part) < 500 and "more than 200 bytes" in long_part and "(5000 characters)" in long_part
    drive = nodes.SaveRefusalVector.validate_inputs(filename_prefix="C:/x")
    assert "its part 'C:' has ':' (U+003A) at character 2" in drive
