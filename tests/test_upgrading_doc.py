"""docs/upgrading.md tells a user what an older file does now. It quotes the nodes' messages and the reference pages
that state each case, so a reworded refusal or a rewritten page must not leave it quoting what no longer exists; and
it was written against one fit revision, file format and package version, whose change means rows to add."""

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGE = REPO_ROOT / "docs" / "upgrading.md"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _code() -> str:
    """The pack's source as one line, with messages split over adjacent string literals joined again (Python's
    ``"... only "`` / ``"directions ..."``, f-strings included, and JavaScript's `` `...` + `...` ``)."""
    files = [*sorted((REPO_ROOT / "core").glob("*.py")), *sorted((REPO_ROOT / "nodes").glob("*.py")),
             *sorted((REPO_ROOT / "web").glob("*.js")), REPO_ROOT / "pyproject.toml"]
    text = "\n".join(path.read_text() for path in files)
    return _flat(re.sub(r"([\"'`])[ \t]*\n\s*\+?\s*[rRbBfFuU]{0,2}\1", "", text))


def test_every_quote_on_the_upgrading_page_is_still_true():
    """Every backticked span (a message's gist, a layer, an input, a value) occurs in the code, every row of a table
    cites a reference page, and every quote cited as ``[page](page.md): "..."`` occurs in that page."""
    page = PAGE.read_text()
    code = _code()
    spans = re.findall(r"`([^`]+)`", _flat(page))
    assert len(spans) > 30
    assert not [span for span in spans if span not in code], "not in core/, nodes/, web/ or pyproject.toml"

    rows = [line for line in page.splitlines() if line.startswith("| ") and not line.startswith("| which files")]
    assert len(rows) >= 15
    assert not [row[:80] for row in rows if not re.search(r"\]\(\w+\.md\): \"", row)], "rows that cite no page"

    citations = re.findall(r"\]\((\w+\.md)\): \"([^\"]+)\"", _flat(page))
    assert len(citations) >= len(rows)
    missing = [(name, quote) for name, quote in citations
               if _flat(quote) not in _flat((REPO_ROOT / "docs" / name).read_text())]
    assert not missing, missing


def test_the_page_is_written_for_the_current_fit_revision_format_and_version():
    """The page lists what each fit revision and file format does on loading and says the pack has no numbered
    release: a new revision, format or version is a row (or a premise) the page lacks until someone adds it."""
    basis = (REPO_ROOT / "core" / "basis.py").read_text()
    serialization = (REPO_ROOT / "core" / "serialization.py").read_text()
    version = re.search(r'^version = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M).group(1)
    written_for = {"FIT_REVISION": "3", "FORMAT_VERSION": "2", "version": "0.1.0"}
    now = {"FIT_REVISION": re.search(r"^FIT_REVISION = (\d+)", basis, re.M).group(1),
           "FORMAT_VERSION": re.search(r"^FORMAT_VERSION = (\d+)", serialization, re.M).group(1),
           "version": version}
    assert now == written_for, "update docs/upgrading.md for the change, then this test"
    assert f"pyproject version `{version}`" in PAGE.read_text()
