"""Every node's help page (``web/docs/<node id>.md``), which ComfyUI's editor shows in its node docs panel, against
the node's schema as the pack registers it: one page per node and none for a node that does not exist, headed by the
node's display name, listing every input and output under the node's own names, in the node's order, with the
input's type, whether it is optional, and the default and range the widget really has.

The editor fetches ``/extensions/<pack folder>/docs/<node id>/<locale>.md``, then ``.../docs/<node id>.md`` (read in
comfyui-frontend-package 1.27.10's ``NodeHelpService``); test_server_workflows checks the server answers there.

A page lists an input or output as one bullet: ``- **name** (TYPE, optional, default `value`, range `min` to `max`,
step `step`): what it means``, each fact after TYPE present only where it applies.
"""

from __future__ import annotations

import json
import re

import pytest

from comfy_host import REPO_ROOT

DOCS = REPO_ROOT / "web" / "docs"
ITEM = re.compile(r"^- \*\*(?P<name>[^*]+)\*\* \((?P<facts>[^)]*)\)")


def _section(page: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", page, re.M | re.S)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def _items(section: str) -> list[tuple[str, str]]:
    """(name, facts) of the section's ``- **name** (facts)`` bullets, in order."""
    return [(m["name"], m["facts"]) for m in map(ITEM.match, section.splitlines()) if m]


def _number(written: str, io_type: str):
    # int for INT: a seed's 2**64 - 1 is not a float
    return int(written) if io_type == "INT" else float(written)


def _same_value(written: str, value, io_type: str) -> bool:
    if io_type == "BOOLEAN":
        return written == str(value).lower()
    if io_type in ("INT", "FLOAT"):
        return _number(written, io_type) == value
    return written == value


def test_every_registered_node_has_a_page_and_every_page_a_node(schemas):
    assert len(schemas) == 10
    pages = {path.stem for path in DOCS.glob("*.md")}
    assert sorted(set(schemas) - pages) == [], "nodes without a help page"
    assert sorted(pages - set(schemas)) == [], "help pages of no registered node"
    translations = {path.name: sorted(page.name for page in path.iterdir()) for path in DOCS.iterdir() if path.is_dir()}
    assert translations == {node_id: ["zh.md"] for node_id in schemas}, "one Chinese page per node, nothing else"


@pytest.mark.parametrize("node_id", ["VideoUnlearnPairEncoder", "VideoUnlearnCollectActivations",
                                     "VideoUnlearnRefusalVector", "VideoUnlearnApply", "VideoUnlearnCheck",
                                     "VideoUnlearnCombineVectors", "VideoUnlearnSaveRefusalVector",
                                     "VideoUnlearnLoadRefusalVector", "VideoUnlearnExportLoRA", "VideoUnlearnAudit"])
def test_page_lists_the_inputs_and_outputs_the_node_has(schemas, node_id):
    schema, info = schemas[node_id]
    path = DOCS / f"{node_id}.md"
    assert path.is_file(), f"{node_id} has no help page at {path.relative_to(REPO_ROOT)}"
    page = path.read_text(encoding="utf-8")
    assert page.splitlines()[0] == f"# {schema.display_name}"

    inputs = _items(_section(page, "Inputs"))
    assert [name for name, _ in inputs] == [i.id for i in schema.inputs], "inputs named as on the node, in its order"
    for spec, (name, facts) in zip(schema.inputs, inputs):
        assert facts.split(",")[0] == spec.get_io_type(), f"{name}: type"
        assert ("optional" in facts.split(", ")) == bool(spec.optional), f"{name}: optional"
        default = re.search(r"\bdefault `([^`]*)`", facts)
        # a long text's default and an empty one are described in words
        shown_default = getattr(spec, "default", None) not in (None, "") and not getattr(spec, "multiline", False)
        assert bool(default) == shown_default, f"{name}: a widget's default is given"
        if default:
            assert _same_value(default[1], spec.default, spec.get_io_type()), f"{name}: default {default[1]}"
        bounds = re.search(r"\brange `([^`]*)` to `([^`]*)`", facts)
        assert bool(bounds) == (getattr(spec, "min", None) is not None), f"{name}: a number's range is given"
        if bounds:
            kind = spec.get_io_type()
            assert (_number(bounds[1], kind), _number(bounds[2], kind)) == (spec.min, spec.max), f"{name}: range"
        step = re.search(r"\bstep `([^`]*)`", facts)
        if step:
            assert _number(step[1], spec.get_io_type()) == spec.step, f"{name}: step"

    outputs = _items(_section(page, "Outputs"))
    assert [name for name, _ in outputs] == info["output_name"], "outputs named as on the node, in its order"
    assert [facts.split(",")[0] for _, facts in outputs] == info["output"], "output types"

    for heading in ("Typical chain", "Common mistakes"):
        _section(page, heading)
    mistakes = [line for line in _section(page, "Common mistakes").splitlines() if line.startswith("- ")]
    assert 2 <= len(mistakes) <= 4, "the two to four mistakes users hit"
    assert max(map(len, page.splitlines())) <= 120


# The Chinese pages (web/docs/<node id>/zh.md, which the editor shows when its language is Chinese) are checked
# against the English page and locales/zh/nodeDefs.json: the same sections, each input and output one bullet under
# the node's Chinese label, its English name (which error messages and the English pages use) and the English facts,
# and every figure and backticked literal of the English page kept.
ZH_ITEM = re.compile(r"^- \*\*(?P<label>[^*]+)\*\* \(`(?P<key>[^`]+)`, (?P<facts>[^)]*)\)")
ZH_FACT_WORDS = {"可选": "optional", "默认": "default", "范围": "range", "到": "to", "步长": "step"}
ZH_HEADINGS = {"Inputs": "输入", "Outputs": "输出", "Typical chain": "典型连接", "Common mistakes": "常见错误"}
CODE_SPAN = re.compile(r"`[^`\n]+`")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
BLOCK_START = re.compile(r"^(#|\s*- |\s*\d+\. |\||>|```)")


def _zh_items(section: str) -> list[tuple[str, str, str]]:
    """(label, key, facts in English words) of the section's Chinese bullets, in order."""
    items = []
    for match in map(ZH_ITEM.match, section.splitlines()):
        if match:
            facts = re.sub("|".join(ZH_FACT_WORDS), lambda word: ZH_FACT_WORDS[word[0]], match["facts"])
            items.append((match["label"], match["key"], facts))
    return items


@pytest.mark.parametrize("node_id", ["VideoUnlearnPairEncoder", "VideoUnlearnCollectActivations",
                                     "VideoUnlearnRefusalVector", "VideoUnlearnApply", "VideoUnlearnCheck",
                                     "VideoUnlearnCombineVectors", "VideoUnlearnSaveRefusalVector",
                                     "VideoUnlearnLoadRefusalVector", "VideoUnlearnExportLoRA", "VideoUnlearnAudit"])
def test_zh_page_follows_the_english_page_under_the_chinese_labels(node_id):
    labels = json.loads((REPO_ROOT / "locales" / "zh" / "nodeDefs.json").read_text(encoding="utf-8"))[node_id]
    english = (DOCS / f"{node_id}.md").read_text(encoding="utf-8")
    path = DOCS / node_id / "zh.md"
    assert path.is_file(), f"{node_id} has no Chinese help page at {path.relative_to(REPO_ROOT)}"
    page = path.read_text(encoding="utf-8")
    assert page.splitlines()[0] == f"# {labels['display_name']}"

    headings = [line[3:] for line in english.splitlines() if line.startswith("## ")]
    zh_headings = [line[3:] for line in page.splitlines() if line.startswith("## ")]
    assert len(zh_headings) == len(headings), "the English page's sections"
    for heading, zh_heading in zip(headings, zh_headings):
        assert zh_heading == ZH_HEADINGS.get(heading, zh_heading), f"{heading!r} is '## {ZH_HEADINGS.get(heading)}'"

    for heading, side in (("Inputs", "inputs"), ("Outputs", "outputs")):
        items = _zh_items(_section(page, ZH_HEADINGS[heading]))
        expected = _items(_section(english, heading))
        keys = list(labels[side])
        assert [key for _, key, _ in items] == [name for name, _ in expected], f"{heading}: English names, in order"
        assert [label for label, _, _ in items] == [labels[side][key]["name"] for key in keys], \
            f"{heading}: the labels of locales/zh/nodeDefs.json"
        assert [facts for _, _, facts in items] == [facts for _, facts in expected], f"{heading}: the English facts"

    mistakes = [line for line in _section(page, "常见错误").splitlines() if line.startswith("- ")]
    assert len(mistakes) == len([line for line in _section(english, "Common mistakes").splitlines()
                                 if line.startswith("- ")])
    lost = sorted(set(CODE_SPAN.findall(english)) - set(CODE_SPAN.findall(page)))
    assert not lost, f"backticked literals of the English page missing: {lost}"
    lost = sorted(set(NUMBER.findall(english)) - set(NUMBER.findall(page)))
    assert not lost, f"figures of the English page missing: {lost}"

    # A line break between Chinese characters shows as a stray space in the editor: no paragraph is wrapped.
    lines = page.splitlines()
    in_code = False
    for previous, line in zip(lines, lines[1:]):
        in_code ^= line.startswith("```")
        assert in_code or not (previous.strip() and line.strip() and not BLOCK_START.match(line)), \
            f"a wrapped paragraph: {line[:40]!r}"

