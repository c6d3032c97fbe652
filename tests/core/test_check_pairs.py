"""Unlearning Check's removal of each validation pair on its own (core.check): one wording the edit misses hides in
the pooled share, which weighs every pair by its difference."""

import pytest

from test_check_scripts import HAN_PAIRS, LATIN_PAIRS, _text_check


def test_each_pair_s_removal_shows_the_pairs_the_edit_misses():
    result = _text_check("other", han_scale=0.05)  # pairs 4-5 differ along a direction the vector does not hold
    assert len(result.removed_by_pair) == len(LATIN_PAIRS) + len(HAN_PAIRS)
    assert all(len(efficacy) == len(result.strengths) for efficacy in result.removed_by_pair)
    at_one = result.removed_by_pair_at(1.0)
    assert min(at_one[:4]) > 0.9 and max(abs(share) for share in at_one[4:]) < 0.2
    assert result.efficacy[result.strengths.index(1.0)] >= 0.9  # the pooled share hides them
    assert result.removed_by_pair_at(0.0) == [0.0] * 6
    assert result.as_dict()["removed_by_pair"] == [list(efficacy) for efficacy in result.removed_by_pair]


def test_one_pair_s_removal_is_the_pooled_removal_of_that_pair_alone():
    alike = _text_check("concept")
    one = alike.strengths.index(1.0)
    assert alike.removed_by_pair_at(1.0) == pytest.approx([alike.removed_by_pair[i][one] for i in range(6)])
    # pairs alike (every difference along the planted concept): each reads what the pooled share reads
    assert alike.removed_by_pair_at(1.0) == pytest.approx([alike.efficacy[one]] * 6, abs=0.05)
    with pytest.raises(ValueError, match="not on the checked grid"):
        alike.removed_by_pair_at(0.3)
