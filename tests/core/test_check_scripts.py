"""Unlearning Check's removal per script of the validation pairs (core.scripts, core.check): pooled over every pair,
a few pairs in another script that the edit does not reach hid in the others' share."""

import pytest
import torch

from core.check import CheckResult, measure_baseline, prediction_proxies, run_check
from core.check_figures import pairs_survival
from core.scripts import NO_LETTERS, pair_script, script_groups, text_script

from test_check import Toy, fitted, forward_for, world


@pytest.mark.parametrize("text, script", [
    ("a Rolex watch on a table", "Latin"),
    ("une montre posée sur la table du café", "Latin"),  # French: the same script as English
    ("Ｒｏｌｅｘ", "Latin"),  # full-width letters, folded as the tokenizers fold them
    ("часы Ролекс на столе", "Cyrillic"),
    ("ρολόι στο τραπέζι", "Greek"),
    ("桌子上的一块劳力士手表", "Han"),
    ("机场里的一块Rolex手表", "Han"),  # Latin beside another script: named by the other
    ("ロレックス・デイトナ", "Japanese"),  # kana alone
    ("東京のロレックス", "Japanese"),  # kana with Chinese characters
    ("피 묻은 칼", "Hangul"),
    ("ساعة رولكس", "Arabic"),
    ("שעון רולקס", "Hebrew"),
    ("นาฬิกาโรเล็กซ์", "Thai"),
    ("रोलेक्स घड़ी", "Devanagari"),
    ("2024 !!! 🙂", NO_LETTERS),  # digits, punctuation and emoji are no script
])
def test_a_text_is_named_by_the_script_of_its_letters(text, script):
    assert text_script(text) == script


def test_a_pair_is_named_by_both_sides_and_groups_put_the_largest_first():
    assert pair_script("一块劳力士手表", "a watch") == "Han"
    assert pair_script("a Rolex 2", "a 2") == "Latin"
    scripts = ["Han", "Latin", "Latin", "Cyrillic", "Latin", "Han"]
    assert script_groups(scripts) == {"Latin": [1, 2, 4], "Han": [0, 5], "Cyrillic": [3]}


def _pairs_survival_world():
    model = Toy()
    _, basis = fitted(model)
    _, unsafe, safe, benign = world(1)
    with torch.no_grad():
        baseline = measure_baseline(model, forward_for(model), list(zip(unsafe, safe)), list(benign), ["layer"])
    return baseline, model


def test_the_share_of_every_pair_is_the_pooled_share():
    baseline, model = _pairs_survival_world()
    n = baseline.pairs
    shifted = baseline.predictions.clone()
    shifted[:n] = shifted[:n] * 0.3 + shifted[n:2 * n] * 0.7  # every unsafe side 70 % of the way to its safe side
    shifted[0] += 0.1  # one pair off that line, so pairs differ in what is left
    assert pairs_survival(baseline, shifted, range(n)) == pytest.approx(prediction_proxies(baseline, shifted)[0])
    assert pairs_survival(baseline, shifted, range(1, n)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="within the 6 validation pairs"):
        pairs_survival(baseline, shifted, [6])


#: Texts that name the toy's prompt vectors: pairs 0-3 in Latin, 4-5 in Han.
LATIN_PAIRS = [(f"a Rolex watch {i}", f"a watch {i}") for i in range(4)]
HAN_PAIRS = [(f"一块劳力士手表 {i}", f"一块手表 {i}") for i in range(2)]


def _text_check(han_difference: str, han_scale: float = 1.0, strengths=(0, 0.5, 1, 2)) -> CheckResult:
    """The toy checked on text pairs: Latin pairs whose unsafe side adds the planted concept (which the vector
    removes), Han pairs whose unsafe side adds ``han_difference``: ``"concept"`` too, or ``"other"``, a direction the
    vector does not hold, scaled by ``han_scale``."""
    model = Toy()
    concept, basis = fitted(model)
    _, unsafe, safe, benign = world(1)
    other = torch.randn(unsafe.shape[1], generator=torch.Generator().manual_seed(5))
    other = other - (other @ concept) * concept
    vectors = {}
    for i, (u, s) in enumerate(LATIN_PAIRS + HAN_PAIRS):
        vectors[u], vectors[s] = unsafe[i], safe[i]
        if i >= len(LATIN_PAIRS) and han_difference == "other":
            vectors[u] = safe[i] + han_scale * 2.0 * other / other.norm()
    prompts = [f"benign {i}" for i in range(len(benign))]
    vectors.update(zip(prompts, benign))

    def forward(rows, recorder):
        return model(torch.stack([vectors[row] for row in rows]))

    with torch.no_grad():
        return run_check(model, forward, basis, LATIN_PAIRS + HAN_PAIRS, prompts, strengths, target="zero")


