"""tools/comfyui_host.py extracts the pinned ComfyUI tarball on Pythons with and without tarfile's extraction
filters (Debian 12's Python 3.11.2 has none), and refuses members that would leave the extraction folder."""

from __future__ import annotations

import io
import tarfile

import pytest

from tools import comfyui_host


def tarball(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


TREE = {"ComfyUI-0.3.64/main.py": b"", "ComfyUI-0.3.64/nodes.py": b"", "ComfyUI-0.3.64/comfy/__init__.py": b""}


@pytest.mark.parametrize("filters", [True, False])
def test_the_pinned_tarball_extracts_with_or_without_extraction_filters(filters, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEO_UNLEARNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COMFYUI_TARBALL", str(tarball(tmp_path / "comfyui.tar.gz", TREE)))
    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    found = comfyui_host.pinned_comfyui()
    assert found == tmp_path / "cache" / "comfyui-0.3.64" and comfyui_host.is_comfyui(found)


@pytest.mark.parametrize("bad", ["../outside.py", "/etc/evil.py"])
def test_members_outside_the_folder_are_refused_without_filters(bad, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEO_UNLEARNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COMFYUI_TARBALL", str(tarball(tmp_path / "comfyui.tar.gz", {**TREE, bad: b"x"})))
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    with pytest.raises(ValueError, match="not a plain file or folder inside the archive"):
        comfyui_host.pinned_comfyui()
    assert not (tmp_path / "outside.py").exists() and not (tmp_path / "cache" / "comfyui-0.3.64").exists()
