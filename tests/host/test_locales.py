"""The pack's Chinese interface (``locales/zh/``), against the nodes' schemas as the pack registers them.

ComfyUI's server merges every custom-node folder's ``locales/<language>/nodeDefs.json`` and ``main.json`` into its
``/i18n`` answer, and the editor (1.27.10 and newer) shows them when its language setting (``Comfy.Locale``) is that
language: node titles, input and output labels, tooltips, descriptions, the category. A label is only shown: the
workflow and the prompt keep the English input names (tests/browser/test_editor.py checks both in the editor).

Checked here: every node, input and output has its entry and none is left for a node, input or output that does not
exist; the text is Chinese (a label may keep a technical name as it is, e.g. ``cfg``); no two inputs, or outputs, of
a node share a label; every figure, value in quotes and ``snake_case`` name of the English text is in the translation,
so that a figure or an option the user must type is never lost or changed in translation; and the English each
translated text and help page was made from (``locales/zh/translated_from.json``) is the current English.
"""

from __future__ import annotations

import json
import re

import pytest

from comfy_host import REPO_ROOT
from script_module import load_script

LOCALES = REPO_ROOT / "locales"
CJK = re.compile(r"[\u4e00-\u9fff]")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
QUOTED_VALUE = re.compile(r"'([^' ]+|[\d.,; ]+)'")  # a value to type ('digests', '0.1, 0.5, 0.9'), not a phrase
SNAKE = re.compile(r"\b\w+_\w+\b")


def node_defs(language: str) -> dict:
    return json.loads((LOCALES / language / "nodeDefs.json").read_text(encoding="utf-8"))


def _english(schema, info) -> dict:
    """The English texts of one node, in nodeDefs.json's shape (outputs keyed by their index)."""
    return {
        "display_name": schema.display_name,
        "description": schema.description,
        "inputs": {spec.id: {"name": spec.id, "tooltip": spec.tooltip} for spec in schema.inputs},
        "outputs": {str(index): {"name": name, "tooltip": tooltip}
                    for index, (name, tooltip) in enumerate(zip(info["output_name"], info["output_tooltips"]))},
    }


def _kept_literals(english: str, translated: str, where: str):
    for kind, pattern in (("figure", NUMBER), ("value", QUOTED_VALUE), ("name", SNAKE)):
        lost = sorted(set(pattern.findall(english)) - set(pattern.findall(translated)))
        assert not lost, f"{where}: the translation lost the {kind}(s) {lost} of {english!r}"


def test_the_shipped_languages():
    assert sorted(path.name for path in LOCALES.iterdir()) == ["zh"]
    assert sorted(path.name for path in (LOCALES / "zh").iterdir()) == ["main.json", "nodeDefs.json",
                                                                       "translated_from.json"]


def _stale_translations(recorded: dict, current: dict) -> list[str]:
    """What changed in English since the translation recorded its sources: one line per text, old -> new."""
    return [f"{key}: {recorded.get(key)!r} -> {current.get(key)!r}"
            for key in sorted(set(recorded) | set(current)) if recorded.get(key) != current.get(key)]


def test_every_translation_follows_the_current_english(schemas):
    """An English tooltip, description, output name or help page changed without its translation: the test names each
    change, so the translator sees what to bring over (tools/translation_sources.py records the new sources after)."""
    tool = load_script(REPO_ROOT / "tools" / "translation_sources.py", "translation_sources")
    current = tool.english_sources({node_id: info for node_id, (_, info) in schemas.items()})
    recorded = json.loads((LOCALES / "zh" / "translated_from.json").read_text(encoding="utf-8"))
    stale = _stale_translations(recorded, current)
    assert not stale, ("English changed since locales/zh/ and web/docs/*/zh.md were translated; update them, then "
                       "run `.venv/bin/python tools/translation_sources.py zh`:\n" + "\n".join(stale))


def test_a_changed_english_text_is_named_with_both_versions():
    stale = _stale_translations({"A.description": "old", "web/docs/A.md": "sha256:1"},
                                {"A.description": "new", "web/docs/A.md": "sha256:1", "B.display_name": "B"})
    assert stale == ["A.description: 'old' -> 'new'", "B.display_name: None -> 'B'"]


def test_every_node_input_and_output_has_its_chinese_text_and_nothing_else(schemas):
    translated = node_defs("zh")
    assert sorted(translated) == sorted(schemas), "one entry per registered node"
    for node_id, (schema, info) in schemas.items():
        english, chinese = _english(schema, info), translated[node_id]
        assert sorted(chinese) == ["description", "display_name", "inputs", "outputs"], node_id
        assert list(chinese["inputs"]) == list(english["inputs"]), f"{node_id}: inputs, in the node's order"
        assert list(chinese["outputs"]) == list(english["outputs"]), f"{node_id}: outputs, in the node's order"
        for field in ("display_name", "description"):
            assert CJK.search(chinese[field]), f"{node_id}.{field} is not translated: {chinese[field]!r}"
            _kept_literals(english[field], chinese[field], f"{node_id}.{field}")
        for side in ("inputs", "outputs"):
            labels = [entry["name"] for entry in chinese[side].values()]
            assert len(set(labels)) == len(labels), f"{node_id}: two {side} share a label: {labels}"
            for key, entry in chinese[side].items():
                where = f"{node_id}.{side}.{key}"
                source = english[side][key]
                assert sorted(entry) == ["name", "tooltip"], where
                assert CJK.search(entry["name"]) or entry["name"] == source["name"], f"{where}: label {entry['name']!r}"
                if source["tooltip"] is None:
                    assert entry["tooltip"] is None, f"{where}: a tooltip the English node does not have"
                    continue
                assert CJK.search(entry["tooltip"]), f"{where}: tooltip not translated: {entry['tooltip']!r}"
                _kept_literals(source["tooltip"], entry["tooltip"], where)


def test_the_category_is_translated(schemas):
    categories = json.loads((LOCALES / "zh" / "main.json").read_text(encoding="utf-8"))["nodeCategories"]
    used = {part for schema, _ in schemas.values() for part in schema.category.split("/")}
    assert sorted(categories) == sorted(used)
    assert all(CJK.search(text) for text in categories.values())


@pytest.mark.parametrize("english, translated, lost", [
    ("3-5 % of the direction", "方向的 3-4 %", "['5']"),
    ("'digests' stores a SHA-256", "保存 SHA-256", "['digests']"),
    ("target safe_mean's bias", "目标的偏置", "['safe_mean']"),
])
def test_a_lost_figure_value_or_name_is_named(english, translated, lost):
    with pytest.raises(AssertionError, match=re.escape(lost)):
        _kept_literals(english, translated, "x")
