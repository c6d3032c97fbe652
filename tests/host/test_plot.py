"""The Low-Rank Refusal Vector node's score chart (nodes/plot.py): every bar named, shared inputs said plainly.

The editor and the browser test read the labels from ``chart_data``, sent next to the image; these tests pin
what those labels say for the layouts a user meets: Wan's default (every block's k/v read one text context),
Wan with video-side layers too, and a family whose k and v have inputs of their own.
"""

from __future__ import annotations

import importlib

import pytest
import torch


@pytest.fixture(scope="module")
def plot(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.plot")


@pytest.fixture(scope="module")
def fitter_class(pack):
    return importlib.import_module(f"{pack.__name__}.core.refusal").RefusalFitter


def _rows(seed: int, shift: float, n: int = 6, d: int = 16):
    generator = torch.Generator().manual_seed(seed)
    safe = torch.randn(n, d, generator=generator, dtype=torch.float64)
    direction = torch.zeros(d, dtype=torch.float64)
    direction[seed % d] = 1.0
    return safe + shift * direction + 0.3 * torch.randn(n, d, generator=generator, dtype=torch.float64), safe


def _wan_basis(fitter_class, blocks: int, video_side: bool = False, family: str = "wan"):
    fitter = fitter_class()
    text_layers = [f"blocks.{b}.cross_attn.{kv}" for b in range(blocks) for kv in "kv"]
    fitter.share("text_embedding", text_layers)
    fitter.update("text_embedding", *_rows(0, 2.0))
    if video_side:
        for b in range(blocks):
            for i, kind in enumerate(("cross_attn.o", "ffn.0")):
                fitter.update(f"blocks.{b}.{kind}", *_rows(10 + 2 * b + i, 0.5 + 0.4 * b + i))
    return fitter.fit(rank=2, concept="Rolex", model_family=family)


def test_wan_default_is_one_bar_that_says_the_layers_share_one_input(plot, fitter_class):
    basis = _wan_basis(fitter_class, blocks=30)
    data = plot.chart_data(basis)
    label = "text context: blocks 0-29 cross_attn.k+v share this input"
    assert [bar["label"] for bar in data["bars"]] == [label]
    assert data["bars"][0]["shared"] and len(data["bars"][0]["layers"]) == 60 and data["layers"] == 60
    assert data["best"] == label
    image = plot.score_chart(basis)
    assert image.shape == (1, plot.HEIGHT, plot.WIDTH, 3) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


def test_video_side_layers_get_one_named_bar_per_block_and_kind(plot, fitter_class):
    basis = _wan_basis(fitter_class, blocks=3, video_side=True)
    data = plot.chart_data(basis)
    labels = [bar["label"] for bar in data["bars"]]
    assert labels == ["text context: blocks 0-2 cross_attn.k+v share this input",
                      "block 0 · cross_attn.o", "block 0 · ffn.0", "block 1 · cross_attn.o", "block 1 · ffn.0",
                      "block 2 · cross_attn.o", "block 2 · ffn.0"]
    values = {bar["label"]: bar["value"] for bar in data["bars"]}
    assert data["best"] == max(values, key=values.get)
    for bar in data["bars"][1:]:
        assert bar["layers"] == [f"blocks.{bar['block']}.{bar['series']}"] and not bar["shared"]


def test_k_and_v_with_their_own_inputs_are_told_apart(plot, fitter_class):
    """A family whose k and v read different inputs (or a basis fitted per layer): one bar each, k and v named."""
    fitter = fitter_class()
    for b in range(2):
        for i, kv in enumerate("kv"):
            fitter.update(f"transformer_blocks.{b}.attn2.to_{kv}", *_rows(20 + 2 * b + i, 1.0 + b + 0.5 * i))
    data = plot.chart_data(fitter.fit(rank=2, concept="Rolex", model_family="ltxv"))
    assert [bar["label"] for bar in data["bars"]] == ["block 0 · attn2.to_k", "block 0 · attn2.to_v",
                                                      "block 1 · attn2.to_k", "block 1 · attn2.to_v"]
    assert data["best"] == max(data["bars"], key=lambda bar: bar["value"])["label"]
    assert len({bar["value"] for bar in data["bars"]}) == 4  # four inputs, four fits


def test_shared_input_of_a_family_without_text_token_layers_keeps_its_name(plot, fitter_class):
    fitter = fitter_class()
    fitter.share("context_proj", [f"blocks.{b}.attn.qkv_y" for b in (0, 1, 2, 5)])
    fitter.update("context_proj", *_rows(3, 2.0))
    data = plot.chart_data(fitter.fit(rank=2, model_family="mochi"))
    assert [bar["label"] for bar in data["bars"]] == ["context_proj: blocks 0-2, 5 attn.qkv_y share this input"]


def test_chart_output_carries_the_labels_next_to_the_preview(plot, fitter_class):
    basis = _wan_basis(fitter_class, blocks=2, video_side=True)
    image, ui = plot.chart_output(basis)
    assert image.shape == (1, plot.HEIGHT, plot.WIDTH, 3)
    assert ui["images"] and ui["images"][0]["filename"].endswith(".png")
    assert ui[plot.UI_KEY] == [{**plot.chart_data(basis), "pair_notes": []}]
    assert plot.chart_output(basis, pair_notes=["line 3: ..."])[1][plot.UI_KEY][0]["pair_notes"] == ["line 3: ..."]


def test_the_title_says_when_fewer_directions_than_the_rank_were_kept(plot, fitter_class):
    basis = _wan_basis(fitter_class, blocks=2)  # rank 2 from 6 distinct rows: both kept
    assert plot.chart_data(basis)["narrow_inputs"] == {} and "kept" not in plot.chart_data(basis)["title"]
    fitter = fitter_class().share("text_embedding", ["blocks.0.cross_attn.k", "blocks.0.cross_attn.v"])
    unsafe, safe = _rows(0, 2.0, n=3)
    fitter.update("text_embedding", unsafe.repeat(4, 1), safe.repeat(4, 1))  # text rows repeat per timestep
    data = plot.chart_data(fitter.fit(rank=8, concept="Rolex"))
    assert data["narrow_inputs"] == {"text_embedding": 3}
    assert data["title"] == "Rolex: separation per input (cpca, rank 8, 3 of 8 kept (positive contrast))"


def test_a_wan_vace_models_side_blocks_are_named_apart_from_the_main_blocks(plot, fitter_class):
    """A VACE model's side blocks read the same text (one shared bar names both lists) and have video-side layers of
    their own, whose bars must not read as the main block of the same number."""
    fitter = fitter_class()
    text_layers = [f"{blocks}.{b}.cross_attn.{kv}" for blocks, count in (("blocks", 4), ("vace_blocks", 2))
                   for b in range(count) for kv in "kv"]
    fitter.share("text_embedding", text_layers)
    fitter.update("text_embedding", *_rows(0, 2.0))
    for i, layer in enumerate(("blocks.0.ffn.0", "vace_blocks.0.ffn.0")):
        fitter.update(layer, *_rows(20 + i, 1.0 + i))
    labels = [bar["label"] for bar in plot.chart_data(fitter.fit(rank=2, model_family="wan"))["bars"]]
    assert labels == ["text context: blocks 0-3, vace_blocks 0-1 cross_attn.k+v share this input",
                      "block 0 · ffn.0", "vace_block 0 · ffn.0"]
