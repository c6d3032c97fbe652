"""Prompt pairs that differ only by the concept to forget.

The text format is the one a person types into a ComfyUI text box: one pair per line,
``unsafe prompt | safe prompt``. Blank lines and lines starting with ``#`` are ignored, so a pair
file can carry comments. Errors name the line number, because that is what a person fixes.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

#: The paper measures its refusal vector from this many pairs; fewer still works but is noisier.
RECOMMENDED_PAIRS = 5
MIN_PAIRS = 2
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

#: Everyday prompts whose activations vary in ways unrelated to any concept one would erase.
#: The contrastive step (cPCA) subtracts their covariance so that this ordinary variation is not
#: mistaken for the concept.
DEFAULT_NEUTRAL_PROMPTS: tuple[str, ...] = (
    "a dog running on a beach",
    "a tree swaying in the wind",
    "a cup of coffee on a wooden table",
    "a city street at night with cars passing",
    "a cat sleeping on a sofa",
    "waves crashing on rocks",
    "a person walking in a park",
    "a red car driving on a highway",
    "a bowl of fruit in a kitchen",
    "clouds moving over mountains",
    "a child playing with a ball",
    "a bird flying over a lake",
    "a train arriving at a station",
    "a chef cooking in a restaurant kitchen",
    "rain falling on a window",
    "a horse galloping in a field",
    "an old man reading a newspaper",
    "fireworks over a river",
    "a woman riding a bicycle",
    "snow falling in a forest",
)


class PairsError(ValueError):
    """A pairs text that cannot be used; ``line`` is 1-based, or None for whole-text problems."""

    def __init__(self, reason: str, line: int | None = None):
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


class FewPairsWarning(UserWarning):
    """Fewer pairs than the paper's five: the refusal vector will be noisier."""


class SwappedSidesWarning(UserWarning):
    """A pair whose safe (right) side holds every word of its unsafe (left) side and more: written ``safe |
    unsafe``, the way round that makes target ``safe_mean`` move every prompt toward the concept."""


class NearDuplicateWarning(UserWarning):
    """A pair that repeats an earlier one up to punctuation: it adds no new wording of the concept, and five such
    copies made the score chart read its highest separation (55 against 15 for five distinct pairs) for a vector
    that removed less."""


class UnknownTokenWarning(UserWarning):
    """A pair whose sides differ, as its text encoder reads them, only by the tokenizer's unknown token (the concept is
    written in characters its vocabulary lacks): the pair measures that token, which every unreadable text shares,
    and not the concept."""


class InlineHashWarning(UserWarning):
    """A ``#`` inside a pair line: only a line that starts with ``#`` is a comment, so a note after a pair would be
    encoded as part of its safe prompt."""


def _spacing(text: str) -> str:
    """``text`` with every run of whitespace (no-break spaces included) as one space."""
    return " ".join(text.split())


#: How a prompt stored as its digest starts (see :func:`prompt_digest`).
DIGEST_PREFIX = "sha256:"


def prompt_digest(text: str) -> str:
    """``sha256:<hex>`` of a prompt compared case- and spacing-insensitively: what a saved vector may hold instead of
    its pairs' text (a file shared without the prompts, which for some concepts are explicit), still enough to tell
    whether a validation pair is one of them. A prompt that already is a digest is returned as it is."""
    if text.startswith(DIGEST_PREFIX):
        return text
    return DIGEST_PREFIX + hashlib.sha256(_spacing(text).casefold().encode("utf-8")).hexdigest()


def exact_digest(prompts) -> str:
    """``sha256:<hex>`` of prompts exactly as the text encoder read them, in order, case and spacing included:
    ``prompts`` is a list of strings (neutral prompts) or of ``(unsafe, safe)`` pairs.

    :func:`prompt_digest` folds case and spacing (so Unlearning Check can tell a validation pair that is one of the
    vector's), but the encoder reads case: "a ROLEX" and "a Rolex" give other vectors under one folded digest. This
    one lets an auditor confirm the exact text. To recompute it from a pairs text (in Python, with this pack)::

        exact_digest([(p.unsafe, p.safe) for p in parse_pairs(text)])   # or parse_prompts(text) for the neutral ones

    which is the SHA-256 of ``json.dumps([["unsafe", "safe"], ...], ensure_ascii=False, separators=(",", ":"))``
    encoded as UTF-8 (a list of strings for neutral prompts)."""
    rows = [[str(side) for side in item] if isinstance(item, (tuple, list)) else str(item) for item in prompts]
    text = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    return DIGEST_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PromptPair:
    """One pair: ``unsafe`` shows the concept, ``safe`` is the same prompt without it."""

    unsafe: str
    safe: str
    line: int = 0


#: Most characters of a line an error quotes (the editor checks the text as it is typed; a pasted file can be one
#: line of megabytes).
QUOTED = 80