def test_one_script_s_pairs_left_unremoved_show_beside_the_pooled_share():
    result = _text_check("other")
    (latin, latin_pairs, latin_removed), (han, han_pairs, han_removed) = result.removed_by_script
    assert (latin, latin_pairs, han, han_pairs) == ("Latin", 4, "Han", 2)
    one = result.strengths.index(1.0)
    assert latin_removed[one] > 0.9 and abs(han_removed[one]) < 0.2  # the edit removes one script's difference only
    assert han_removed[one] < result.efficacy[one] < latin_removed[one]
    assert latin_removed[0] == han_removed[0] == 0.0
    assert result.as_dict()["removed_by_script"][1] == {"script": "Han", "pairs": 2, "efficacy": list(han_removed)}
    shown = result.strengths.index(result.recommended)
    assert result.recommended > 0 and result.script_strength == result.recommended
    assert (f"removed by script at {result.recommended:.2f}: Latin {latin_removed[shown]:.0%} (4 pairs), "
            f"Han {han_removed[shown]:.0%} (2 pairs)") in result.table()


def test_the_warning_names_a_script_left_behind_when_the_pooled_share_reaches_removed():
    small = _text_check("other", han_scale=0.05)  # Han's difference too small to pull the pooled share under 90 %
    assert small.recommended == 1.0 and small.at(1.0)["efficacy"] >= 0.9
    assert "WARNING: at strength 1 the edit removes" in small.table()
    assert "less than 90% of the pairs written in Han (" in small.script_warning()
    assert "Add estimation pairs written in that script" in small.script_warning()
    # the pooled share itself stays under 90 % on a grid up to 1: the pooled figure already says so
    large = _text_check("other", strengths=(0, 0.5, 1))
    assert large.at(large.recommended)["efficacy"] < 0.9 and large.script_warning() == ""
    alike = _text_check("concept")  # both scripts' pairs carry the removed concept
    assert all(efficacy[alike.strengths.index(1.0)] > 0.9 for _, _, efficacy in alike.removed_by_script)
    assert alike.script_warning() == "" and "removed by script at 1.00: Latin" in alike.table()


def test_pairs_in_one_script_get_no_breakdown_and_scripts_must_match_the_pairs():
    model = Toy()
    _, basis = fitted(model)
    _, unsafe, safe, benign = world(1)
    pairs = list(zip(unsafe, safe))
    with torch.no_grad():
        untold = run_check(model, forward_for(model), basis, pairs, list(benign), "0, 1", target="zero")
        one = run_check(model, forward_for(model), basis, pairs, list(benign), "0, 1", target="zero",
                        scripts=["Latin"] * len(pairs))
        told = run_check(model, forward_for(model), basis, pairs, list(benign), "0, 1", target="zero",
                         scripts=["Latin"] * 4 + ["Greek"] * 2)
        with pytest.raises(ValueError, match="scripts names 2 scripts for 6 validation pairs"):
            run_check(model, forward_for(model), basis, pairs, list(benign), "0, 1", scripts=["Latin", "Greek"])
    for result in (untold, one):  # tensors carry no script; one script has nothing to compare
        assert result.removed_by_script == () and "removed by script" not in result.table()
        assert result.as_dict()["removed_by_script"] == []
    assert [(script, pairs) for script, pairs, _ in told.removed_by_script] == [("Latin", 4), ("Greek", 2)]
    assert told.efficacy == one.efficacy and told.recommended == one.recommended  # the recommendation is pooled
