"""Thumbnails of the shipped workflows for ComfyUI's Templates browser, cut from the browser test's screenshots.

The editor asks ``/api/workflow_templates/<pack>/<name>.jpg`` for every template card and shows a grey placeholder
(and a 404 in the console) where there is none. The browser test saves each workflow as it opens
(``out/browser/0N_open_<name>.png``, 1700 x 1000, on the editor ComfyUI pins; the newer editor's are in
``out/browser/newer-frontend/``); this cuts the canvas out of it (no side bar, top bar or minimap) and writes
``workflows/<name>.jpg``:

    python3 dev.py test tests/browser -k group_titles && python3 tools/template_thumbnails.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "out" / "browser"
#: The canvas in the 1700 x 1000 screenshot: right of the side bar, below the top bar, above the minimap.
CANVAS = (80, 95, 1700, 730)
WIDTH = 640


def main() -> int:
    workflows = sorted((ROOT / "workflows").glob("*.json"))
    for path in workflows:
        shots = sorted(SHOTS.glob(f"*_open_{path.stem}.png"))
        if not shots:
            raise ValueError(f"no screenshot of {path.name} in {SHOTS}; run the browser test first "
                             "(python3 dev.py test tests/browser -k group_titles)")
        with Image.open(shots[-1]) as shot:
            if shot.size != (1700, 1000):
                raise ValueError(f"{shots[-1].name} is {shot.size}, not the browser test's 1700 x 1000")
            canvas = shot.convert("RGB").crop(CANVAS)
        height = round(canvas.height * WIDTH / canvas.width)
        canvas.resize((WIDTH, height), Image.Resampling.LANCZOS).save(path.with_suffix(".jpg"), quality=82)
    return 0


if __name__ == "__main__":
    sys.exit(main())
