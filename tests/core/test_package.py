"""The core is framework-agnostic and importable both on its own and as part of the pack."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_core_never_imports_comfy():
    for path in (REPO / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not any(n == "comfy" or n.startswith(("comfy.", "comfy_")) for n in names), (path, names)


def test_core_imports_without_a_host_in_a_fresh_interpreter():
    code = ("import sys; import core; from core.refusal import RefusalFitter; "
            "assert 'comfy' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_core_imports_as_a_subpackage_of_the_pack():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('video_unlearning_pack', {str(REPO / '__init__.py')!r},"
        f" submodule_search_locations=[{str(REPO)!r}])\n"
        "pack = importlib.util.module_from_spec(spec); sys.modules['video_unlearning_pack'] = pack\n"
        "spec.loader.exec_module(pack)\n"
        "import importlib; core = importlib.import_module('video_unlearning_pack.core')\n"
        "assert core.RefusalFitter.__module__ == 'video_unlearning_pack.core.refusal'; print('ok')\n"
    )
    # Run outside the repo and without ComfyUI on the path, as the registry's import check would.
    result = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_every_file_the_editor_serves_is_package_data():
    """``pip install .`` ships what ComfyUI serves from the pack folder: the editor extension, the help pages (English
    and translated), the translations in ``locales/`` and the workflow templates with their pair lists."""
    import tomllib

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "comfyui_video_unlearning"]
    shipped = {path for pattern in patterns for path in REPO.glob(pattern) if path.is_file()}
    served = {path for folder in ("web", "locales", "workflows") for path in (REPO / folder).rglob("*")
              if path.is_file()}
    assert sorted(str(path.relative_to(REPO)) for path in served - shipped) == []
