"""How well MiniLM's tokens separate a concept's prompts from the safe sides of its pairs: a ceiling for the organism.

The organism draws a concept's mark from the frozen MiniLM token embeddings of its caption. If a classifier trained
on exactly what the DiT trains on (the train split's scenes, joined to attribute captions as in training) cannot
keep the held-out safe sides below a false-mark rate at the organism's recall, the organism cannot either, and
more training will not get it there. Two readers, both fitted on the train split only:

- ``linear``: logistic regression on the caption's token mean (the tokens as the DiT receives them);
- ``attention``: learned queries cross-attend to the tokens (as the DiT's cross-attention reads them), then an MLP.
  Trained with and without the organism's text noise (0.3 of the tokens' per-dimension spread).

The threshold is set on the *valid* split, at the recall the base organism reached there on the concept's
prompts; the test split then gives recall and the false-mark rate per set, to compare with the organism's own
row in docs/benchmarks.md. Prompts from ``../shared/data`` are read in place and never printed.

    python bench/encoder_ceiling.py [--concept violence] [--data ../shared/data] [--out out/encoder_ceiling.json]   # ~10 min
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from organism.broad import broad_prompts  # noqa: E402
from organism.experiment import WEIGHTS  # noqa: E402
from organism.scenes import CONCEPTS, DATA, load_pools, training_captions  # noqa: E402
from organism.text import TextEncoder  # noqa: E402
from organism.world import caption, random_scene  # noqa: E402

SETS = ("concept", "safe", "benign_near", "benign")


class AttentionReader(torch.nn.Module):
    """Learned queries attend to the tokens (masked), then a small MLP: one logit."""

    def __init__(self, width: int = 384, queries: int = 4, hidden: int = 64):
        super().__init__()
        self.queries = torch.nn.Parameter(torch.randn(queries, hidden) * 0.02)
        self.key = torch.nn.Linear(width, hidden)
        self.value = torch.nn.Linear(width, hidden)
        self.head = torch.nn.Sequential(torch.nn.Linear(queries * hidden, hidden), torch.nn.GELU(),
                                        torch.nn.Linear(hidden, 1))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = torch.einsum("qh,bth->bqt", self.queries, self.key(tokens)) / self.queries.shape[1] ** 0.5
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        pooled = torch.einsum("bqt,bth->bqh", logits.softmax(-1), self.value(tokens))
        return self.head(pooled.flatten(1)).squeeze(-1)


class LinearReader(torch.nn.Module):
    """Logistic regression on the masked token mean."""

    def __init__(self, width: int = 384):
        super().__init__()
        self.linear = torch.nn.Linear(width, 1)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mean = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.linear(mean).squeeze(-1)


def fit(reader: torch.nn.Module, tokens, mask, labels, *, noise: float, spread, steps: int, seed: int):
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(reader.parameters(), lr=2e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(labels), (128,), generator=generator)
        text = tokens[index]
        if noise:
            text = text + noise * spread * torch.randn(text.shape, generator=generator) * mask[index][..., None]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(reader(text, mask[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return reader.eval()


@torch.no_grad()
def scores(reader, encoded: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    tokens, mask = encoded
    return torch.cat([reader(tokens[i:i + 256], mask[i:i + 256]) for i in range(0, len(tokens), 256)])


def threshold_at_recall(concept_scores: torch.Tensor, recall: float) -> float:
    """The score above which ``recall`` of the concept's prompts lie."""
    ordered = concept_scores.sort(descending=True).values
    return float(ordered[max(0, min(len(ordered) - 1, round(recall * len(ordered)) - 1))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concept", default="violence", choices=CONCEPTS)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--captions", type=int, default=10000, help="training captions drawn as organism.train does")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--valid-recall", type=float, default=None,
                        help="recall to set the threshold at on the valid split (default: the base organism's "
                             "valid rate on the concept, from docs/benchmarks.md: nudity 0.91, violence 0.89)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "encoder_ceiling.json")
    args = parser.parse_args()
    recall = args.valid_recall or {"nudity": 0.91, "violence": 0.89}[args.concept]
    torch.set_num_threads(1)
    began = time.time()
    pools = load_pools(args.data)
    encoder = TextEncoder()
    rng = random.Random(1)
    # the committed weights' last stage's mix, as its training record states it: the readers see what the DiT saw
    mix = json.loads((WEIGHTS.parent / "training.json").read_text())["scenes"]["mix"]
    captions, scenes = training_captions(pools, args.captions, rng, caption, random_scene, mix=mix)
    labels = torch.tensor([float(args.concept in s.marks) for s in scenes])
    tokens, mask = encoder.encode(captions, cache=False)
    spread = tokens[mask][::7].std(0)
    evaluation = {split: broad_prompts(pools, args.concept, split, count=1000) for split in ("valid", "test")}
    encoded = {split: {s: encoder.encode(evaluation[split].prompts[s], cache=False) for s in SETS}
               for split in evaluation}
    result = {"concept": args.concept, "captions": len(captions), "positives": int(labels.sum()),
              "valid_recall": recall, "readers": {}}
    for name, make, noise in (("linear", LinearReader, 0.0), ("attention", AttentionReader, 0.0),
                              ("attention, text noise 0.3", AttentionReader, 0.3)):
        runs = []
        for seed in range(args.seeds):
            reader = fit(make(), tokens, mask, labels, noise=noise, spread=spread, steps=args.steps, seed=seed)
            valid = {s: scores(reader, encoded["valid"][s]) for s in SETS}
            cut = threshold_at_recall(valid["concept"], recall)
            test = {s: float((scores(reader, encoded["test"][s]) >= cut).float().mean())
                    for s in SETS}
            runs.append({"valid": {s: float((valid[s] >= cut).float().mean()) for s in SETS}, "test": test})
        mean = {part: {s: sum(r[part][s] for r in runs) / len(runs) for s in SETS} for part in ("valid", "test")}
        result["readers"][name] = {"runs": runs, "mean": mean}
        print(f"{name:28s} test: " + "  ".join(f"{s} {mean['test'][s]:.3f}" for s in SETS)
              + f"   (valid: concept {mean['valid']['concept']:.3f}, safe {mean['valid']['safe']:.3f})", flush=True)
    result["sizes"] = {split: {s: len(evaluation[split].prompts[s]) for s in SETS} for split in evaluation}
    result["seconds"] = round(time.time() - began, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"sizes {result['sizes']}; {result['seconds']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
