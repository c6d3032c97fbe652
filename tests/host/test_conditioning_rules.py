"""Stacking conditionings and masking their tokens (``nodes/conditioning.py``), rule by rule: each test pins a rule
whose wrong version gave no host-test failure in the mutation test of 2026-12-07 (a pooled output of one prompt given
to every row, a padding row counted as a prompt token, a mask padded on the wrong side)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("inference_mode")


@pytest.fixture(scope="module")
def conditioning(pack):
    from comfyui_video_unlearning.nodes import conditioning

    return conditioning


def _prompt(tokens: int, value: float, **extras):
    return [[torch.full((1, tokens, 4), value), extras]]


def test_prompts_share_a_call_only_when_the_model_reads_their_masks_as_one_call_each(conditioning):
    mask = torch.ones(1, 3)
    plain, masked = _prompt(3, 1.0), _prompt(3, 2.0, attention_mask=mask)
    assert conditioning.can_share_a_call([plain, plain], batches_text_masks=False)
    assert not conditioning.can_share_a_call([plain, _prompt(5, 1.0)], batches_text_masks=True)  # two lengths
    assert conditioning.can_share_a_call([masked, masked], batches_text_masks=True)
    assert not conditioning.can_share_a_call([masked, masked], batches_text_masks=False)
    # one prompt with a mask and one without: a batch would need a mask row for the unmasked one, which none gave
    assert not conditioning.can_share_a_call([plain, masked], batches_text_masks=True)


def test_a_token_is_a_row_the_encoder_marks_or_a_row_that_is_not_all_zero(conditioning):
    context = torch.zeros(1, 4, 3)
    context[0, 0] = 1.0
    context[0, 1, 2] = 0.5  # one nonzero feature is a token (Wan's padding rows are zero in every feature)
    assert conditioning.prompt_token_mask(context).tolist() == [[True, True, False, False]]
    # the encoder's mask decides where it gives one, whatever the rows hold (T5 padding rows are not zeros)
    marked = conditioning.prompt_token_mask(context, torch.tensor([[1, 0, 0, 1]]))
    assert marked.tolist() == [[True, False, False, True]]
    # no token left: every row, so the prompt still has rows to pool
    assert conditioning.prompt_token_mask(torch.zeros(1, 3, 2)).tolist() == [[True, True, True]]
    with pytest.raises(ValueError, match="attention_mask covers 2 tokens but the text context has 4"):
        conditioning.prompt_token_mask(context, torch.ones(1, 2))


def test_row_masks_pad_each_prompt_after_its_own_tokens(conditioning):
    short, long = _prompt(2, 1.0), _prompt(4, 1.0, attention_mask=torch.tensor([[1, 1, 1, 0]]))
    assert conditioning.row_token_masks([short, long]).tolist() == [[True, True, False, False],
                                                                   [True, True, True, False]]


def test_stacked_extras_keep_each_prompts_own_rows(conditioning):
    import comfy.clip_vision

    def vision(value):
        out = comfy.clip_vision.Output()
        out.penultimate_hidden_states = torch.full((1, 2, 3), value)
        out.image_sizes = [(8, 8)]
        return out

    prompts = [_prompt(3, float(i), pooled_output=torch.full((1, 5), float(i)), clip_vision_output=vision(float(i)),
                        guidance=3.5) for i in range(3)]
    stacked = conditioning.stack_conditionings(prompts)
    context, extras = stacked[0]
    assert context[:, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert extras["pooled_output"][:, 0].tolist() == [0.0, 1.0, 2.0]
    assert extras["clip_vision_output"].penultimate_hidden_states[:, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert extras["guidance"] == 3.5


def test_extras_that_cannot_be_one_batch_are_refused(conditioning):
    with pytest.raises(ValueError, match="'guidance' differs between prompts"):
        conditioning.stack_conditionings([_prompt(3, 0.0, guidance=3.5), _prompt(3, 1.0, guidance=6.0)])
    with pytest.raises(ValueError, match="'pooled_output' is set for some prompts only"):
        conditioning.stack_conditionings([_prompt(3, 0.0, pooled_output=None),
                                          _prompt(3, 1.0, pooled_output=torch.ones(1, 5))])
    with pytest.raises(ValueError, match=r"different token lengths \[3, 5\]"):
        conditioning.stack_conditionings([_prompt(3, 0.0), _prompt(5, 1.0)])
