"""One batch of prompts for generation: the opening every prompt shares run once, then each row's own tokens
after masked padding, and the KV cache that batch fills (generate.py and greedy.py use them)."""

from __future__ import annotations

import copy
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


def by_opening(rows: list[list[int]]) -> list[int]:
    """The order to batch ``rows`` in: prompts that open alike together, each such group by length.

    A batch runs the opening its rows share once (:func:`prefix_cache`), but only if they share it: sorted by length
    alone, an evaluation's task prompts (the run's system prompt) and general questions (the template's default
    one) interleave, and their chunks share 3-4 tokens, so every row ran its ~15-25-token system prompt itself.
    Rows in lexicographic order whose neighbours share at least :data:`MIN_SHARED_PREFIX` tokens form a group;
    within a group, similar lengths keep the padding small.
    """
    lexical = sorted(range(len(rows)), key=lambda i: rows[i])
    groups: list[list[int]] = []
    for before, i in zip([None, *lexical], lexical):
        if before is None or _common(rows[before], rows[i]) < MIN_SHARED_PREFIX:
            groups.append([])
        groups[-1].append(i)
    return [i for group in groups for i in sorted(group, key=lambda i: len(rows[i]))]


def _common(a: list[int], b: list[int]) -> int:
    """Tokens ``a`` and ``b`` start with alike."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _shared_length(rows: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own to start generating."""
    return min([min(len(r) for r in rows) - 1, *(_common(rows[0], r) for r in rows[1:])])


def model_batch(model, rows: list[list[int]], pad_id: int, share: bool = True, grow: bool = True,
                openings: dict | None = None) -> dict:
    """Forward keywords for ``rows`` on ``model``'s device: :func:`batch_rows` with the shared opening already run
    into the KV cache (:func:`prefix_cache`; ``openings`` keeps each opening's cache for the next batches)."""
    batch = batch_rows(rows, pad_id, next(model.parameters()).device, share=share)
    return batch | prefix_cache(model, batch.pop("prefix"), len(rows), grow, openings)


def prefix_cache(model, prefix: torch.Tensor, batch_size: int, grow: bool = True, openings: dict | None = None) -> dict:
    """``generate``'s cache argument: the shared prefix's KV cache, computed once and repeated for every row
    (empty when there is no shared prefix). With ``openings`` (one model, one pass: greedy's batches), a prefix
    computed for an earlier batch is copied instead of run again: the same keys and values."""
    if prefix.shape[1] == 0:
        return {}
    openings = {} if openings is None else openings
    key = tuple(prefix[0].tolist())
    if key not in openings:
        out = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True, **new_cache(model, grow))
        openings[key] = (cache_key(out), out[cache_key(out)])
    name, cache = openings[key]
    cache = copy.deepcopy(cache)  # repeating replaces its tensors; the kept one stays one row
    cache.batch_repeat_interleave(batch_size)
    return {name: cache}


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
