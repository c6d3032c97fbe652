"""Unlearning Check's removal of each validation pair on its own (core.check): one wording the edit misses hides in
the pooled share, which weighs every pair by its difference."""

import pytest
import torch

from core.check import CheckResult, check_strengths
from test_check import fitted, forward_for, world
from test_check_scripts import HAN_PAIRS, LATIN_PAIRS, _pairs_survival_world, _text_check


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


def test_the_table_lists_each_pair_and_warns_of_pairs_left_behind():
    result = _text_check("other", han_scale=0.05)
    shares = result.removed_by_pair_at(1.0)
    least = min(range(6), key=shares.__getitem__)
    assert result.recommended == 1.0 and result.pair_names == tuple(u for u, _ in LATIN_PAIRS + HAN_PAIRS)
    assert (f"removed by pair at 1.00: {' '.join(f'{s:.0%}' for s in shares)} (least: pair {least + 1} "
            f"({HAN_PAIRS[least - 4][0]!r}))") in result.table()
    warning = result.pair_warning()
    pooled = result.at(1.0)["efficacy"]
    assert warning.startswith(f"WARNING: at strength 1 the edit removes {pooled:.0%} of the validation pairs' "
                              "difference pooled, but less than 90% of 2 pairs: pair ")
    assert "pair 5 ('一块劳力士手表 0') at" in warning and "pair 6 ('一块劳力士手表 1') at" in warning
    assert "render those prompts at this strength" in warning and warning in result.table()
    alike = _text_check("concept")
    assert alike.pair_warning() == "" and "removed by pair at 1.00:" in alike.table()


def _result(shares, names=(), recommended=1.0, pooled=0.95):
    return CheckResult(strengths=(0.0, 1.0), survival_layers=(1.0, 1 - pooled), survival_prediction=(1.0, 1 - pooled),
                       collateral_layers=(0.0, 0.1), collateral_prediction=(0.0, 0.1), recommended=recommended,
                       reason="", layers=("layer",), removed_by_pair=tuple((0.0, s) for s in shares),
                       pair_names=tuple(names))


def test_many_pairs_read_as_the_least_the_median_and_the_count_under_the_threshold():
    shares = [0.99] * 15 + [0.5, 0.8, 0.85, 0.7]
    result = _result(shares, [f"prompt {i} " + "x" * 50 for i in range(19)])
    assert result.pair_line() == ("removed by pair at 1.00: least 50% (pair 16 ('prompt 15 "
                                  f"{'x' * 27}...')), median 99%, 4 of 19 under 90%")
    warning = result.pair_warning()
    assert "less than 90% of 4 pairs: pair 16 (" in warning and warning.count("') at ") == 3  # 3 named, least first
    assert "pair 19 (" in warning and warning.index("pair 16") < warning.index("pair 19") < warning.index("pair 17")
    assert " and 1 more." in warning
    unnamed = _result([0.99, 0.5])
    assert unnamed.pair_line() == "removed by pair at 1.00: 99% 50% (least: pair 2)"


def test_no_pair_warning_when_the_pooled_share_already_says_so_or_nothing_is_recommended():
    assert _result([0.99, 0.5], pooled=0.85).pair_warning() == ""  # the pooled share is itself under 90 %
    assert _result([0.99, 0.5], recommended=0.0).pair_warning() == ""
    assert _result([0.5]).pair_line() == "" and _result([0.5]).pair_warning() == ""  # one pair: pooled is it


def test_pair_names_must_name_every_pair():
    baseline, model = _pairs_survival_world()
    _, basis = fitted(model)
    _, unsafe, safe, benign = world(1)
    with torch.no_grad(), pytest.raises(ValueError, match="pair_names names 2 pairs for 6 validation pairs"):
        check_strengths(model, forward_for(model), basis, baseline, (0, 1),
                        rows=(list(zip(unsafe, safe)), list(benign)), pair_names=["a", "b"])
