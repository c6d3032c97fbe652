"""Unlearning Check says when its validation pairs' sides differ in token count on a model that reads the text's
attention mask (LTX-Video, Mochi: ``Adapter.reads_text_mask``): that part of the pairs' difference no edit changes, so
the removed share stops short of 100 % at every strength (docs/benchmarks.md "Where the proxy misleads", token counts).
Pairs of equal token count get no such line, and Wan, which reads no mask, never does."""

from __future__ import annotations

import pytest
import torch

from test_adapters import tiny_model
from test_families_graph import NEUTRAL, PAIRS, TARGET, TEXT, family_text

#: Held out, the unsafe side one word longer (the check's usual pairs) ...
UNEQUAL = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5))
#: ... and with a brand of as many tokens as "Rolex" on the safe side (bench/text_paths.py's HELD_SAME_LENGTH)
EQUAL = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny Seiko timepiece in box {i}" for i in range(5))
BENIGN = "a cat on a sofa\na boat on a lake\na bird in the sky"
NOTE = "token counts: 5 of 5 validation pairs have sides of different token counts"

pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.mark.parametrize("family", ["ltxv", "mochi", "wan"])
def test_the_check_names_unequal_token_counts_where_the_model_reads_the_mask(family, pack, wan, clip, tiny):
    from comfyui_video_unlearning.nodes import definitions
    from comfyui_video_unlearning.nodes.check import UnlearningCheck
    from comfyui_video_unlearning.nodes.conditioning import prompt_token_mask

    def token_count(conditioning):
        return int(prompt_token_mask(conditioning[0][0], conditioning[0][1].get("attention_mask")).sum())

    model = tiny_model(family, wan)
    # Wan's padding rows zeroed, as the real UMT5 gives them, so that its sides' token counts differ too
    text = tiny.zero_padded(tiny.tiny_wan_clip()) if family == "wan" else family_text(tiny, clip, *TEXT[family])
    encoded = definitions.PairEncoder.execute(text, PAIRS, NEUTRAL, "Rolex")[0]
    activations = definitions.CollectActivations.execute(model, encoded, 32, 32, 1, "1", 0, "default", 0, -1)[0]
    basis = definitions.RefusalVectorNode.execute(activations, "cpca", 2, 1.0)[0]
    target = TARGET.get(family, "safe_mean")
    for pairs, unequal in ((UNEQUAL, True), (EQUAL, False)):
        held_out = definitions.PairEncoder.execute(text, pairs, BENIGN, "Rolex")[0]
        counts = [(token_count(u), token_count(s)) for u, s in zip(held_out.unsafe, held_out.safe)]
        assert all((u != s) == unequal for u, s in counts), counts  # the pairs are what their name says
        out = UnlearningCheck.execute(model, basis, "1", "default", 0, -1, target, "none", 32, 32, 1, "0.5", 0,
                                      validation_pairs=held_out)
        table, summary = out.args[2], out.ui["video_unlearning_check"][0]
        shown = unequal and family != "wan"
        assert (NOTE in table) == shown, (family, unequal, table)
        assert ("token_counts" in summary) == shown, summary  # the caption's note (web/video_unlearning.js)
        if shown:
            line = next(line for line in table.splitlines() if line.startswith("token counts:"))
            assert f"this {family} model reads the prompt's attention mask" in line
            assert "same token count" in line and summary["token_counts"] == line
