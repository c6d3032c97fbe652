"""The ``refusal_vectors`` model folder: registration, listing and safe file names."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile

import folder_paths

FOLDER = "refusal_vectors"
EXTENSIONS = {".safetensors"}


def register_folder() -> None:
    """Register ``models/refusal_vectors`` (extra_model_paths.yaml may add more) once."""
    if FOLDER not in folder_paths.folder_names_and_paths:
        os.makedirs(os.path.join(folder_paths.models_dir, FOLDER), exist_ok=True)
        folder_paths.folder_names_and_paths[FOLDER] = ([os.path.join(folder_paths.models_dir, FOLDER)], EXTENSIONS)


def list_vectors() -> list[str]:
    register_folder()
    return folder_paths.get_filename_list(FOLDER)


def vector_path(name: str) -> str:
    """Full path of a listed vector; names that are not in the folder's list are refused."""
    register_folder()
    if name not in folder_paths.get_filename_list(FOLDER):
        raise ValueError(f"refusal vector {name!r} is not in the {FOLDER} folder; pick one from the list "
                         "(save one with Save Refusal Vector, or copy a .safetensors file there)")
    return folder_paths.get_full_path_or_raise(FOLDER, name)


#: One folder or file name of a prefix: letters of any script, digits, spaces, '-', '_' and '.', not starting with
#: '.' (so neither '.' nor '..', nor a hidden file).
_SAFE_SEGMENT = re.compile(r"[\w\-][\w\-. ]*")


def prefix_problem(prefix) -> str | None:
    """Why ``prefix`` cannot name a file inside the output folder, or None when it can."""
    segments = prefix.split("/") if isinstance(prefix, str) else None
    if not segments or not all(_SAFE_SEGMENT.fullmatch(segment) for segment in segments):
        return (f"filename prefix {prefix!r} may use letters, digits, spaces, '-', '_', '.' and '/' for subfolders; "
                "no part may be empty or start with '.' (the file must stay inside the folder)")
    return None


def new_file_path(folder: str, prefix: str) -> str:
    """A fresh ``<folder>/<prefix>_00001.safetensors``; the prefix cannot leave the folder."""
    problem = prefix_problem(prefix)
    if problem:
        raise ValueError(problem)
    root = os.path.realpath(folder)
    directory = os.path.realpath(os.path.join(root, os.path.dirname(prefix)))
    if os.path.commonpath([root, directory]) != root:
        raise ValueError(f"filename prefix {prefix!r} leaves the folder {root}")
    os.makedirs(directory, exist_ok=True)
    stem = os.path.basename(prefix)
    # After the highest number there, as ComfyUI's own save nodes count: taking the first free one reused a deleted
    # file's name, and a loader that had read the deleted file under that name answered from ComfyUI's cache.
    # Names compared case-folded: on Windows and macOS "Rolex_00001" is the file "rolex_00001", which os.replace
    # would overwrite; the existence check covers any other way two names meet one file.
    numbered = re.compile(re.escape(stem.casefold()) + r"_(\d{5,})\.safetensors")
    taken = [int(match.group(1)) for match in (numbered.fullmatch(name.casefold()) for name in os.listdir(directory))
             if match]
    counter = max(taken, default=0) + 1
    while os.path.exists(os.path.join(directory, f"{stem}_{counter:05d}.safetensors")):
        counter += 1
    return os.path.join(directory, f"{stem}_{counter:05d}.safetensors")


def save_safetensors_atomic(tensors: dict, path: str, metadata: dict[str, str]) -> None:
    """Write a safetensors file so that ``path`` is either absent or complete: written to a temporary file
    beside it, then renamed over it (``os.replace``); on any error the temporary file is removed."""
    from safetensors.torch import save_file

    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def file_signature(name) -> tuple | None:
    """``(name, SHA-256 of the file)`` of a listed vector, or None for a name that is not listed (its validation then
    says so): what tells ComfyUI's cache that a file saved under the same name changed, as LoadImage tells it. Size
    and modification time missed a same-size file rewritten within the file system's time resolution, and took a
    byte-identical copy for a change. Vector files are kilobytes to a few megabytes."""
    if not isinstance(name, str) or name not in list_vectors():
        return None
    digest = hashlib.sha256()
    with open(folder_paths.get_full_path_or_raise(FOLDER, name), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return name, digest.hexdigest()
