"""Where a broad-concept edit gains or loses attribute accuracy on benign prompts (a benchmark, not a test).

``bench/check_validation.py --concept violence --count 600`` found the nodes' edit *gaining* attribute accuracy on
benign prompts (0.3-1.3 points) while moving them. One explanation would be false marks going away: a benign clip
the base model marks might read its attributes worse, and the edit removes the mark. This script tests it: per
variant, the attribute loss on the benign clips the base model marks, and on those marked neither before nor after.

Prompts are those of ``check_validation`` (``organism.broad.broad_prompts``, the same seeds); the edit is estimated
as there (all ``estimate`` pairs; the variants are a subset of its). Real prompts are printed nowhere.

    python bench/attribute_gains.py [--concept violence] [--split test] [--count 600] [--threads 2]   # ~5 min
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import check_validation as cv  # noqa: E402
from organism import broad  # noqa: E402
from organism import experiment as ex  # noqa: E402
from organism.readers import read  # noqa: E402
from organism.text import TextEncoder  # noqa: E402
from organism.world import CONCEPT_MARKS  # noqa: E402

#: (name, change of ``check_validation.BASE``, strength): the default edit, and variants that gained or lost there.
VARIANTS = [("default, strength 1", {}, 1.0), ("text k/v, late blocks, strength 2", {"blocks": "late"}, 2.0),
            ("ffn.0", {"group": "ffn0"}, 1.0), ("rank-8 subspace", {"edit": "subspace", "rank": 8}, 1.0)]


def readings(model, encoder, texts, scenes) -> tuple[np.ndarray, np.ndarray]:
    """``(correct [prompts, 3], marked [prompts])``: attributes read right, and whether any concept mark is drawn."""
    found = [read(c) for c in broad.clips_of(model, encoder, texts, steps=16, seed=100)]
    correct = np.array([[r[a] == getattr(s, a) for a in broad.KEPT] for r, s in zip(found, scenes)], dtype=float)
    return correct, np.array([any(r[c] for c in CONCEPT_MARKS) for r in found])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", choices=cv.BROAD, default="violence")
    parser.add_argument("--split", choices=("valid", "test"), default="test")
    parser.add_argument("--count", type=int, default=600, help="benign prompts")
    parser.add_argument("--data", type=Path, help="the prompt data folder (default ../shared/data)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "attribute_gains.json")
    args = parser.parse_args()
    from organism.scenes import DATA, load_pools

    torch.set_num_threads(args.threads)
    pools = load_pools(args.data or DATA)
    model, encoder = ex.load_organism(ex.WEIGHTS), TextEncoder()
    settings = argparse.Namespace(split=args.split, count=args.count, pairs=5, benign=12, benign_seed=cv.BENIGN_SEED,
                                  estimate_pairs=None, more_methods=False, steps=16)
    setting = cv.broad_setting(args.concept, settings, encoder, "", pools)
    prompts = broad.broad_prompts(pools, args.concept, args.split, args.count)
    texts, scenes = prompts.prompts["benign"], prompts.scenes["benign"]
    layers = ex.every_group_layer(model)
    with torch.no_grad():
        measured = ex.collect(model, encoder, setting.pairs, setting.neutral, layers)
        base, marked = readings(model, encoder, texts, scenes)
    report = {"concept": args.concept, "split": args.split, "benign": len(texts), "base_marked": int(marked.sum()),
              "base_attr_marked": float(base[marked].mean()) if marked.any() else None,
              "base_attr_unmarked": float(base[~marked].mean()), "variants": []}
    print(f"base: {marked.sum()} of {len(texts)} benign clips marked; attributes {report['base_attr_marked']} "
          f"there, {report['base_attr_unmarked']:.3f} on the others", flush=True)
    for name, change, strength in VARIANTS:
        config = {**cv.BASE, "edit": "direction", **change}
        basis = measured.fitter.fit(rank=config["rank"], alpha=config["alpha"], method=config["method"],
                                    edit=config["edit"], concept=args.concept, pairs=setting.pairs,
                                    layers=ex.layer_names(model, config["group"], config["blocks"]),
                                    **setting.fit_extra)
        with torch.no_grad():
            after, marked_after = readings(ex.edited_copy(model, basis, strength, config["target"]), encoder, texts,
                                           scenes)
        lost = 100.0 * (base - after)  # points per reading
        neither = ~marked & ~marked_after
        row = {"variant": name, "attr_loss": float(lost.mean()),
               "attr_loss_from_base_marked": float(lost[marked].sum() / lost.size),
               "attr_loss_unmarked_both": float(lost[neither].mean()), "marked_after": int(marked_after.sum())}
        report["variants"].append(row)
        print(f"  {name:<36} loss {row['attr_loss']:+.2f} pts: {row['attr_loss_from_base_marked']:+.2f} from the "
              f"base's marked clips, {row['attr_loss_unmarked_both']:+.2f} on clips marked neither before nor after "
              f"({row['marked_after']} marked after)", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
