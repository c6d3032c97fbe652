"""The Unlearning Check's figures do not move when its cost is cut (issue 13).

``check_recording.json`` holds the CheckResults of fixed inputs on the tiny host Wan as the check computed them
before the speed-ups of issue 13 (the code of commit 9e7f351, re-run on 2026-12-01 with the inputs below). A
speed-up must be exact up to float rounding: every figure within 1e-5 (and 1e-6 of its size) of the recording and
the recommended strength that today's rule (``core.recommend.recommend``) derives from the recorded figures. To
re-record after a change that is *meant* to move the figures (then say so in the commit): ``CHECK_RECORD=1 pytest
tests/host/test_check_exact.py``.

The inputs are chosen so that the figures do not depend on the CPU's kernels, which a recording compared at 1e-5
needs. The first recording (float32 model, the tiny UMT5 encoder, a rank-4 contrastive fit) failed on a machine with
AVX-512 by up to 0.017. The cause, found later (2026-12-01): the contrastive solve itself, which cut its span from an
unpivoted QR and so returned vectors that were not eigenvectors and moved with the text encoder's last float32 bits
(the edit direction by 1 - cos 2.7e-3 between AVX-512 and AVX2 kernels). With the exact solve that configuration
differs across kernels by 2e-4 at most, still above 1e-5: ComfyUI's float32 text encoder and sampling path round
differently per CPU. Now the text rows come from a lookup table (``tiny_models.LookupTextEncoder``: the real
tokenizer, no arithmetic), the model runs in float64 and the vector is the mean difference. ComfyUI's sampling
path still runs in float32 (noise, sigmas, its cast of the model's output), and on the random tiny Wan the prompt
hardly moves the prediction (benign predictions differ from one another by 4e-5 of their size), so the collateral
ratio magnified those last bits to 1e-3 without vector kernels; with the cross-attention's v and o weights x20
(``_text_led_wan_state``) the prompt moves it 35 times more. The recording then holds with AVX-512, with
``ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2`` and with no vector kernels at all (``ATEN_CPU_CAPABILITY=default
MKL_CBWR=COMPATIBLE``: up to 2e-5 on collateral figures near 70, hence ``rtol`` 1e-6 beside ``atol`` 1e-5).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

RECORDING = Path(__file__).with_name("check_recording.json")
PAIRS = "\n".join(f"a Rolex watch number {i} on a table | a watch number {i} on a table" for i in range(5))
VALIDATION = "\n".join(f"a shiny Rolex timepiece in box {i} | a shiny timepiece in box {i}" for i in range(5))
NEUTRAL = "a dog in a park\na red car\na tree in the wind\na bowl of soup"
BENIGN = "a cat on a sofa\na boat on a lake\na bird in the sky\na train at a station\nsnow in a forest"
#: name -> run_unlearning_check keywords: the default edit, every layer with target zero and a layer-group sweep
#: (layers that read the video tokens too: cross_attn.o, ffn.0), a larger latent with two frames and block halves.
CASES = {
    "default": dict(strengths="0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2", group="default", target="safe_mean",
                    width=64, height=64, length=1, timesteps="0.1", sweep="none"),
    "all_zero_groups": dict(strengths="0, 0.5, 1, 2", group="all in vector", target="zero", width=64, height=64,
                            length=1, timesteps="0.1, 0.4", sweep="layer groups"),
    "halves_large": dict(strengths="0, 0.75, 1.5", group="default", target="safe_mean", width=96, height=64,
                         length=5, timesteps="2", sweep="block halves"),
}
FIELDS = ("strengths", "survival_layers", "survival_prediction", "collateral_layers", "collateral_prediction")


def _figures(result) -> dict:
    return {**{name: list(getattr(result, name)) for name in FIELDS}, "recommended": result.recommended,
            "layers": list(result.layers), "label": result.label}


def _text_led_wan_state(tiny) -> dict:
    """The tiny Wan with its cross-attention v and o weights x20, so that the prompt moves the prediction: benign
    predictions then differ from one another by 1.4e-3 of their size instead of 4e-5 (see the module docstring)."""
    state = tiny.tiny_wan_state_dict()
    for name in state:
        if (".cross_attn.v." in name or ".cross_attn.o." in name) and name.endswith("weight"):
            state[name] = state[name] * 20
    return state


@pytest.fixture(scope="module")
def results(pack, tiny, clip):
    from comfyui_video_unlearning.nodes import check, definitions

    clip = tiny.LookupTextEncoder(clip)
    with torch.inference_mode():
        wan = tiny.load_tiny_wan(model_options={"dtype": torch.float64}, state=_text_led_wan_state(tiny))
        encoded = definitions.PairEncoder.execute(clip, PAIRS, NEUTRAL, "Rolex")[0]
        acts = definitions.CollectActivations.execute(wan, encoded, 64, 64, 1, "2", 0, "all", 0, -1)[0]
        basis = definitions.RefusalVectorNode.execute(acts, "mean", 4, 1.0)[0]
        validation = definitions.PairEncoder.execute(clip, VALIDATION, BENIGN, "Rolex")[0]
        out = {}
        for name, case in CASES.items():
            case = dict(case)
            main, swept = check.run_unlearning_check(wan, basis, validation, case.pop("strengths"), block_start=0,
                                                     block_end=-1, seed=0, **case)
            out[name] = {"main": _figures(main), "swept": [_figures(r) for r in swept]}
    if os.environ.get("CHECK_RECORD"):
        RECORDING.write_text(json.dumps(out, indent=1) + "\n")
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_check_figures_match_the_recording(results, case):
    from comfyui_video_unlearning.core.check import recommend

    recorded = json.loads(RECORDING.read_text())[case]
    got = results[case]
    assert len(got["swept"]) == len(recorded["swept"])
    for mine, theirs in zip([got["main"], *got["swept"]], [recorded["main"], *recorded["swept"]]):
        assert mine["layers"] == theirs["layers"] and mine["label"] == theirs["label"]
        # The recording's figures are the reference; its recommendation is re-derived from them by today's rule
        # (changed on purpose since the recording: the full-projection floor), so a speed-up that moved a figure
        # across a threshold still fails here while a change of the rule alone does not.
        expected, _ = recommend(theirs["strengths"], [1 - s for s in theirs["survival_prediction"]],
                                theirs["collateral_prediction"])
        assert mine["recommended"] == expected
        for name in FIELDS:
            torch.testing.assert_close(torch.tensor(mine[name], dtype=torch.float64),
                                       torch.tensor(theirs[name], dtype=torch.float64), atol=1e-5, rtol=1e-6,
                                       msg=lambda m, name=name: f"{case}: {name}: {m}")
