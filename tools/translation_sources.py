"""Records the English each translation in ``locales/<language>/`` was made from, so that a test fails when the
English changes and the translation does not (tests/host/test_locales.py).

``locales/<language>/translated_from.json`` maps every translated text to its English source: a node's display name,
description, output names and every tooltip as text, and each help page ``web/docs/<node id>.md`` as the SHA-256 of
its bytes (its translation is ``web/docs/<node id>/<language>.md``). ComfyUI's server reads only ``main.json``,
``nodeDefs.json``, ``commands.json`` and ``settings.json`` from a locale folder, so this file is never served.

After bringing a translation up to date with the English, record it (with the project's environment and a ComfyUI
that ``tools/comfyui_host.py`` finds):

    .venv/bin/python tools/translation_sources.py zh
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACK_MODULE = "comfyui_video_unlearning"


def english_sources(node_infos: dict[str, dict], root: Path = ROOT) -> dict[str, str]:
    """Flat ``{"<node id>.<field>": English text, "web/docs/<node id>.md": "sha256:<hex>"}`` of the nodes' V1 infos
    (as ``/object_info`` lists them): what a translation of these nodes follows."""
    sources = {}
    for node_id, info in sorted(node_infos.items()):
        sources[f"{node_id}.display_name"] = info["display_name"]
        sources[f"{node_id}.description"] = info["description"]
        for section in ("required", "optional"):
            for key, spec in info["input"].get(section, {}).items():
                tooltip = spec[1].get("tooltip") if len(spec) > 1 else None
                if tooltip is not None:
                    sources[f"{node_id}.inputs.{key}.tooltip"] = tooltip
        tooltips = info.get("output_tooltips") or [None] * len(info["output_name"])
        for index, (name, tooltip) in enumerate(zip(info["output_name"], tooltips)):
            sources[f"{node_id}.outputs.{index}.name"] = name
            if tooltip is not None:
                sources[f"{node_id}.outputs.{index}.tooltip"] = tooltip
        page = root / "web" / "docs" / f"{node_id}.md"
        sources[f"web/docs/{node_id}.md"] = "sha256:" + hashlib.sha256(page.read_bytes()).hexdigest()
    return sources


def _registered_node_infos() -> dict[str, dict]:
    """node id -> V1 info of every node the pack registers, through its ``comfy_entrypoint`` on a CPU ComfyUI."""
    sys.path.insert(0, str(ROOT / "tools"))
    from comfyui_host import find_comfyui

    comfyui = find_comfyui()
    if comfyui is None:
        raise SystemExit("no ComfyUI found: set COMFYUI_PATH (tools/comfyui_host.py says where it looks)")
    sys.path.insert(0, str(comfyui))
    from comfy.cli_args import args

    args.cpu = True
    spec = importlib.util.spec_from_file_location(PACK_MODULE, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = pack
    spec.loader.exec_module(pack)
    # The routes need ComfyUI's running server; listing the nodes does not.
    routes = types.ModuleType(f"{PACK_MODULE}.nodes.routes")
    routes.register_routes = lambda: None
    sys.modules[routes.__name__] = routes
    nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    return {node.GET_SCHEMA().node_id: node.GET_NODE_INFO_V1() for node in nodes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("language", help="a folder of locales/, e.g. zh")
    language = parser.parse_args(argv).language
    folder = ROOT / "locales" / language
    if not (folder / "nodeDefs.json").is_file():
        raise SystemExit(f"no translation at {folder.relative_to(ROOT)}/nodeDefs.json: write it first")
    sources = english_sources(_registered_node_infos())
    path = folder / "translated_from.json"
    path.write_text(json.dumps(sources, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"recorded {len(sources)} English sources in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
