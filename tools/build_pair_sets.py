"""Build the larger shipped pair sets for broad concepts from the real benchmark data (../shared/data).

    python tools/build_pair_sets.py [--data ../shared/data]

Writes ``workflows/pairs/benchmarks/<concept>_estimate.txt`` (Pair Encoder format, ``unsafe | safe``) for nudity
and violence: the Six-CD dual-version and SteeringFields pairs of the ``estimate`` split (``organism.scenes``), the
only pairs the project's benchmarks estimate edits from; the organism never trains on them and no benchmark evaluates
on them. Copies the licences of the sources beside them (``LICENSES/``) and a ``NOTICE.md`` naming the repositories,
commits and licences. The files hold explicit text: they are for removing those concepts, never for docs or demos.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from organism.scenes import CONCEPTS, DATA, load_pools  # noqa: E402

OUT = ROOT / "workflows" / "pairs" / "benchmarks"
LICENCES = ("Six-CD.MIT.txt", "SteeringFields.MIT.txt")
NOTICE = """# Pair sets from public benchmarks

**Content warning:** these files hold explicit sexual and violent text. They exist to *remove* those concepts with
this pack (paste a file into Pair Encoder's `pairs`); do not use them to generate such content or show them in demos.

`nudity_estimate.txt` and `violence_estimate.txt` are row selections of prompt pairs from two MIT-licensed
benchmarks, prompt text unchanged, written by `tools/build_pair_sets.py` from the project's copy of the data:

| source | repository | commit | licence |
|---|---|---|---|
| Six-CD "Dual-Version" nudity / harm pairs | https://github.com/Artanisax/Six-CD | `a30fe9e87c242e6eb57b1e9058aa7be364dc07f5` | MIT, Copyright (c) 2024 Jie Ren, Kangrui Chen (`LICENSES/Six-CD.MIT.txt`) |
| SteeringFields naked / violence pairs | https://github.com/simonefacchiano/SteeringFields | `a3206db253908ab242cec9152d3fb41ffaed2555` | MIT, Copyright (c) 2024 Vladimir Kulikov (`LICENSES/SteeringFields.MIT.txt`) |

Which pairs: the `estimate` part of the organism's split (`organism/scenes.py`: a salted sha256 of the unsafe side),
the only pairs the project's benchmarks estimate edits from; the benchmarks' evaluation prompts are other prompts.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the prompt data folder (pairs/, prompts/, LICENSES/)")
    args = parser.parse_args()
    pools = load_pools(args.data)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "LICENSES").mkdir(exist_ok=True)
    for name in LICENCES:
        shutil.copyfile(args.data / "LICENSES" / name, OUT / "LICENSES" / name)
    (OUT / "NOTICE.md").write_text(NOTICE, encoding="utf-8")
    for concept in CONCEPTS:
        # A '|' inside a prompt would split the line in the wrong place: such pairs are left out.
        pairs = [(u, s) for u, s in pools.pairs[concept]["estimate"] if "|" not in u + s]
        lines = [f"# {concept}: {len(pairs)} prompt pairs (with the concept | minimally edited without it) from Six-CD",
                 "# and SteeringFields (MIT; see NOTICE.md and LICENSES/ beside this file). Content warning: explicit",
                 "# text, for removing the concept only. Built by tools/build_pair_sets.py; do not edit by hand.",
                 *(f"{u} | {s}" for u, s in pairs)]
        (OUT / f"{concept}_estimate.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
