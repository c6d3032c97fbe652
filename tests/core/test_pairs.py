import warnings

import pytest

from core.pairs import (DEFAULT_NEUTRAL_PROMPTS, FewPairsWarning, InlineHashWarning, PairsError, PromptPair,
                        check_pairs, parse_pairs, parse_prompts)

FIVE = "\n".join(f"a Rolex watch {i} | a watch {i}" for i in range(5))


def test_parses_pairs_ignoring_blanks_and_comments():
    text = "# trademark\n\n" + FIVE + "\n   \n# end"
    pairs = parse_pairs(text)
    assert len(pairs) == 5
    assert pairs[0] == PromptPair("a Rolex watch 0", "a watch 0", line=3)


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("a | b\nno bar here\nc | d", 2, "exactly one '|'"),
        ("a | b\nx | y | z\nc | d", 2, "found 2"),
        ("a | b\n | safe\nc | d", 2, "unsafe (left) prompt is empty"),
        ("a | b\nunsafe | \nc | d", 2, "safe (right) prompt is empty"),
        ("a | b\nsame | same\nc | d", 3 - 1, "both sides"),
        ("a | b\nc | d\n\na | b", 4, "duplicate of the pair on line 1"),
        # the tokenizer reads a doubled or no-break space as a token: such a pair measures the spacing
        ("a | b\na watch on a  table | a watch on a table", 2, "differ only in spacing"),
        ("a | b\na\u00a0watch | a watch", 2, "differ only in spacing"),
        ("a Rolex watch | a watch\nA Rolex  watch | a watch", 2, "duplicate of the pair on line 1 (ignoring case"),
    ],
)
def test_bad_lines_name_their_line(text, line, fragment):
    with pytest.raises(PairsError) as info:
        parse_pairs(text)
    assert info.value.line == line
    assert fragment in str(info.value)
    assert f"line {line}" in str(info.value)


def test_too_few_pairs_is_an_error_and_below_five_a_warning():
    with pytest.raises(PairsError, match="at least 2"):
        parse_pairs("# only one\na | b")
    with pytest.warns(FewPairsWarning, match="only 3 pairs"):
        assert len(parse_pairs("a | b\nc | d\ne | f")) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_pairs(FIVE)


def test_type_error_for_non_text():
    with pytest.raises(TypeError):
        parse_pairs(None)


def test_check_pairs_reports_count_and_first_problem():
    assert check_pairs(FIVE) == {"count": 5, "error": None, "line": None, "warning": None}
    bad = check_pairs("a | b\nc | d\noops\ne | f")
    assert bad["count"] == 2 and bad["line"] == 3 and "exactly one" in bad["error"]
    few = check_pairs("a | b\nc | d")
    assert few["error"] is None and few["count"] == 2 and "only 2" in few["warning"]
    assert check_pairs("")["error"].startswith("found 0")


def test_parse_prompts_and_defaults():
    assert parse_prompts("# c\na dog\n\na cat\na dog") == ["a dog", "a cat"]
    assert len(DEFAULT_NEUTRAL_PROMPTS) >= 10
    assert len(set(DEFAULT_NEUTRAL_PROMPTS)) == len(DEFAULT_NEUTRAL_PROMPTS)


def test_a_byte_order_mark_and_unicode_line_separators_neither_join_nor_split_lines():
    # A leading BOM used to turn a first-line comment into a line without '|' and to stay, invisible, in the first
    # pair's unsafe prompt; NEL, U+2028, form feed and vertical tab split a line in two and shifted later numbers.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewPairsWarning)
        pairs = parse_pairs("\ufeff# my pairs\na rolex | a watch\nb rolex | b watch\n")
        assert [(p.unsafe, p.line) for p in pairs] == [("a rolex", 2), ("b rolex", 3)]
        assert parse_pairs("\ufeffa rolex | a watch\nb rolex | b watch")[0].unsafe == "a rolex"
        pairs = parse_pairs("a rolex\x85 watch | a watch\nx\u2028y | z\nb\x0bc | d\re | f\r\ng | h\n")
    assert [(p.unsafe, p.line) for p in pairs] == [("a rolex\x85 watch", 1), ("x\u2028y", 2), ("b\x0bc", 3),
                                                   ("e", 4), ("g", 5)]
    assert check_pairs("x | y\nz | w\n\x0c\nq | a | b\n")["line"] == 4
    assert parse_prompts("\ufeffa dog\n# a comment\na cat\u2029on a mat\n") == ["a dog", "a cat\u2029on a mat"]


