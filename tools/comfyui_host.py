"""Where the ComfyUI that the host tests run against comes from (standard library only).

Search order: ``$COMFYUI_PATH``; the ComfyUI this pack is installed in (``../..`` when the pack sits in
``custom_nodes/``); ``~/ComfyUI``; else the pinned source tarball ``../shared/host/comfyui-0.3.64.tar.gz`` (or
``$COMFYUI_TARBALL``), checked against its sha256 and extracted once into a cache folder outside the
repository (``$VIDEO_UNLEARNING_CACHE``, default ``~/.cache/comfyui-video-unlearning``). ComfyUI is on no package
registry, so a fresh machine gets its host from that tarball; it is a test fixture (GPL-3.0), never committed here.

Used by ``dev.py`` (before any virtual environment exists) and by the tests (``tests/comfy_host.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PINNED_VERSION = "0.3.64"
PINNED_TARBALL = REPO_ROOT.parent / "shared" / "host" / f"comfyui-{PINNED_VERSION}.tar.gz"


def is_comfyui(path: Path) -> bool:
    return (path / "comfy").is_dir() and (path / "main.py").is_file() and (path / "nodes.py").is_file()


def cache_dir() -> Path:
    return Path(os.environ.get("VIDEO_UNLEARNING_CACHE", Path.home() / ".cache" / "comfyui-video-unlearning"))


def tarball() -> Path:
    return Path(os.environ.get("COMFYUI_TARBALL", PINNED_TARBALL)).expanduser()


def installed_comfyui() -> Path | None:
    """A ComfyUI already on this machine ($COMFYUI_PATH, the one the pack sits in, ~/ComfyUI), or None."""
    candidates = []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]).expanduser())
    if REPO_ROOT.parent.name == "custom_nodes":
        candidates.append(REPO_ROOT.parents[1])
    candidates.append(Path.home() / "ComfyUI")
    return next((path.resolve() for path in candidates if is_comfyui(path)), None)


def pinned_comfyui(*, extract: bool = True) -> Path | None:
    """The pinned tarball's tree in the cache, extracted on first use; None when there is no tarball."""
    target = cache_dir() / f"comfyui-{PINNED_VERSION}"
    if is_comfyui(target):
        return target
    source = tarball()
    if not extract or not source.is_file():
        return None
    _check_sha256(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Extract beside the target and rename, so an interrupted extraction never looks like a ComfyUI.
    staging = Path(tempfile.mkdtemp(prefix="extract-", dir=target.parent))
    try:
        with tarfile.open(source) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(staging, filter="data")
            else:  # Python before 3.10.12 / 3.11.4 (Debian 12's 3.11.2) has no extraction filters
                archive.extractall(staging, members=_plain_members(archive, source))
        roots = [p for p in staging.iterdir() if is_comfyui(p)]
        root = staging if is_comfyui(staging) else (roots[0] if len(roots) == 1 else None)
        if root is None:
            raise ValueError(f"{source} holds no ComfyUI source tree (no comfy/, main.py, nodes.py at its top)")
        if target.exists():
            shutil.rmtree(target)
        root.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _plain_members(archive: tarfile.TarFile, source: Path) -> list[tarfile.TarInfo]:
    """The archive's members, refused unless each is a file or folder that stays inside the extraction folder (what
    the "data" filter allows of a source tree)."""
    members = archive.getmembers()
    for member in members:
        parts = Path(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or not (member.isfile() or member.isdir()):
            raise ValueError(f"{source}: member {member.name!r} is not a plain file or folder inside the archive; "
                             "use the pinned ComfyUI tarball from ../shared/host")
    return members


def find_comfyui(*, extract: bool = True) -> Path | None:
    """The ComfyUI to test against, or None when there is neither an installed one nor the pinned tarball."""
    return installed_comfyui() or pinned_comfyui(extract=extract)


def _check_sha256(source: Path) -> None:
    sums = source.parent / "SHA256SUMS"
    if not sums.is_file():
        return
    expected = {line.split()[1]: line.split()[0] for line in sums.read_text().splitlines() if len(line.split()) == 2}
    if source.name not in expected:
        return
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected[source.name]:
        raise ValueError(f"{source} does not match its sha256 in {sums}: fetch the pinned ComfyUI tarball again")