def _quoted(text: str) -> str:
    return repr(text) if len(text) <= QUOTED else f"{text[:QUOTED]!r}... ({len(text)} characters)"


def content_lines(text: str):
    r"""(line number, stripped line) of the content lines. One leading byte-order mark (U+FEFF, which some editors
    write first) is dropped, so a first-line ``#`` comment stays a comment; lines end at ``\r\n``, ``\r`` or
    ``\n`` only, as an editor numbers them (``str.splitlines`` also splits at NEL, form feed, vertical tab and
    U+2028/2029, which cut a prompt in two and shift every later line number)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def parse_pairs(text: str, *, warn: Callable[[str, type[Warning]], None] | None = None) -> list[PromptPair]:
    """Parse ``unsafe | safe`` lines into pairs.

    Args:
        text: the pairs text. Each content line holds exactly one ``|``.
        warn: called with each warning's message and category instead of ``warnings.warn``: how a caller that may run
            beside others (the editor's check, in a worker thread) collects them, since ``warnings.catch_warnings``
            swaps the process's warning state and is not thread-safe (concurrent checks left later warnings
            swallowed).

    Raises:
        PairsError: naming the line of the first problem (no or several ``|``, an empty side,
            identical sides, a duplicate pair) or, without a line, fewer than 2 pairs.
        TypeError: when ``text`` is not a string.

    Warns:
        FewPairsWarning: below 5 pairs.
        InlineHashWarning: a ``#`` inside a pair line.
        NearDuplicateWarning: a pair that repeats an earlier one up to punctuation.
        SwappedSidesWarning: a pair whose safe side holds every word of its unsafe side and more ("a watch | a Rolex
            watch"): the concept is written on the wrong side.
    """
    if not isinstance(text, str):
        raise TypeError(f"pairs text must be a str, got {type(text).__name__}")
    if warn is None:
        def warn(message: str, category: type[Warning]) -> None:
            warnings.warn(message, category, stacklevel=3)  # at parse_pairs' caller
    pairs: list[PromptPair] = []
    seen: dict[tuple[str, str], int] = {}
    loosely_seen: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = {}
    for number, line in content_lines(text):
        bars = line.count("|")
        if bars != 1:
            lookalike = next((c for c in line if c in BAR_LOOKALIKES), None) if bars == 0 else None
            hint = (f" ({lookalike!r}, U+{ord(lookalike):04X}, only looks like '|': type the ASCII '|', e.g. with the "
                    "input method in half-width mode)") if lookalike else ""
            raise PairsError(
                f"expected exactly one '|' between the unsafe and the safe prompt, found {bars}{hint}: "
                f"{_quoted(line)}",
                number,
            )
        unsafe, safe = (side.strip() for side in line.split("|"))
        if not unsafe or not safe:
            side = "unsafe (left)" if not unsafe else "safe (right)"
            raise PairsError(f"the {side} prompt is empty; write 'unsafe prompt | safe prompt'", number)
        if unsafe == safe:
            raise PairsError(
                f"both sides are {_quoted(unsafe)}; the unsafe prompt must add the concept to the safe one", number
            )
        # The tokenizer reads a doubled or no-break space as a token of its own: such a pair measures the spacing.
        if _spacing(unsafe) == _spacing(safe):
            raise PairsError(f"the sides differ only in spacing ({_quoted(unsafe)}); the unsafe prompt must add the "
                             "concept to the safe one", number)
        key = (_spacing(unsafe).casefold(), _spacing(safe).casefold())  # as Unlearning Check compares pairs
        if key in seen:
            raise PairsError(f"duplicate of the pair on line {seen[key]} (ignoring case and spacing); remove one of "
                             "them", number)
        seen[key] = number
        loose = tuple(_words_in_order(side) for side in key)
        if loose in loosely_seen:
            warn(f"line {number}: repeats the pair on line {loosely_seen[loose]} up to punctuation, which adds no new "
                 "wording of the concept; write another pair", NearDuplicateWarning)
        loosely_seen.setdefault(loose, number)
        if "#" in line:
            warn(f"line {number}: '#' is part of the prompt there; only a line that starts with '#' is a comment, "
                 "so put a note on its own line", InlineHashWarning)
        if _words(unsafe) < _words(safe) and not _negates_the_unsafe_side(unsafe, safe):
            warn(f"line {number}: the safe (right) side holds every word of the unsafe (left) side and adds "
                 f"{_quoted(_joined(_added_words(unsafe, safe)))}: is the concept on the right? Write "
                 "'unsafe | safe', the concept on the left: a vector from swapped sides adds the concept to every "
                 "prompt (target safe_mean)", SwappedSidesWarning)
        pairs.append(PromptPair(unsafe=unsafe, safe=safe, line=number))
    if len(pairs) < MIN_PAIRS:
        raise PairsError(
            f"found {len(pairs)} pair(s); at least {MIN_PAIRS} are needed and {RECOMMENDED_PAIRS} are "
            "recommended, one 'unsafe prompt | safe prompt' per line"
        )
    if len(pairs) < RECOMMENDED_PAIRS:
        warn(f"only {len(pairs)} pairs; the paper uses {RECOMMENDED_PAIRS}, fewer give a noisier refusal vector",
             FewPairsWarning)
    return pairs


#: Words that can make a safe side longer than its unsafe side the right way round, when what they negate is a word
#: of the unsafe side ("a watch that is not a Rolex", "a man holding no gun"); "a woman without clothes" adds the
#: concept and is still warned about. Chinese: 不 (not), 没 (not have), 无 (without), 非 (non-); Korean, before the
#: verb it negates: 안 (not), 못 (cannot), as in "피 안 묻은 칼" (a knife with no blood on it).
NEGATIONS = frozenset({"no", "not", "without", "non", "never", "nor", "neither", "isn", "doesn", "don", "aren", "wasn",
                       "不", "没", "无", "非", "안", "못"})
#: Skipped between a negation and the word it negates (是 and 有 make 不是 "is not" and 没有 "has no"). Chinese counts
#: where English has an article: 一 and a measure word ("不是一块劳力士": is not a Rolex), 任何 (any).
_FILLERS = frozenset({"a", "an", "the", "any", "t", "s", "是", "有", "一", "个", "块", "只", "把", "件", "条", "张",
                      "辆", "位", "支", "瓶", "任", "何"})
#: Characters that look like '|' and are not it: a Chinese or Japanese input method in full-width mode types '｜'.
BAR_LOOKALIKES = "\uff5c\u2502\u2223\u00a6"
#: Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, Japanese kana, Chinese characters (the
#: CJK blocks and their extensions). Each of their characters counts as a word, so that the swapped-sides and
#: near-duplicate checks see what a pair adds: read as runs of letters, "桌子上的一块手表 | 桌子上的一块劳力士手表"
#: was two different words and passed unwarned. The katakana middle dot (U+30FB) between a name's words is punctuation.
_UNSPACED = ("\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30fa\u30fc-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
             "\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f")
_WORD = re.compile(f"[{_UNSPACED}]|[^\\W{_UNSPACED}]+")
_UNSPACED_CHARACTER = re.compile(f"[{_UNSPACED}]")


def _negates_the_unsafe_side(unsafe: str, safe: str) -> bool:
    """Whether ``safe`` negates a word of ``unsafe``: a negation whose next word (articles skipped) is one of
    ``unsafe``'s words."""
    words, held = _words_in_order(safe), _words(unsafe)
    for index, word in enumerate(words):
        if word in NEGATIONS:
            following = [w for w in words[index + 1:] if w not in _FILLERS]
            if following and following[0] in held:
                return True
    return False


def _words_in_order(prompt: str) -> tuple[str, ...]:
    # NFKC: full-width letters ("Ｒｏｌｅｘ") read as the plain ones, as the text encoders' tokenizers normalise them
    return tuple(_WORD.findall(unicodedata.normalize("NFKC", prompt).casefold()))


def _words(prompt: str) -> frozenset[str]:
    return frozenset(_words_in_order(prompt))


def _added_words(unsafe: str, safe: str) -> list[str]:
    """The words of ``safe`` that ``unsafe`` lacks, in their order, once each."""
    held = _words(unsafe)
    return list(dict.fromkeys(w for w in _words_in_order(safe) if w not in held))


def _joined(words: list[str]) -> str:
    """``words`` as a phrase: spaces between words, none between two characters of a script written without them."""
    text = ""
    for word in words:
        if text and not (_UNSPACED_CHARACTER.fullmatch(word) and _UNSPACED_CHARACTER.fullmatch(text[-1])):
            text += " "
        text += word
    return text


def check_pairs(text: str) -> dict:
    """Validate a pairs text without raising: ``{"count", "error", "line", "warning"}``.

    ``count`` is the number of valid pairs before the first problem, so an editor can show
    progress while a person types.
    """
    if not isinstance(text, str):
        return {"count": 0, "error": f"pairs text must be a string, got {type(text).__name__}", "line": None,
                "warning": None}
    caught: list[str] = []
    try:
        pairs = parse_pairs(text, warn=lambda message, _category: caught.append(message))
    except PairsError as error:
        count = sum(1 for number, _ in content_lines(text) if error.line is None or number < error.line)
        return {"count": count, "error": error.reason, "line": error.line, "warning": None}
    return {"count": len(pairs), "error": None, "line": None, "warning": caught[0] if caught else None}


def parse_prompts(text: str) -> list[str]:
    """One prompt per line; blank lines and ``#`` comments ignored; duplicates dropped in order.

    Raises:
        PairsError: naming a line that holds ``|``: a pair pasted among single prompts would put the concept into
            the prompts that stand for everything else.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompts text must be a str, got {type(text).__name__}")
    prompts = []
    for number, line in content_lines(text):
        if "|" in line:
            raise PairsError(f"{_quoted(line)} holds '|': these prompts are one per line and must not show the "
                             "concept; pairs go to the pairs input", number)
        prompts.append(line)
    return list(dict.fromkeys(prompts))


#: What :func:`unread_difference` finds when only the unknown token tells a pair's sides apart.
ADDS_ONLY_UNKNOWN, DIFFERS_ONLY_BY_UNKNOWN = "adds only unknown", "differs only by unknown"
#: Most runs of unread characters a warning names.
NAMED_RUNS = 5


def unread_difference(unsafe: Sequence[int], safe: Sequence[int], unknown: int,
                      blank: Collection[int] = ()) -> str | None:
    """How a pair's sides differ when nothing but the tokenizer's unknown token tells them apart.

    Args:
        unsafe, safe: the token ids of each side's own text, in order (no start, end or padding token).
        unknown: the tokenizer's unknown token.
        blank: tokens that hold no text of their own (SentencePiece's bare word boundary '▁', which goes before a run
            it reads as unknown: ComfyUI's T5 tokenizer reads 'a 劳力士 watch' as '▁ a ▁ <unk> ▁watch'); they tell
            nothing apart.

    Returns:
        :data:`ADDS_ONLY_UNKNOWN` when every token the unsafe side adds (counted: a second unknown token is one) is
        the unknown token; :data:`DIFFERS_ONLY_BY_UNKNOWN` when the sides are one sequence once their unknown tokens
        are dropped; None when a token the encoder reads tells them apart, or when neither side holds the unknown
        token.
    """
    if list(unsafe) == list(safe) or (unknown not in unsafe and unknown not in safe):
        return None
    added = Counter(t for t in unsafe if t not in blank) - Counter(t for t in safe if t not in blank)
    if added and set(added) == {unknown}:
        return ADDS_ONLY_UNKNOWN
    if _read(unsafe, unknown, blank) == _read(safe, unknown, blank):
        return DIFFERS_ONLY_BY_UNKNOWN
    return None


def reads_only_unknown(ids: Sequence[int], unknown: int, blank: Collection[int] = ()) -> bool:
    """Whether a prompt's token ids (its own text's) hold the unknown token and nothing else the encoder reads."""
    return unknown in ids and not _read(ids, unknown, blank)


def _read(ids: Sequence[int], unknown: int, blank: Collection[int]) -> list[int]:
    return [t for t in ids if t != unknown and t not in blank]


def unread_runs(text: str, unreadable: Callable[[str], bool]) -> list[str]:
    """The runs of consecutive characters of ``text`` that ``unreadable`` says the tokenizer has no token for (never
    whitespace), once each, in order."""
    runs, run = [], ""
    for character in text + " ":
        if not character.isspace() and unreadable(character):
            run += character
        elif run:
            runs.append(run)
            run = ""
    return list(dict.fromkeys(runs))


def unread_pair_message(line: int, difference: str, runs: list[str]) -> str:
    """The warning for a pair that :func:`unread_difference` found told apart only by the unknown token; ``runs``:
    the characters its tokenizer did not read that tell the sides apart (:func:`unread_runs`)."""
    what = ("what the unsafe (left) side adds reaches the text encoder only as its unknown token"
            if difference == ADDS_ONLY_UNKNOWN else
            "the sides differ, as the text encoder reads them, only by its unknown token")
    return (f"line {line}: {what}: its tokenizer has no token for {_named(runs)}, so the pair measures the unknown "
            "token, which every unreadable text shares, and not the concept. Write the concept in words this text "
            "encoder reads, in a language its tokenizer covers")


def unread_prompts_message(prompts: list[str], total: int) -> str:
    """The warning for neutral prompts that :func:`reads_only_unknown` found unread."""
    shown = ", ".join(_quoted(prompt) for prompt in prompts[:NAMED_RUNS])
    more = f" and {len(prompts) - NAMED_RUNS} more" if len(prompts) > NAMED_RUNS else ""
    return (f"neutral_prompts: {len(prompts)} of the {total} prompts reach the text encoder as nothing but its "
            f"unknown token ({shown}{more}): they add no everyday variation for the contrast to subtract, and read "
            "alike. Write them in words this text encoder reads, in a language its tokenizer covers")


def _named(runs: list[str]) -> str:
    if not runs:
        return "some of their characters"
    shown = ", ".join(_quoted(run) for run in runs[:NAMED_RUNS])
    return shown + (f" and {len(runs) - NAMED_RUNS} more" if len(runs) > NAMED_RUNS else "")
