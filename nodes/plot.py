"""The per-layer score chart shown by the Low-Rank Refusal Vector node (PIL only, no plotting library).

One bar per distinct *input*: layers that read the same input (Wan's text-side ``cross_attn.k``/``.v`` of every
block read the one projected text context; ``RefusalBasis.shared_inputs``) get one bar that says so, because they
share one fit and forty equal bars say nothing. Layers with their own input (``ffn.0``, ``cross_attn.o``) get one bar each, grouped by
block, one colour per layer kind (the legend says which). The chart's labels also travel as data next to the image
(``chart_data``), so the editor can show and check them as text.

Pillow's bundled font has glyphs for ASCII and a few signs only: a concept named in Chinese, Cyrillic or with an accent
("Café") came out as boxes. The pictures draw the name only where the font has every glyph of it
(:func:`missing_glyphs`); otherwise they say where the name is shown as text, which the editor renders in any script.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..core.basis import RefusalBasis
from .adapters import ADAPTERS, layer_suffix

#: Key of the chart's data in the node's UI output (read by ``web/video_unlearning.js``).
UI_KEY = "video_unlearning_chart"
WIDTH, HEIGHT = 640, 400
TITLE_SIZE = 16
_SERIES = ((70, 130, 220), (40, 160, 140), (150, 100, 200), (120, 150, 60), (200, 90, 140), (90, 110, 130))
_SHARED = (95, 110, 135)
_BEST = (230, 120, 40)
_INK, _SOFT, _GRID, _PAPER = (25, 25, 25), (85, 85, 85), (225, 225, 225), (252, 252, 252)
# a block's key is its index, or "block" and the index (Cosmos 1.0's blocks.block3: core.basis.block_index)
_LAYER = re.compile(r"^(?P<prefix>[A-Za-z_][\w.]*?)\.(?:block)?(?P<block>\d+)\.(?P<sub>.+)$")


@dataclass(frozen=True)
class Bar:
    """One bar: one input, read by one layer or shared by several.

    Attributes:
        label: the text that identifies the bar (``block 12 · ffn.0`` or
            ``text context: blocks 0-29 cross_attn.k+v share this input``).
        layers: the layers whose input this is.
        value: |separation| (Cohen's d of the pairs along the edit direction).
        series: the layer kind (``ffn.0``), or the shared input's name.
        block: block index for a single layer, ``None`` for a shared input.
    """

    label: str
    layers: tuple[str, ...]
    value: float
    series: str
    block: int | None


def _split(layer: str):
    match = _LAYER.match(layer)
    return (match["prefix"], int(match["block"]), match["sub"]) if match else (None, None, layer)


def _blocks_text(blocks: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``blocks 0-2, 5``."""
    runs, blocks = [], sorted(set(blocks))
    for block in blocks:
        if runs and block == runs[-1][1] + 1:
            runs[-1][1] = block
        else:
            runs.append([block, block])
    text = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)
    return f"block {text}" if len(blocks) == 1 else f"blocks {text}"


def _kinds_text(subs: list[str]) -> str:
    """``["cross_attn.k", "cross_attn.v"]`` -> ``cross_attn.k+v``."""
    subs = list(dict.fromkeys(subs))
    parents = {s.rsplit(".", 1)[0] for s in subs if "." in s}
    if len(parents) == 1 and all("." in s for s in subs) and len(subs) > 1:
        return f"{parents.pop()}." + "+".join(s.rsplit(".", 1)[1] for s in subs)
    return "+".join(subs)


def shared_inputs(basis: RefusalBasis) -> list[tuple[str, tuple[str, ...]]]:
    """Groups of layers that read one input, as ``(input name, layers)`` in layer order; every layer is in exactly
    one group (a layer with its own input is a group of one, named ``""``)."""
    groups = [(name, tuple(layers)) for name, layers in basis.shared_inputs().items()]
    covered = {layer for _, layers in groups for layer in layers}
    groups += [("", (layer,)) for layer in basis.layers if layer not in covered]
    groups.sort(key=lambda group: basis.layers.index(group[1][0]))
    return [(_input_name(basis, name, layers) if len(layers) > 1 else name, layers) for name, layers in groups]


