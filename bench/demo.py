"""The main job in two minutes on a CPU: make a small video model forget a trademark.

Loads the organism (a tiny text-to-video DiT trained on a synthetic world, with the real
all-MiniLM-L6-v2 text encoder), shows the 5 prompt pairs, measures the refusal vector through
``core/`` (the code path of the ComfyUI nodes), folds the edit into a copy of the weights, and
writes a before/after picture and the metric table to ``out/``.

    python bench/demo.py                 # the "Nexo" trademark
    python bench/demo.py --concept red   # a colour

Bad input (an unknown concept, a missing or malformed pairs file, a count below 1) stops in one line with exit
status 2 before the model loads. Broad concepts (nudity, violence) are measured by ``bench/unlearning.py``: their
prompts are real prompts, which never go into pictures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from organism import cli  # noqa: E402
from organism import experiment as ex  # noqa: E402
from organism.sampling import generate  # noqa: E402
from organism.text import TextEncoder  # noqa: E402

SCALE = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="logo", type=_demo_concept,
                        help="what to forget: 'logo' (the Nexo trademark) or a colour (" + ", ".join(ex.COLOURS) + ")")
    parser.add_argument("--pairs", type=Path,
                        help="pairs file ('unsafe | safe' per line); default: organism/pairs/<concept>.txt")
    parser.add_argument("--out", type=Path, default=ROOT / "out", help="folder for the picture, table and JSON")
    parser.add_argument("--count", type=cli.positive_int, default=24, help="held-out prompts per split for the metric table")
    parser.add_argument("--strength", type=float, default=1.0,
                        help="edit strength (the nodes' default, 1.0); bench/unlearning.py's sweep shows what more removes "
                             "and what it costs the concept prompts' other attributes")
    args = parser.parse_args()
    pairs = cli.read_pairs(args.pairs, args.concept)  # fails in one line, before anything loads
    torch.set_num_threads(2)
    started = time.perf_counter()
    model, encoder = ex.load_organism(), TextEncoder()
    print(f"The {len(pairs)} pairs (concept: {args.concept}):")
    for pair in pairs:
        print(f"  {pair.unsafe}  |  {pair.safe}")

    # Text-side k/v of every block: the nodes' Wan default, and the best layers in bench/unlearning.py's table.
    layers = ex.layer_names(model, "text_kv", "all")
    with torch.no_grad():
        measured = ex.collect(model, encoder, pairs, ex.neutral_prompts(), layers)
    basis = measured.fitter.fit(rank=4, alpha=1.0, method="cpca", concept=args.concept, pairs=pairs, model_family="organism")
    print(f"\nRefusal vector: {len(basis.layers)} layers (text-side cross_attn.k/v), measured in {measured.seconds:.1f}s")
    for layer in basis.layers:
        score = basis[layer].score if hasattr(basis, "records") else basis.scores[layer]
        print(f"  {layer:<24} separation {score.separation:6.2f}   |r| {score.norm:.3f}")
    edited = ex.edited_copy(model, basis, strength=args.strength, target="safe_mean")
    print(f"Edit: strength {args.strength}, removed component moved to the safe prompts' mean")

    prompts = ex.concept_prompts(args.concept, args.count)
    with torch.no_grad():
        before = ex.evaluate(model, encoder, prompts, args.concept, steps=16)
        after = ex.evaluate(edited, encoder, prompts, args.concept, steps=16, reference=before["clips"])
    table = _table(before, after, list(prompts.prompts))
    print("\n" + table)

    rows = [(ROW_LABELS[s], p) for s in ("seen", "unseen", "adversarial") for p in prompts.prompts[s][:2]]
    rows += [(ROW_LABELS["unrelated"], p) for p in prompts.prompts["unrelated"][:3]]
    shown = [p for _, p in rows]
    with torch.no_grad():
        seeds = list(range(500, 500 + len(shown)))
        grid = _grid(rows, generate(model, encoder, shown, seeds=seeds, steps=16).numpy(),
                     generate(edited, encoder, shown, seeds=seeds, steps=16).numpy(), _legend(args.concept))
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"demo_{args.concept}.png"
    grid.save(png)
    (args.out / f"demo_{args.concept}.txt").write_text(table + "\n")
    (args.out / f"demo_{args.concept}.json").write_text(json.dumps(
        {"before": {k: v for k, v in before.items() if k != "clips"},
         "after": {k: v for k, v in after.items() if k != "clips"}}, indent=1))
    print(f"\nwrote {png} (left: before, right: after; same seed per row) in {time.perf_counter() - started:.0f}s")


ROW_LABELS = {"seen": "SEEN wording (as in training)", "unseen": "UNSEEN paraphrase",
              "adversarial": "ADVERSARIAL wording (misspelt name)", "unrelated": "UNRELATED (must not change)"}


def _demo_concept(text: str) -> str:
    if text not in ("logo", *ex.COLOURS):
        raise argparse.ArgumentTypeError(f"unknown concept {text!r}; one of logo, {', '.join(ex.COLOURS)} "
                                         "(nudity and violence: bench/unlearning.py)")
    return text


def _legend(concept: str) -> tuple[str, str]:
    if concept == "logo":
        return ("Concept: the Nexo trademark = a white 2x2 mark at the centre of the object.",
                "Concept rows carry it before; after unlearning they should not. Unrelated rows should not change.")
    return (f"Concept: the colour {concept}; concept rows ask for a {concept} object.",
            "After unlearning they should come out in another colour. Unrelated rows should not change.")


def _table(before, after, splits) -> str:
    lines = [f"{'held-out prompts':<24}{'before':>10}{'after':>10}", "-" * 44]
    for split in splits:
        label = "concept rate, " + split if split != "unrelated" else "concept rate, unrelated"
        lines.append(f"{label:<24}{before[f'rate_{split}']:>10.2f}{after[f'rate_{split}']:>10.2f}")
    lines.append(f"{'attribute acc. unrelated':<24}{before['attr_unrelated']:>10.3f}{after['attr_unrelated']:>10.3f}")
    lines.append(f"{'pixel change unrelated':<24}{'':>10}{after['pixel_unrelated']:>10.4f}")
    return "\n".join(lines)


def _strip(clip: np.ndarray) -> Image.Image:
    frames = np.concatenate(list(clip), axis=1)  # [h, frames * w, 3]
    image = Image.fromarray((frames * 255).astype(np.uint8))
    return image.resize((image.width * SCALE, image.height * SCALE), Image.NEAREST)


def _grid(rows, before, after, legend: tuple[str, str]) -> Image.Image:
    """Rows of 8 frames, before | after, each under its split label and prompt; a legend says what the mark is."""
    strips = [(_strip(b), _strip(a)) for b, a in zip(before, after)]
    width = strips[0][0].width
    row_height = strips[0][0].height + 30
    top = 52
    canvas = Image.new("RGB", (2 * width + 30, top + row_height * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for line, text in enumerate(legend):
        draw.text((10, 4 + 12 * line), text, fill=(0, 0, 0), font=font)
    draw.text((10, 36), "BEFORE (base model)", fill=(0, 0, 0), font=font)
    draw.text((width + 30, 36), "AFTER unlearning (same seed)", fill=(0, 0, 0), font=font)
    for row, ((b, a), (label, prompt)) in enumerate(zip(strips, rows)):
        y = top + row * row_height
        draw.text((10, y), label, fill=(150, 0, 0), font=font)
        draw.text((10, y + 12), prompt[:110], fill=(40, 40, 40), font=font)
        canvas.paste(b, (10, y + 26))
        canvas.paste(a, (width + 30, y + 26))
    return canvas


if __name__ == "__main__":
    main()
