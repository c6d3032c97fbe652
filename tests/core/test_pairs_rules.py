"""Boundaries of core.pairs' rules that test_pairs.py leaves open (found by mutation testing: each test here fails on
a small change of core/pairs.py that every earlier test let pass)."""

import hashlib
import warnings

import pytest

from core.pairs import FewPairsWarning, SwappedSidesWarning, exact_digest, parse_pairs


def _pairs(count):
    return "\n".join(f"a Rolex watch {i} | a watch {i}" for i in range(count))


def test_the_few_pairs_warning_stops_at_the_papers_five():
    with pytest.warns(FewPairsWarning, match="only 4 pairs; the paper uses 5"):
        parse_pairs(_pairs(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(parse_pairs(_pairs(5))) == 5


def test_sides_with_the_same_words_are_not_taken_for_swapped_ones():
    """The swapped-sides warning needs the safe side to hold every word of the unsafe side *and more*: sides with
    the same words in another order ("a dog bites a man | a man bites a dog") add nothing on the right."""
    text = _pairs(5) + "\na dog bites a man | a man bites a dog"
    with warnings.catch_warnings():
        warnings.simplefilter("error", SwappedSidesWarning)
        assert len(parse_pairs(text)) == 6
    with pytest.warns(SwappedSidesWarning, match="adds 'rolex'"):
        parse_pairs(_pairs(5) + "\na watch | a rolex watch")


def test_a_negation_followed_by_an_article_still_negates_the_unsafe_sides_word():
    """ "Rolex watch | watch that is not a Rolex": the safe side holds every word of the unsafe side and more, but
    negates "Rolex" (the article between is skipped), so it is the right way round."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SwappedSidesWarning)
        parse_pairs(_pairs(5) + "\nRolex watch | watch that is not a Rolex")


def test_the_exact_digest_is_the_documented_compact_json():
    """exact_digest's docstring: the SHA-256 of ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))``."""
    expected = hashlib.sha256('[["a Rolex","a watch"],["é","e"]]'.encode("utf-8")).hexdigest()
    assert exact_digest([("a Rolex", "a watch"), ("é", "e")]) == "sha256:" + expected
