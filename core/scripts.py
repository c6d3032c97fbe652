"""The script (writing system) a prompt pair is written in, so that Unlearning Check can report removal per script.

A vector estimated from pairs in one script may not remove the concept written in another (the text encoder reads
it through other tokens), and pooled over every validation pair a script's few pairs hide in the others' share.
Languages that share a script (English and French: Latin) are one group: the text alone cannot tell them apart.

Read from the Unicode names of a text's letters (:func:`unicodedata.name`), after NFKC as the tokenizers fold it
(full-width ``Ｒｏｌｅｘ`` is Latin). Digits, punctuation, symbols, emoji and combining marks are ignored.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

LATIN = "Latin"
#: Kana present, with or without Chinese characters: Japanese writing mixes both.
JAPANESE = "Japanese"
#: A pair with no letter at all (digits, emoji): it still gets a group, so no pair is left out of the breakdown.
NO_LETTERS = "no letters"
#: Unicode name's first word -> script, where that word is not the script's name; other names give their first word
#: capitalised (``CYRILLIC SMALL LETTER A`` -> Cyrillic, ``THAI CHARACTER KO KAI`` -> Thai).
_NAMED = {"CJK": "Han", "HIRAGANA": JAPANESE, "KATAKANA": JAPANESE, "KATAKANA-HIRAGANA": JAPANESE}
#: Letters that belong to no one script (``MODIFIER LETTER APOSTROPHE``).
_NO_SCRIPT = {"MODIFIER"}


def letter_scripts(text: str) -> Counter:
    """How many letters of ``text`` each script holds (NFKC-folded first; non-letters ignored)."""
    counts = Counter()
    for character in unicodedata.normalize("NFKC", text):
        if not unicodedata.category(character).startswith("L"):
            continue
        word = unicodedata.name(character, "").split(" ")[0]
        if word and word not in _NO_SCRIPT:
            counts[_NAMED.get(word, word.capitalize())] += 1
    return counts


def text_script(text: str) -> str:
    """The script ``text`` is written in: Japanese when it holds kana; else the non-Latin script with most letters (a
    Latin brand name in a Chinese sentence leaves it Han); else Latin; :data:`NO_LETTERS` when it has none."""
    counts = letter_scripts(text)
    if counts[JAPANESE]:
        return JAPANESE
    others = [(-count, script) for script, count in counts.items() if script != LATIN]
    if others:
        return min(others)[1]  # ties: the script name first in alphabetical order, so the choice is repeatable
    return LATIN if counts[LATIN] else NO_LETTERS


def pair_script(unsafe: str, safe: str) -> str:
    """The script of a pair, read from both sides together (:func:`text_script`)."""
    return text_script(f"{unsafe}\n{safe}")


def script_groups(scripts) -> dict[str, list[int]]:
    """``{script: indices of the pairs written in it}`` for one script name per pair, the largest group first (ties
    in order of first appearance)."""
    groups: dict[str, list[int]] = {}
    for index, script in enumerate(scripts):
        groups.setdefault(script, []).append(index)
    return dict(sorted(groups.items(), key=lambda item: -len(item[1])))
