"""The ``refusal_vectors`` model folder: registration, listing and safe file names."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import unicodedata

import folder_paths

from ..core.pairs import _quoted

FOLDER = "refusal_vectors"
EXTENSIONS = {".safetensors"}


def register_folder() -> None:
    """Register ``models/refusal_vectors`` among the folder's paths, with its extension; idempotent.

    ComfyUI reads extra_model_paths.yaml before it loads the pack: a ``refusal_vectors`` entry there creates the
    folder's record with no extension (which lists every file) and without ``models/refusal_vectors``, so adding the
    default only when the record was missing hid the vectors saved there. The yaml's paths stay first, so saves go
    where the user pointed the folder (ComfyUI keeps no ``is_default`` flag to tell), and ``models/refusal_vectors`` is
    listed after them. Nothing is created here: a read-only models folder must not stop the pack from loading; saving
    creates the folder.
    """
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths, extensions = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    if default in paths and EXTENSIONS <= extensions:
        return
    folder_paths.folder_names_and_paths[FOLDER] = ([*paths, *([] if default in paths else [default])],
                                                    extensions | EXTENSIONS)
    folder_paths.filename_list_cache.pop(FOLDER, None)


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


#: The longest file or folder name most file systems take is 255 bytes; a prefix's last part gets "_00001" and
#: ".safetensors", and the temporary file written beside it a few bytes more.
_MAX_SEGMENT_BYTES = 200
#: Names Windows keeps for devices: a folder called "aux" cannot be created there (a file "aux_00001" can). COM and LPT
#: take 0-9 and the superscript digits.
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul", "conin$", "conout$",
                    *(f"{port}{digit}" for port in ("com", "lpt") for digit in "0123456789\u00b9\u00b2\u00b3")}
#: Zero-width (non-)joiners: part of the normal spelling of Persian, Urdu and Indic words.
_JOINERS = "\u200c\u200d"


def _segment_problem(segment: str, *, folder: bool) -> str | None:
    if not segment or not (segment[0].isalnum() or segment[0] in "_-"):
        return "may not be empty or start with '.', a space or a mark (the file must stay inside the folder)"
    # \w misses combining marks (Hindi, Thai, a decomposed "é"), which are letters of their scripts.
    bad = next((i for i, c in enumerate(segment) if not (c.isalnum() or c in "_-. " or c in _JOINERS
                                                       or unicodedata.category(c).startswith("M"))), None)
    if bad is not None:
        return (f"has {segment[bad]!r} (U+{ord(segment[bad]):04X}) at character {bad + 1}; it may use letters of any "
                "script, digits, spaces, '-', '_' and '.' ('/' separates subfolders)")
    if len(segment.encode("utf-8")) > _MAX_SEGMENT_BYTES:
        return f"takes more than {_MAX_SEGMENT_BYTES} bytes in UTF-8 (file systems take 255 for a name)"
    if folder and segment[-1] in ". ":
        return "is a folder name ending in '.' or a space, which Windows drops"
    if folder and segment.split(".")[0].rstrip().casefold() in _WINDOWS_DEVICES:
        return "is a folder name Windows keeps for a device (con, aux, nul, com1, lpt1, ...)"
    return None


def prefix_problem(prefix) -> str | None:
    """Why ``prefix`` cannot name a file inside the output folder on any system, or None when it can."""
    if not isinstance(prefix, str):
        return f"filename prefix {prefix!r} must be text"
    segments = unicodedata.normalize("NFC", prefix).split("/")
    for index, segment in enumerate(segments):
        problem = _segment_problem(segment, folder=index < len(segments) - 1)
        if problem:
            # Quoted in full, a pasted 10,000-line prefix made a 30,131-character message: cut as Pair Encoder's are.
            where = f"its part {_quoted(segment)} " if len(segments) > 1 else ""
            return f"filename prefix {_quoted(prefix)}: {where}{problem}"
    return None


def new_file_path(folder: str, prefix: str) -> str:
    """Claim a fresh ``<folder>/<prefix>_00001.safetensors`` and return its path; the prefix cannot leave the folder.

    The name is claimed by creating it empty and exclusively, so two ComfyUI processes saving into one shared folder
    never pick the same number (listing the folder alone let the second replace the first's file). Use it through
    :func:`new_file`, which removes the claim when the write fails.
    """
    problem = prefix_problem(prefix)
    if problem:
        raise ValueError(problem)
    prefix = unicodedata.normalize("NFC", prefix)
    # abspath, as ComfyUI's save nodes: a subfolder that is a link to another disk is the user's choice; '..' and
    # absolute parts are refused above.
    root = os.path.abspath(folder)
    directory = os.path.abspath(os.path.join(root, os.path.dirname(prefix)))
    if os.path.commonpath([root, directory]) != root:
        raise ValueError(f"filename prefix {prefix!r} leaves the folder {root}")
    try:
        os.makedirs(directory, exist_ok=True)
        names = os.listdir(directory)
    except OSError as error:
        raise _write_error(directory, error) from error
    stem = os.path.basename(prefix)
    # After the highest number there, as ComfyUI's own save nodes count: taking the first free one reused a deleted
    # file's name, and a loader that had read the deleted file under that name answered from ComfyUI's cache.
    # Names compared case-folded: on Windows and macOS "Rolex_00001" is the file "rolex_00001".
    numbered = re.compile(re.escape(stem.casefold()) + r"_(\d{5,})\.safetensors")
    # NFC as the prefix: macOS lists names decomposed
    taken = [int(match.group(1)) for match in
             (numbered.fullmatch(unicodedata.normalize("NFC", name).casefold()) for name in names) if match]
    counter = max(taken, default=0) + 1
    while True:
        path = os.path.join(directory, f"{stem}_{counter:05d}.safetensors")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path
        except FileExistsError:
            counter += 1
        except OSError as error:
            raise _write_error(directory, error) from error


@contextlib.contextmanager
def new_file(folder: str, prefix: str):
    """``with new_file(folder, prefix) as path:`` write the file at ``path`` (over the empty claim, as ``os.replace``
    does); on an error the claim is removed, so no empty file is left under a real name."""
    path = new_file_path(folder, prefix)
    try:
        yield path
    except BaseException:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            os.remove(path)
        raise


def _write_error(directory: str, error: OSError) -> ValueError:
    return ValueError(f"cannot write into {directory}: {error.strerror or error}; make that folder writable for the "
                      "user ComfyUI runs as, or give the folder a writable path in extra_model_paths.yaml (a "
                      "refusal_vectors entry; for loras, is_default: true; a newer ComfyUI reads extra_paths.yaml "
                      "instead where both exist)")


def relative_name(path: str, folder: str) -> str:
    """``path`` as the loaders list it: relative to ``folder``, with '/'."""
    return os.path.relpath(path, folder).replace(os.sep, "/")


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