def test_errors_quote_at_most_a_line_s_start():
    """A pasted file can be one line of megabytes: the error (shown in the editor as it is typed, and in ComfyUI's
    answer to a queued prompt) quotes its first 80 characters and says how long it is."""
    with pytest.raises(PairsError) as error:
        parse_pairs("x" * 5_000_000)
    assert len(str(error.value)) < 300 and "(5000000 characters)" in str(error.value)


def test_a_note_after_a_pair_is_flagged_as_part_of_the_prompt():
    text = FIVE + "\na Rolex clock | a clock   # from the catalogue"
    with pytest.warns(InlineHashWarning, match="line 6: '#' is part of the prompt"):
        assert parse_pairs(text)[-1].safe == "a clock   # from the catalogue"
    assert "'#' is part of the prompt" in check_pairs(text)["warning"]


def test_a_pair_pasted_among_single_prompts_is_refused_with_its_line():
    with pytest.raises(PairsError, match="holds '|'") as info:
        parse_prompts("a cat on a sofa\n\na Rolex watch on a wrist | a watch on a wrist")
    assert info.value.line == 3


def test_check_pairs_run_side_by_side_leaves_the_process_warning_state_alone():
    """The editor's pair check runs in worker threads, one request per Pair Encoder. ``warnings.catch_warnings``
    swaps the process's warning filters and handler and is not thread-safe: with 40 checks side by side, 2 of 20
    few-pairs texts lost their warning and the process kept an ``always`` filter and a recording handler, so every
    later warning went into a list no one reads. The check no longer touches that state."""
    from concurrent.futures import ThreadPoolExecutor

    long = " in a long street" * 200  # a longer parse widens the window in which two checks overlap
    few = f"a red car{long} | a car{long}\na red hat{long} | a hat{long}"
    enough = "\n".join(f"a red car number {i}{long} | a car number {i}{long}" for i in range(6))
    filters, handler = list(warnings.filters), warnings.showwarning
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(check_pairs, [few, enough] * 100))
    assert all(r["warning"] and "only 2 pairs" in r["warning"] for r in results[::2])
    assert all(r["warning"] is None and r["count"] == 6 for r in results[1::2])
    assert warnings.filters == filters and warnings.showwarning is handler
    with pytest.warns(FewPairsWarning):  # parse_pairs itself still warns as before
        parse_pairs(few)


def test_a_pair_with_the_concept_on_the_safe_side_is_warned_about_with_its_line():
    """"a watch | a Rolex watch" puts the concept on the right: with target safe_mean such a vector adds it."""
    from core.pairs import SwappedSidesWarning

    caught = []
    text = "a watch on a table | a Rolex watch on a table\n" + "\n".join(
        f"a Rolex watch {i} | a watch {i}" for i in range(5)) + "\na nude man | a clothed man"
    parse_pairs(text, warn=lambda message, category: caught.append((message, category)))
    assert [c for _, c in caught] == [SwappedSidesWarning]
    assert caught[0][0].startswith("line 1: the safe (right) side") and "'rolex'" in caught[0][0]
    assert "rolex" in check_pairs(text)["warning"]
    # A safe side that negates the concept is longer the right way round
    negated = "\n".join(f"a Rolex watch {i} | a watch {i} that is not a Rolex" for i in range(4)) + (
        "\na man holding a gun | a man holding no gun")
    quiet = []
    parse_pairs(negated, warn=lambda message, category: quiet.append(category))
    assert SwappedSidesWarning not in quiet
    # ... but a negation of something the unsafe side does not hold adds the concept: still warned about
    loud = []
    parse_pairs("\n".join(["a woman on a beach | a woman on a beach without clothes",
                           "a man on a street | a man on a street with no shirt on",
                           "a woman | a woman who is not wearing anything", "a man | a man in a blood soaked shirt",
                           "a knife | a knife with free flowing blood"]),
                warn=lambda message, category: loud.append(category))
    assert loud.count(SwappedSidesWarning) == 5


