"""What a CLIP's tokenizers make of a prompt, for Pair Encoder's unknown-token warnings.

A ``comfy.sd.CLIP`` holds its tokenizer as ``clip.tokenizer``; for every family the pack supports, that object holds
one ``comfy.sd1_clip.SDTokenizer`` per text encoder as an attribute (Wan: ``clip_umt5xxl``; LTX-Video, Mochi and
Cosmos: ``clip_t5xxl``; HunyuanVideo: ``clip_l`` and ``llama``). Read here of ComfyUI (0.3.64, as in earlier
releases):

- ``SDTokenizer.tokenize_with_weights(text, return_word_ids=True)``: batches of ``(token, weight, word id)``, word id
  0 for the start, end and padding tokens; an ``embedding:name`` gives vectors instead of ids.
- ``SDTokenizer.untokenize([(token, weight)])``: each token with its piece (the vocabulary's text for it).
- ``SDTokenizer.tokenizer``: the text tokenizer it wraps. A transformers tokenizer gives its unknown token as
  ``unk_token_id`` (the T5 of LTX-Video, Mochi and Cosmos: 2; None for one without); ComfyUI's ``SPieceTokenizer``
  (Wan's UMT5, whose SentencePiece model comes from the text-encoder file) wraps a ``SentencePieceProcessor`` as its
  ``.tokenizer``, whose ``unk_id()`` gives it. CLIP-L and HunyuanVideo's Llama 3 are byte-level BPE: every byte has a
  token, so no text reads as their unknown token and nothing is warned.

A CLIP whose tokenizer holds no SDTokenizer (another pack's encoder, a test's stand-in) is not checked.
"""

from __future__ import annotations

from comfy.sd1_clip import SDTokenizer
from comfy.text_encoders.spiece_tokenizer import SPieceTokenizer

from ..core.pairs import (
    PromptPair, reads_only_unknown, unread_difference, unread_pair_message, unread_prompts_message, unread_runs,
)

#: SentencePiece's word-boundary mark, which starts a piece that follows a space.
WORD_BOUNDARY = "\u2581"


class TokenReader:
    """One tokenizer of a CLIP that has an unknown token (``unknown``): the token ids of a text and which characters
    it has no token for."""

    def __init__(self, part: SDTokenizer, unknown: int):
        self.part, self.unknown = part, unknown
        self._unreadable: dict[str, bool] = {}

    def ids(self, text: str, **options) -> list[int]:
        """The ids of ``text``'s own tokens as the encoder receives them, in order: no start, end or padding token, no
        embedding's vectors."""
        return [item[0] for batch in self.part.tokenize_with_weights(text, return_word_ids=True, **options)
                for item in batch if item[2] != 0 and isinstance(item[0], int)]

    def blank(self, ids: list[int]) -> frozenset[int]:
        """Those of ``ids`` whose piece holds no text: whitespace and the word-boundary mark only."""
        return frozenset(token for (token, _weight), piece in self.part.untokenize([(t, 1.0) for t in set(ids)])
                         if not piece.replace(WORD_BOUNDARY, "").strip())

    def unreadable(self, character: str) -> bool:
        """Whether the tokenizer reads ``character`` as its unknown token (weights syntax off: '(' is a character)."""
        if character not in self._unreadable:
            self._unreadable[character] = self.unknown in self.ids(character, disable_weights=True)
        return self._unreadable[character]


def token_readers(clip) -> list[TokenReader]:
    """A :class:`TokenReader` for each tokenizer of ``clip`` that has an unknown token."""
    parts = getattr(getattr(clip, "tokenizer", None), "__dict__", {}).values()
    readers = []
    for part in parts:
        if isinstance(part, SDTokenizer):
            unknown = _unknown_id(part.tokenizer)
            if unknown is not None:
                readers.append(TokenReader(part, unknown))
    return readers


def _unknown_id(text_tokenizer) -> int | None:
    if isinstance(text_tokenizer, SPieceTokenizer):
        return text_tokenizer.tokenizer.unk_id()
    return getattr(text_tokenizer, "unk_token_id", None)  # transformers' tokenizers; None: it has none


def unknown_token_warnings(clip, pairs: tuple[PromptPair, ...], neutral: tuple[str, ...]) -> list[str]:
    """Pair Encoder's warnings for the pairs whose sides ``clip`` tells apart only by its unknown token (naming the
    line and the characters not read) and, in one warning, for the neutral prompts it reads as nothing but that
    token."""
    notes = []
    for reader in token_readers(clip):
        for pair in pairs:
            unsafe, safe = reader.ids(pair.unsafe), reader.ids(pair.safe)
            difference = unread_difference(unsafe, safe, reader.unknown, reader.blank(unsafe + safe))
            if difference is not None:
                notes.append(unread_pair_message(pair.line, difference, _telling_runs(reader, pair)))
        unread = []
        for prompt in neutral:
            ids = reader.ids(prompt)
            if reads_only_unknown(ids, reader.unknown, reader.blank(ids)):
                unread.append(prompt)
        if unread:
            notes.append(unread_prompts_message(unread, len(neutral)))
    return list(dict.fromkeys(notes))


def _telling_runs(reader: TokenReader, pair: PromptPair) -> list[str]:
    """The unread runs of characters that one side holds and the other does not; all of both sides' if none."""
    unsafe, safe = unread_runs(pair.unsafe, reader.unreadable), unread_runs(pair.safe, reader.unreadable)
    telling = [run for run in unsafe if run not in pair.safe] + [run for run in safe if run not in pair.unsafe]
    return telling or list(dict.fromkeys(unsafe + safe))
