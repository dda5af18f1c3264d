"""One batch of prompts for generation: the opening every prompt shares run once, then each row's own tokens
after masked padding, and the KV cache that batch fills (generate.py and greedy.py use them)."""

from __future__ import annotations

import inspect

import torch

from .kv_cache import GrowingCache, fits

# A shared prefix shorter than this is not worth a separate forward pass.
MIN_SHARED_PREFIX = 8


def batch_rows(rows: list[list[int]], pad_id: int, device, share: bool = True) -> dict:
    """One generation batch: the token prefix every row shares, then each row's padding, then its own tokens.

    Chat prompts share their template's opening (SmolLM2's default system prompt is ~25 of a general
    question's ~40 tokens), so the shared part is run once (:func:`prefix_cache`) instead of once per
    row. The padding sits between the shared part and each row's own tokens, masked out; positions come
    from the attention mask, so every row sees the positions it would see alone (left padding, the usual
    batching, is the case of an empty shared part).
    """
    shared = _shared_length(rows) if share else 0
    if shared < MIN_SHARED_PREFIX or len(rows) == 1:
        shared = 0
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, r in enumerate(rows):
        input_ids[row, :shared] = torch.tensor(r[:shared], dtype=torch.long)
        mask[row, :shared] = 1
        own = r[shared:]
        input_ids[row, width - len(own):] = torch.tensor(own, dtype=torch.long)
        mask[row, width - len(own):] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device),
            "prefix": input_ids[:1, :shared].to(device)}


def _shared_length(rows: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own to start generating."""
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n


def model_batch(model, rows: list[list[int]], pad_id: int, share: bool = True, grow: bool = True) -> dict:
    """Forward keywords for ``rows`` on ``model``'s device: :func:`batch_rows` with the shared opening already run
    into the KV cache (:func:`prefix_cache`)."""
    batch = batch_rows(rows, pad_id, next(model.parameters()).device, share=share)
    return batch | prefix_cache(model, batch.pop("prefix"), len(rows), grow)


def prefix_cache(model, prefix: torch.Tensor, batch_size: int, grow: bool = True) -> dict:
    """``generate``'s cache argument: the shared prefix's KV cache, computed once and repeated for every row
    (empty when there is no shared prefix)."""
    if prefix.shape[1] == 0:
        return {}
    out = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True, **new_cache(model, grow))
    name = cache_key(out)
    out[name].batch_repeat_interleave(batch_size)
    return {name: out[name]}


def new_cache(model, grow: bool = True) -> dict:
    """Forward keywords that make ``model`` fill a :class:`~smalltune.kv_cache.GrowingCache` where it fits, else
    none (the model makes its own cache)."""
    if not grow or not fits(model):
        return {}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values": GrowingCache()}


def cache_key(mapping) -> str:
    """The KV cache's name in a model output or in forward keywords: transformers renamed ``past_key_values``
    to ``cache`` during 5.x, and a model's forward takes it back under the name its output gave it."""
    return "cache" if "cache" in mapping else "past_key_values"