def test_a_pair_repeated_up_to_punctuation_is_warned_about():
    """Five copies of one pair with a full stop or an exclamation mark added passed as five pairs."""
    from core.pairs import NearDuplicateWarning

    caught = []
    text = "\n".join(["a Rolex watch | a watch", "a Rolex watch. | a watch.", "A Rolex watch! | a watch!",
                      "a Rolex-watch | a watch", "a gold Rolex | a gold watch"])
    parse_pairs(text, warn=lambda message, category: caught.append((message, category)))
    assert [c for _, c in caught] == [NearDuplicateWarning] * 3
    assert caught[0][0].startswith("line 2: repeats the pair on line 1 up to punctuation")
    assert caught[2][0].startswith("line 4: repeats the pair on line 1")


def test_pairs_in_scripts_written_without_spaces_are_checked_as_english_ones():
    """Chinese is written without spaces, so a sentence read as one word: a pair with the concept on the safe side,
    or one repeated up to punctuation, passed unwarned. Each such character is a word now; a safe side that negates
    the unsafe side's concept (不是, 没有) is the right way round, as "not a Rolex" is."""
    from core.pairs import NearDuplicateWarning, SwappedSidesWarning

    caught = []
    text = "\n".join(["桌子上的一块劳力士手表 | 桌子上的一块手表", "手腕上的一块手表 | 手腕上的一块劳力士手表",
                      "一块劳力士手表 | 一块不是劳力士的手表", "沙滩上的劳力士手表 | 沙滩上没有劳力士的手表",
                      "桌子上的，一块劳力士手表。| 桌子上的一块手表", "une montre | une montre Rolex à Genève"])
    parse_pairs(text, warn=lambda message, category: caught.append((message, category)))
    assert [(m.split(":")[0], c) for m, c in caught] == [("line 2", SwappedSidesWarning),
                                                         ("line 5", NearDuplicateWarning),
                                                         ("line 6", SwappedSidesWarning)]
    assert "adds '劳力士': is the concept on the right?" in caught[0][0]
    assert "adds 'rolex à genève': is the concept on the right?" in caught[2][0]


def test_a_negation_before_an_article_or_a_measure_word_or_korean_s_verb_is_a_negation():
    """Chinese counts with 一 and a measure word where English has "a" ("不是一块劳力士": is not a Rolex), and Korean
    negates a verb with 안 or 못 before it ("피 안 묻은 칼": a knife with no blood on it). Such a safe side, longer the
    right way round, was warned about as holding the concept on the right."""
    from core.pairs import SwappedSidesWarning

    caught = []
    text = "\n".join(["手腕上的劳力士 | 手腕上的表不是一块劳力士", "桌子上有枪 | 桌子上没有任何枪",
                      "沙滩上的劳力士手表 | 沙滩上的手表，不是任何一块劳力士", "피 묻은 칼 | 피 안 묻은 칼",
                      "총을 든 남자 | 총을 못 든 남자"])
    parse_pairs(text, warn=lambda message, category: caught.append((message, category)))
    assert [message for message, category in caught if category is SwappedSidesWarning] == []
    # a negation of something the unsafe side does not hold still adds the concept
    parse_pairs("\n".join(["手腕上的表 | 手腕上的表不是一块劳力士", "칼 | 피 안 묻은 칼", FIVE]),
                warn=lambda message, category: caught.append((message, category)))
    assert [message.split(":")[0] for message, category in caught if category is SwappedSidesWarning] == [
        "line 1", "line 2"]


def test_a_full_width_bar_is_named_as_what_it_is():
    """A Chinese or Japanese input method in full-width mode types '｜' (U+FF5C), which is not the separator: the error
    said only "found 0", which reads as if nothing were typed there."""
    result = check_pairs("桌子上的一块劳力士手表 ｜ 桌子上的一块手表\n手腕上的一块劳力士手表 | 手腕上的一块手表")
    assert result["line"] == 1 and result["error"] == (
        "expected exactly one '|' between the unsafe and the safe prompt, found 0 ('｜', U+FF5C, only looks like '|': "
        "type the ASCII '|', e.g. with the input method in half-width mode): '桌子上的一块劳力士手表 ｜ 桌子上的一块手表'")
    assert "looks like" not in check_pairs("a watch\nb | c")["error"]


