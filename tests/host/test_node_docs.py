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

import asyncio
import re
import sys
import types

import pytest

from comfy_host import REPO_ROOT

DOCS = REPO_ROOT / "web" / "docs"
ITEM = re.compile(r"^- \*\*(?P<name>[^*]+)\*\* \((?P<facts>[^)]*)\)")


@pytest.fixture(scope="module")
def schemas(pack):
    """node id -> (schema, V1 info) of every node the pack registers, built through its ``comfy_entrypoint``."""
    # The routes need ComfyUI's running server (test_routes covers them): a no-op stands in, as in test_check_node.
    routes = types.ModuleType("comfyui_video_unlearning.nodes.routes")
    routes.register_routes = lambda: None
    saved = sys.modules.get(routes.__name__)
    sys.modules[routes.__name__] = routes
    try:
        nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    finally:
        if saved is None:
            sys.modules.pop(routes.__name__, None)
        else:
            sys.modules[routes.__name__] = saved
    return {node.GET_SCHEMA().node_id: (node.GET_SCHEMA(), node.GET_NODE_INFO_V1()) for node in nodes}


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
    assert len(schemas) == 9
    pages = {path.stem for path in DOCS.glob("*.md")}
    assert sorted(set(schemas) - pages) == [], "nodes without a help page"
    assert sorted(pages - set(schemas)) == [], "help pages of no registered node"
    assert not [path for path in DOCS.iterdir() if path.is_dir()], "locale folders: the pages are English only"


@pytest.mark.parametrize("node_id", ["VideoUnlearnPairEncoder", "VideoUnlearnCollectActivations",
                                     "VideoUnlearnRefusalVector", "VideoUnlearnApply", "VideoUnlearnCheck",
                                     "VideoUnlearnCombineVectors", "VideoUnlearnSaveRefusalVector",
                                     "VideoUnlearnLoadRefusalVector", "VideoUnlearnExportLoRA"])
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
