"""Finds a real ComfyUI for the host tests and starts a headless server with this pack.

Search order: $COMFYUI_PATH, the ComfyUI this pack is installed in (`../..` when the pack sits in
`custom_nodes/`), `~/ComfyUI`, then the pinned tarball in ../shared/host, extracted outside the repository
(`tools/comfyui_host.py`). When none is found the host tests skip with one loud line.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from tools import comfyui_host  # noqa: E402

PACK_NAME = "comfyui-video-unlearning"


def find_comfyui() -> Path | None:
    """The ComfyUI checkout to test against (tools/comfyui_host.py: installed, else the pinned tarball), or None."""
    return comfyui_host.find_comfyui()


def require_comfyui() -> Path:
    """The ComfyUI path; skips the calling test loudly when there is none."""
    path = find_comfyui()
    if path is None:
        pytest.skip(
            "HOST TESTS SKIPPED: no ComfyUI found at $COMFYUI_PATH, ../.., ~/ComfyUI or ../shared/host "
            "(see README: 'Testing against ComfyUI')",
            allow_module_level=True,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, payload: dict | None = None, timeout: float = 30.0):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode() or "null")


@contextlib.contextmanager
def comfyui_server(base_dir: Path, *, startup_timeout: float = 180.0, extra_args: tuple[str, ...] = ()):
    """Run `main.py --cpu` on a free loopback port with this pack in `base_dir/custom_nodes`.

    `base_dir` is a scratch ComfyUI base directory (models/, input/, output/, user/ live there), so
    the tests never write into the user's ComfyUI. Yields the server's base URL.
    """
    comfy = require_comfyui()
    custom_nodes = base_dir / "custom_nodes"
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link = custom_nodes / PACK_NAME
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    port = free_port()
    log_path = base_dir / "server.log"
    command = [
        sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
        "--base-directory", str(base_dir), "--disable-auto-launch", *extra_args,
    ]
    if os.environ.get("FRONT_END_ROOT") and "--front-end-root" not in extra_args:
        # another editor than the one the host pins (a comfyui-frontend-package's static folder), for every server
        command += ["--front-end-root", os.environ["FRONT_END_ROOT"]]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=comfy, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"ComfyUI exited with {process.returncode}; log:\n{log_path.read_text()[-4000:]}")
                try:
                    http_json(f"{url}/system_stats", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"ComfyUI did not start in {startup_timeout}s; log:\n{log_path.read_text()[-4000:]}")
                    time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