def _input_name(basis: RefusalBasis, name: str, layers) -> str:
    """``text context`` when the family's adapter says the layers read the projected text, else the basis's name."""
    for adapter in ADAPTERS:
        if adapter.family == basis.model_family and adapter.is_timestep_independent(layers):
            return "text context"
    return name or "one input"


def _pooled_suffixes(basis: RefusalBasis) -> set[str]:
    """The suffixes of the basis's family whose input is the mean of rows another layer of its group reads
    (``LayerGroup.pooled_suffixes``)."""
    return {s for adapter in ADAPTERS if adapter.family == basis.model_family
            for group in adapter.groups.values() for s in group.pooled_suffixes}


def chart_bars(basis: RefusalBasis) -> list[Bar]:
    """The chart's bars: shared inputs first (in layer order), then single layers by block and kind."""
    shared, single = [], []
    # the first layer in a block names the main block list: HunyuanVideo's "all" starts with the block-less
    # vector_in.in_layer, whose prefix (None) would make its double blocks read as a second list ("double_block 0")
    main = next((prefix for prefix, block, _ in map(_split, basis.layers) if block is not None), None)
    for name, layers in shared_inputs(basis):
        value = abs(basis[layers[0]].score.separation)
        parts = [_split(layer) for layer in layers]
        if len(layers) > 1:
            if all(block is not None for _, block, _ in parts):
                # the main blocks as "blocks 0-29", a second block list (Wan VACE's) by its own name after them
                spans = []
                for i, prefix in enumerate(dict.fromkeys(prefix for prefix, _, _ in parts)):
                    span = _blocks_text([block for p, block, _ in parts if p == prefix])
                    spans.append(span.replace("block", prefix.rstrip("s"), 1) if i else span)
                where = f"{', '.join(spans)} {_kinds_text([sub for _, _, sub in parts])}"
            else:
                where = ", ".join(layers)
            pooled = [layer for layer in layers if layer_suffix(layer) in _pooled_suffixes(basis)]
            if pooled:
                # HunyuanVideo's txt_in.c_embedder.in_layer reads the mean of the rows txt_in.input_embedder reads: one
                # fit, but not one input ("share this input" told a user both layers read the same tensor)
                rows = ", ".join(layer for layer in layers if layer not in pooled)
                label = f"{name}: {rows} reads its rows, {', '.join(pooled)} their mean: one fit"
            else:
                label = f"{name}: {where} share this input"
            shared.append(Bar(label, layers, value, name, None))
        else:
            prefix, block, sub = parts[0]
            where = "block" if prefix == main else (prefix or "").rstrip("s")
            label = f"{where} {block} · {sub}" if block is not None else layers[0]
            single.append(Bar(label, layers, value, sub, block))
    single.sort(key=lambda bar: (bar.block if bar.block is not None else -1, basis.layers.index(bar.layers[0])))
    return shared + single


def _best(bars: list[Bar]) -> int:
    return max(range(len(bars)), key=lambda i: bars[i].value) if bars else -1


def chart_data(basis: RefusalBasis) -> dict:
    """The chart as JSON-ready data: what the editor shows and tests read next to the image."""
    bars = chart_bars(basis)
    best = _best(bars)
    return {
        "title": _title(basis),
        # the name as typed, and whether the picture draws it (else the editor's caption names it)
        "concept": basis.concept,
        "concept_in_picture": not missing_glyphs(basis.concept, _font(TITLE_SIZE)),
        "metric": "separation (Cohen's d of the pairs along the edit direction)",
        "bars": [{"label": bar.label, "value": round(bar.value, 4), "layers": list(bar.layers), "series": bar.series,
                  "block": bar.block, "shared": bar.block is None and len(bar.layers) > 1} for bar in bars],
        "best": bars[best].label if bars else "",
        "layers": len(basis.layers),
        "narrow_inputs": basis.narrow_inputs(),
    }