def test_sides_told_apart_only_by_the_unknown_token_are_named_so():
    """Token ids as the original T5 tokenizer gives them (2: unknown, 3: the bare word boundary '▁', which goes
    before a run it reads as unknown): 'a 劳力士 watch' is 3 9 3 2 1605, 'a watch' 3 9 1605, 'a Rolex watch'
    3 9 2158 109 226 1605."""
    from core.pairs import ADDS_ONLY_UNKNOWN, DIFFERS_ONLY_BY_UNKNOWN, reads_only_unknown, unread_difference

    unknown, blank = 2, {3}
    watch, unread, rolex = [3, 9, 1605], [3, 9, 3, 2, 1605], [3, 9, 2158, 109, 226, 1605]
    assert unread_difference(unread, watch, unknown, blank) == ADDS_ONLY_UNKNOWN
    assert unread_difference(unread, watch, unknown) is None  # the boundary it adds is a token the model reads
    assert unread_difference(unread, [3, 9, 1370, 1605], unknown, blank) == ADDS_ONLY_UNKNOWN  # safe: 'a gold watch'
    assert unread_difference(unread, [3, 9, 1605, 3, 2], unknown, blank) == DIFFERS_ONLY_BY_UNKNOWN  # 'a watch 手表'
    assert unread_difference(watch, unread, unknown, blank) == DIFFERS_ONLY_BY_UNKNOWN  # the unknown on the right
    assert unread_difference(rolex, watch, unknown, blank) is None
    assert unread_difference(rolex + [3, 2], watch + [3, 2], unknown, blank) is None  # readable, mixed with unread
    assert unread_difference(rolex[:5] + [3, 2, 1605], watch, unknown, blank) is None  # 'a Rolex 劳力士 watch'
    assert unread_difference(unread, unread, unknown, blank) is None  # one encoding: Pair Encoder's error
    assert reads_only_unknown([3, 2], unknown, blank) and not reads_only_unknown(unread, unknown, blank)
    assert not reads_only_unknown([3], unknown, blank)


def test_unread_characters_are_named_as_runs():
    from core.pairs import unread_pair_message, unread_runs

    unreadable = {"劳", "力", "士", "😀"}.__contains__
    assert unread_runs("a 劳力士 watch 😀 劳力士", unreadable) == ["劳力士", "😀"]
    assert unread_runs("a watch", unreadable) == []
    message = unread_pair_message(5, "adds only unknown", ["劳力士"])
    assert message.startswith("line 5: what the unsafe (left) side adds reaches the text encoder only as its unknown "
                              "token: its tokenizer has no token for '劳力士'")
    assert message.endswith("Write the concept in words this text encoder reads, in a language its tokenizer covers")
    assert "no token for 'a', 'b', 'c', 'd', 'e' and 2 more," in unread_pair_message(1, "", list("abcdefg"))


def test_full_width_letters_and_the_katakana_middle_dot_do_not_hide_a_repeated_pair():
    """The warnings read words as the text encoders normalise them: full-width letters (``Ｒｏｌｅｘ``, typed by an
    input method in full-width mode) are the plain ones (NFKC), and the katakana middle dot ``・`` between the words
    of a name is punctuation, not a word. Either hid a pair repeated up to punctuation."""
    from core.pairs import NearDuplicateWarning

    caught = []
    text = "\n".join(["a Rolex watch | a watch", "a Ｒｏｌｅｘ watch | a watch", "ロレックス・デイトナの時計 | 時計",
                      "ロレックスデイトナの時計 | 時計", "a gold Rolex | a gold watch"])
    parse_pairs(text, warn=lambda message, category: caught.append((message, category)))
    assert [(m.split(":")[0], c) for m, c in caught] == [("line 2", NearDuplicateWarning),
                                                         ("line 4", NearDuplicateWarning)]
