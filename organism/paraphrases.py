"""Which held-out paraphrases the frozen text encoder itself understands.

    python -m organism.paraphrases

A held-out paraphrase tests whether the DiT generalises through the encoder's space. If MiniLM itself
places the phrase nearer another value's training words ("golden" sits nearest "bright blue"), no DiT
trained on top of it can be expected to follow it: such a phrase tests the 22M-parameter encoder, not
the organism. The rule, applied before the DiT is trained: the phrase's embedding must be nearest to its
own value's centroid of training-word embeddings, both for the phrase alone (mean-pooled) and for its
tokens inside a caption (contextual). This prints the verdict for every held-out and rejected phrase.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .text import TextEncoder
from .world import COLOURS, HELD_OUT_WORDS, MOTIONS, REJECTED_PARAPHRASES, SHAPES, TRAIN_WORDS

#: (values of one attribute, a caption with a slot for the phrase)
ATTRIBUTES = ((tuple(COLOURS), "a {} square moving left"), (SHAPES, "a red {} moving left"),
              (tuple(MOTIONS), "a red square {}"))


class PhraseEmbedder:
    def __init__(self, encoder: TextEncoder):
        self.tokenizer, self.transformer = encoder.tokenizer, encoder.transformer

    @torch.no_grad()
    def alone(self, phrases: list[str]) -> torch.Tensor:
        """Mean-pooled, normalised embeddings ``[n, 384]`` of each phrase on its own."""
        batch = self.tokenizer(phrases, padding=True, return_tensors="pt")
        hidden = self.transformer(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    @torch.no_grad()
    def in_caption(self, phrases: list[str], template: str) -> torch.Tensor:
        """Normalised mean of the phrase's own contextual tokens inside ``template`` ``[n, 384]``."""
        prefix = len(self.tokenizer(template.split("{}")[0].strip())["input_ids"]) - 1  # [CLS] + prefix words
        rows = []
        for phrase in phrases:
            batch = self.tokenizer([template.format(phrase)], return_tensors="pt")
            hidden = self.transformer(**batch).last_hidden_state[0]
            length = len(self.tokenizer(phrase)["input_ids"]) - 2
            rows.append(hidden[prefix:prefix + length].mean(0))
        return F.normalize(torch.stack(rows), dim=-1)


def nearest_values(embedder: PhraseEmbedder, values, template: str, phrases: list[str]) -> list[tuple[str, str]]:
    """For each phrase, the nearest value's name (alone, in a caption)."""
    verdicts = []
    for embed in (embedder.alone, lambda p: embedder.in_caption(p, template)):
        centroids = torch.stack([embed(TRAIN_WORDS[v]).mean(0) for v in values])
        verdicts.append([values[int(i)] for i in (embed(phrases) @ centroids.T).argmax(-1)])
    return list(zip(*verdicts))


def check(encoder: TextEncoder | None = None) -> dict[str, dict[str, tuple[str, str]]]:
    """``{"held_out" | "rejected": {phrase: (nearest alone, nearest in a caption)}}`` with the intended value."""
    embedder = PhraseEmbedder(encoder or TextEncoder())
    report: dict[str, dict[str, tuple[str, str]]] = {"held_out": {}, "rejected": {}}
    for values, template in ATTRIBUTES:
        for kind, bank in (("held_out", HELD_OUT_WORDS), ("rejected", REJECTED_PARAPHRASES)):
            phrases = [(v, p) for v in values for p in bank.get(v, [])]
            if phrases:
                for (value, phrase), near in zip(phrases, nearest_values(embedder, values, template, [p for _, p in phrases])):
                    report[kind][phrase] = (value, *near)
    return report


def main() -> None:
    report = check()
    for kind, rows in report.items():
        print(f"{kind}: phrase -> intended / nearest alone / nearest in a caption")
        for phrase, (value, alone, in_caption) in rows.items():
            mark = "ok" if value == alone == in_caption else "misplaced"
            print(f"  {phrase:<22} {value:<9} {alone:<9} {in_caption:<9} {mark}")


if __name__ == "__main__":
    main()
