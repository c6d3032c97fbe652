"""Loads a repository script (a benchmark or a tool: a file, not a module of a package) as a module, for the tests
that drive one."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(path: Path, name: str) -> ModuleType:
    """The script at ``path`` run as the module ``name``, registered in ``sys.modules`` before it runs: dataclasses
    defined in it look their module up there."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
