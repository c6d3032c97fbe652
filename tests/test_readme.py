"""README's promises that a newcomer meets first: the `core/` snippet runs as written, CI runs README's test command."""

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text()


def _section(heading: str) -> str:
    start = README.index(heading)
    following = README.find("\n## ", start + len(heading))
    return README[start:following if following > 0 else len(README)]


def test_core_snippet_runs_as_written_from_the_repository_root(tmp_path):
    (snippet,) = re.findall(r"```python\n(.*?)```", _section("## Using `core/` directly"), re.S)
    # The repository root as the reader has it, without writing the snippet's output file into the repository.
    for name in ("core", "workflows"):
        (tmp_path / name).symlink_to(REPO_ROOT / name, target_is_directory=True)
    result = subprocess.run([sys.executable, "-"], input=snippet, text=True, cwd=tmp_path, capture_output=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "rolex.safetensors").is_file()


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)```", README, re.S)[0].splitlines()
    test_command = next(line.split("#")[0].strip() for line in commands if "test" in line.split("#")[0])
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines
