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


def _github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped (``_`` and ``-`` kept), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    return {_github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_every_relative_link_of_the_documentation_resolves():
    """README is a summary and docs/ the reference it points into, so a moved file or a renamed heading must not
    leave a link that lands nowhere (a missing file, or an anchor GitHub would not scroll to)."""
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")),
             REPO_ROOT / "workflows" / "README.md", *sorted((REPO_ROOT / "web" / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such file)")
            elif anchor and (linked.suffix != ".md" or anchor not in _anchors(linked.read_text())):
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_readme_points_to_every_reference_page():
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", README))
    assert linked >= {f"docs/{page.name}" for page in (REPO_ROOT / "docs").glob("*.md")}
