"""Turning a UI-format workflow (what the editor saves) into the API format that ``POST /prompt`` takes.

Widget values are matched to input names through the live server's ``/object_info``, as the
frontend does: inputs in declaration order (required, then optional), skipping linked sockets, with
the extra ``control_after_generate`` value after seed widgets. Notes and muted/bypassed nodes are dropped.
"""

from __future__ import annotations

VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in workflow["links"]}
    api = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) in (2, 4):
            continue
        if node["type"] not in object_info:
            raise KeyError(f"node type {node['type']!r} (node {node['id']}) is not registered on the server")
        linked = {entry["name"]: entry["link"] for entry in node.get("inputs", []) if entry.get("link") is not None}
        values = list(node.get("widgets_values", []))
        inputs = {}
        spec_inputs = object_info[node["type"]]["input"]
        for section in ("required", "optional"):
            for name, spec in spec_inputs.get(section, {}).items():
                widget = _is_widget(spec)
                if name in linked:
                    link = links[linked[name]]
                    inputs[name] = [str(link[1]), link[2]]
                    if widget and values:  # a widget turned into a socket keeps its value slot
                        values.pop(0)
                    continue
                if not widget or not values:
                    continue
                inputs[name] = values.pop(0)
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if options.get("control_after_generate") and values:
                    values.pop(0)
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def find_nodes(api: dict, class_type: str) -> list[dict]:
    return [node for node in api.values() if node["class_type"] == class_type]