def _title(basis: RefusalBasis, concept: str | None = None) -> str:
    """The chart's title, naming the concept as ``concept`` where given (the picture's stand-in for a name its font
    cannot draw), else as the basis does."""
    narrow = sorted(set(basis.narrow_inputs().values()))
    kept = f", {'/'.join(map(str, narrow))} of {basis.rank} kept (positive contrast)" if narrow else ""
    name = concept if concept is not None else basis.concept or "concept"
    return f"{name}: separation per input ({basis.method}, rank {basis.rank}{kept})"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


#: A noncharacter, which no font maps: what a font draws for it is its missing-glyph box (.notdef).
_UNMAPPED = "\uffff"
#: What the score chart draws in place of a concept name its font cannot draw (the caption above it names it).
CONCEPT_NOT_DRAWN = "concept (named in the caption)"


def _mask(font, text: str) -> tuple | None:
    """What ``font`` draws for ``text``; None where it cannot take the text at all: Pillow's bitmap font (a Pillow
    without FreeType, or one before 10.1, whose ``load_default`` takes no size) encodes text as Latin-1 and raises
    UnicodeEncodeError for any other character."""
    try:
        mask = font.getmask(text)
    except UnicodeEncodeError:
        return None
    return mask.size, bytes(mask)


def missing_glyphs(text: str, font) -> str:
    """The characters of ``text`` (each once, in order) that ``font`` draws as its missing-glyph box: those whose mask
    is the mask of a character no font maps, or that it cannot take at all (the bitmap font, outside Latin-1).
    Pillow's bundled scalable font lacks every letter outside ASCII (measured on Pillow 13.0: of U+0020-U+FFFF it draws
    113 characters, ASCII and 18 signs such as '·' and '…')."""
    box = _mask(font, _UNMAPPED)  # None for the bitmap font: then only what it cannot take is missing
    return "".join(c for c in dict.fromkeys(text) if c != " " and _mask(font, c) in (None, box))


def drawable_concept(concept: str, font, stand_in: str) -> str:
    """``concept`` (or "concept" for an unnamed one) where ``font`` draws every character of it, else ``stand_in``:
    a picture names the concept in full or not at all, never as boxes."""
    name = concept or "concept"
    return stand_in if missing_glyphs(name, font) else name


def _wrap(draw, text: str, font, width: float) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines


def _nice_step(top: float) -> float:
    raw = top / 4
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def score_chart(basis: RefusalBasis, width: int = WIDTH, height: int = HEIGHT) -> torch.Tensor:
    """A bar chart of each input's separation (Cohen's d of unsafe vs. safe along the edit direction).

    Drawn at the size the node shows it at 100 % zoom (text 14-16 px). Returns an IMAGE tensor
    ``[1, height, width, 3]`` in [0, 1]. The best bar is orange and named in the second line.
    """
    bars = chart_bars(basis)
    best = _best(bars)
    image = Image.new("RGB", (width, height), _PAPER)
    draw = ImageDraw.Draw(image)
    title, text, small = _font(TITLE_SIZE), _font(14), _font(13)
    draw.text((10, 8), _title(basis, drawable_concept(basis.concept, title, CONCEPT_NOT_DRAWN)), fill=_INK, font=title)
    if best >= 0:
        draw.text((10, 30), f"best: {bars[best].label}  (separation {bars[best].value:.2f})", fill=_BEST, font=text)

    kinds = list(dict.fromkeys(bar.series for bar in bars if bar.block is not None))
    colours = {kind: _SERIES[i % len(_SERIES)] for i, kind in enumerate(kinds)}
    legend_y, x = 52, 10.0
    for kind in kinds if len(kinds) > 1 else []:
        draw.rectangle([x, legend_y + 3, x + 12, legend_y + 15], fill=colours[kind])
        draw.text((x + 17, legend_y), kind, fill=_SOFT, font=text)
        x += 17 + draw.textlength(kind, font=text) + 18
    count = f"{len(basis.layers)} layer{'s' if len(basis.layers) != 1 else ''} · {len(bars)} distinct input{'s' if len(bars) != 1 else ''}"
    draw.text((width - 10 - draw.textlength(count, font=text), legend_y), count, fill=_SOFT, font=text)
    shared = [bar for bar in bars if bar.block is None]
    single = [bar for bar in bars if bar.block is not None]

    left, right = 46, width - 12
    upper = 80
    label_lines = min(4, max([len(_wrap(draw, bar.label, small, 150)) for bar in shared] or [0]))
    lower = height - max(40, 10 + 16 * label_lines + (20 if single else 0))
    top = max([bar.value for bar in bars] or [1.0]) or 1.0
    step = _nice_step(top * 1.05)
    top = step * math.ceil(top * 1.05 / step)
    y_of = lambda v: lower - (lower - upper) * v / top  # noqa: E731
    tick = 0.0
    while tick <= top + 1e-9:
        y = y_of(tick)
        draw.line([(left, y), (right, y)], fill=_GRID)
        label = f"{tick:g}"
        draw.text((left - 6 - draw.textlength(label, font=small), y - 8), label, fill=_SOFT, font=small)
        tick += step
    draw.line([(left, lower), (right, lower)], fill=(120, 120, 120))

    # Horizontal layout: each shared input gets a wide slot of its own; blocks share the rest, one cluster each.
    # Shared inputs are few (one per family's text context, one more per combined concept): up to 45 % of the width.
    slot = (right - left) / max(len(shared), 1) if not single else min(170.0, (right - left) * 0.45 / max(len(shared), 1))
    x = float(left)
    for bar in shared:
        half = min(slot * 0.3, 60.0)
        x0, x1 = x + slot / 2 - half, x + slot / 2 + half
        _bar(draw, bar, x0, x1, y_of, lower, _BEST if bars.index(bar) == best else _SHARED, text)
        for row, line in enumerate(_wrap(draw, bar.label, small, slot - 8)):
            draw.text((x + (slot - draw.textlength(line, font=small)) / 2, lower + 5 + 16 * row), line, fill=_INK, font=small)
        x += slot
    if single:
        blocks = list(dict.fromkeys(bar.block for bar in single))
        cluster = (right - x) / len(blocks)
        every = max(1, math.ceil(26 / cluster))  # block numbers at least 26 px apart
        every = next(n for n in (1, 2, 5, 10, 20, 50, 100) if n >= every)
        for i, block in enumerate(blocks):
            members = [bar for bar in single if bar.block == block]
            width_each = cluster * 0.8 / len(members)
            for j, bar in enumerate(members):
                x0 = x + i * cluster + cluster * 0.1 + j * width_each
                _bar(draw, bar, x0, x0 + max(width_each - (1 if width_each > 3 else 0), 1), y_of, lower,
                     _BEST if bars.index(bar) == best else colours[bar.series], text)
            centre = x + (i + 0.5) * cluster
            if block % every == 0 or len(blocks) <= 12:
                draw.line([(centre, lower), (centre, lower + 4)], fill=(120, 120, 120))
                draw.text((centre - draw.textlength(str(block), font=small) / 2, lower + 5), str(block), fill=_INK, font=small)
        caption = "block" + ("" if len(kinds) > 1 else f" ({kinds[0]})")
        draw.text((x + (right - x - draw.textlength(caption, font=small)) / 2, lower + 22), caption, fill=_SOFT, font=small)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]


def _bar(draw, bar: Bar, x0: float, x1: float, y_of, lower: float, colour, font) -> None:
    y0 = y_of(bar.value)
    draw.rectangle([x0, min(y0, lower - 1), x1, lower], fill=colour)
    if colour == _BEST:  # a marker above the best bar, visible even when bars are one pixel wide
        middle = (x0 + x1) / 2
        draw.polygon([(middle - 6, y0 - 12), (middle + 6, y0 - 12), (middle, y0 - 3)], fill=_BEST)


def chart_output(basis: RefusalBasis, cls=None, pair_notes: list[str] = ()) -> tuple[torch.Tensor, dict]:
    """The chart image and the node's UI output: the preview image plus the chart's data under ``UI_KEY``, with
    ``pair_notes`` (``core.refusal.pair_notes``: pairs that do not carry the concept as the others do)."""
    from comfy_api.latest import ui

    chart = score_chart(basis)
    data = {**chart_data(basis), "pair_notes": list(pair_notes)}
    return chart, {**ui.PreviewImage(chart, cls=cls).as_dict(), UI_KEY: [data]}
