"""Turning a UI-format workflow (what the editor saves) into the API format that ``POST /prompt`` takes.

Widget values are matched to input names through the live server's ``/object_info``, as the
frontend does: inputs in declaration order (required, then optional), skipping linked sockets, with
the extra ``control_after_generate`` value after seed widgets. Notes and muted nodes are dropped;
links through reroutes and bypassed nodes are followed to the node that really produces the value;
a widget converted to a socket and fed by a ``PrimitiveNode`` takes the primitive's value.
"""

from __future__ import annotations

NOTE_NODES = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MUTED, BYPASSED = 2, 4


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _source(workflow_nodes: dict, links: dict, link_id: int, kind: str):
    """``("link", [node_id, slot])`` or ``("value", v)`` for what really feeds ``link_id``."""
    seen = set()
    while True:
        if link_id in seen:
            raise ValueError(f"link {link_id} is part of a reroute/bypass cycle")
        seen.add(link_id)
        _, node_id, slot, *_ = links[link_id]
        node = workflow_nodes[node_id]
        if node["type"] == "PrimitiveNode":
            return "value", node["widgets_values"][0]
        if node["type"] == "Reroute" or node.get("mode", 0) == BYPASSED:
            # A bypassed node passes on its first input of the output's type, as the frontend does.
            wanted = "*" if node["type"] == "Reroute" else node["outputs"][slot]["type"]
            feeding = [entry["link"] for entry in node.get("inputs", [])
                       if entry.get("link") is not None and (wanted == "*" or entry["type"] == wanted)]
            if not feeding:
                raise ValueError(f"node {node_id} ({node['type']}) passes nothing on to {kind}: it has no matching input")
            link_id = feeding[0]
            continue
        if node.get("mode", 0) == MUTED:
            raise ValueError(f"node {node_id} ({node['type']}) is muted but feeds {kind}: unmute or bypass it")
        return "link", [str(node_id), slot]


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in workflow["links"]}
    workflow_nodes = {node["id"]: node for node in workflow["nodes"]}
    api = {}
    for node in workflow["nodes"]:
        if (node["type"] in NOTE_NODES or node["type"] in ("Reroute", "PrimitiveNode")
                or node.get("mode", 0) in (MUTED, BYPASSED)):
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
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if name in linked:
                    kind, value = _source(workflow_nodes, links, linked[name], f"{node['type']}.{name}")
                    inputs[name] = value
                    if widget and values:  # a widget turned into a socket keeps its value slot(s)
                        values.pop(0)
                        if options.get("control_after_generate") and values:
                            values.pop(0)
                    continue
                if not widget or not values:
                    continue
                inputs[name] = values.pop(0)
                if options.get("control_after_generate") and values:
                    values.pop(0)
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def find_nodes(api: dict, class_type: str) -> list[dict]:
    return [node for node in api.values() if node["class_type"] == class_type]
