"""The editor the browser tests run on: the comfyui-frontend-package the host pins (1.27.10 for ComfyUI 0.3.64), and
for the tests marked ``both_frontends`` (``frontends.py``) a newer one too, ``$VIDEO_UNLEARNING_NEWER_FRONTEND`` (its
``static`` folder, served with ``--front-end-root``; ``dev.py test`` installs it and sets this). Without it those runs
skip loudly."""

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE.parent / "host"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from comfy_host import comfyui_server, find_comfyui, http_json  # noqa: E402
from frontends import NEWER, PINNED  # noqa: E402


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """(url, base directory, object_info) of a ComfyUI server with tiny models, on the pinned editor unless the test
    asks for the newer one (``both_frontends``)."""
    from server_setup import write_models

    frontend = getattr(request, "param", PINNED)
    if find_comfyui() is None:
        pytest.skip("HOST TESTS SKIPPED: no ComfyUI found at $COMFYUI_PATH, ../.. or ~/ComfyUI")
    extra = ()
    if frontend == NEWER:
        root = os.environ.get("VIDEO_UNLEARNING_NEWER_FRONTEND", "")
        if not (Path(root) / "index.html").is_file():
            pytest.skip("NEWER FRONTEND SKIPPED: set VIDEO_UNLEARNING_NEWER_FRONTEND to a comfyui-frontend-package's "
                        "static folder (python3 dev.py test installs one and sets it)")
        extra = ("--front-end-root", root)
    base = tmp_path_factory.mktemp("comfy_base")
    write_models(base)
    with comfyui_server(base, extra_args=extra) as url:
        yield url, base, http_json(f"{url}/object_info")
