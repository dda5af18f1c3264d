"""Batched greedy generation with a KV cache, used by the demo and by evaluation.

Prompts are sorted by length and batched; in a batch, the tokens every prompt starts with (a chat
template's opening) are run once, and each row's own tokens are right-aligned after masked padding so
every row's next token sits in the last column (SmolLM2's pad token is its end token, so ids cannot
tell padding apart: the attention mask does). Greedy decoding drops a row from the batch when its
answer ends (``_greedy``). Answers are those of one prompt at a time (benchmarks/README.md, "The shared
opening run once": 200/200 identical greedy answers, 1.5x faster; "Finished rows leave the batch").
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass

import torch

from .data.tokenize import render
from .kv_cache import GrowingCache, fits
from .models import prompt_learning
from .recipe import EvalSection

_EVAL = EvalSection()  # without settings, generate as `smalltune evaluate` does with a default recipe


@dataclass
class GenerationSettings:
    max_new_tokens: int = _EVAL.max_new_tokens
    batch_size: int = _EVAL.batch_size
    do_sample: bool = False  # greedy: reproducible, and what memorization tests need
    seed: int = 0  # sampling only: the draws of each batch are seeded (the global RNG is left untouched)
    share_prefix: bool = True  # run a batch's common opening once (same answers; False: plain left padding)
    drop_finished: bool = True  # greedy: a row leaves the batch when it ends (same answers; False: model.generate)
    grow_cache: bool = True  # greedy: the KV cache grows by doubling (kv_cache.py; same answers; False: by torch.cat)

    def to_dict(self) -> dict:
        return asdict(self)


def generate(model, tokenizer, conversations: list[list[dict]], settings: GenerationSettings | None = None,
             progress=None) -> list[str]:
    """Answers (decoded, special tokens stripped) to each conversation's next assistant turn.

    >>> generate(model, tok, [[{"role": "user", "content": "Hi"}]])
    ['Hello! How can I help you today?']
    """
    prompts = [render(tokenizer, conv, add_generation_prompt=True) for conv in conversations]
    return generate_text(model, tokenizer, prompts, settings, progress)


@torch.no_grad()
def generate_text(model, tokenizer, prompts: list[str], settings: GenerationSettings | None = None,
                  progress=None, limits: list[int] | None = None) -> list[str]:
    """Continuations of already rendered prompt strings (e.g. a chat prompt plus the start of an answer).

    ``limits`` caps each prompt's new tokens on its own (default: ``settings.max_new_tokens`` for all), so
    prompts that need answers of different lengths share one pass: a greedy answer capped at k tokens is the
    first k tokens of a longer one, and greedy rows leave the batch at their own cap.

    >>> generate_text(model, tok, ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello"])
    ['! How can I help you today?']
    """
    s = settings or GenerationSettings()
    limits = list(limits) if limits is not None else [s.max_new_tokens] * len(prompts)
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))  # similar lengths, less padding
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # Sampling draws from the model's own distribution: temperature 1 and no top-k/top-p truncation,
    # whatever the model's generation_config suggests for chat.
    sampling = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if s.do_sample else dict(do_sample=False)
    # peft's prefix and prompt tuning put their virtual tokens into the first step's cache or inputs themselves
    share = s.share_prefix and not prompt_learning(model)
    try:
        for start in range(0, len(order), s.batch_size):
            idx = order[start: start + s.batch_size]
            batch = _batch([ids[i] for i in idx], tokenizer.pad_token_id, device, share=share)
            batch |= _prefix_cache(model, batch.pop("prefix"), len(idx), s.grow_cache)
            caps = [limits[i] for i in idx]
            if s.do_sample or not s.drop_finished or prompt_learning(model):
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(s.seed + start)
                    out = model.generate(**batch, max_new_tokens=max(caps), **sampling,
                                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                end = tokenizer.eos_token_id  # each row up to its end token and its own cap, as _greedy returns it
                new = [(row[:row.index(end)] if end in row else row)[:cap]
                       for row, cap in zip(out[:, batch["input_ids"].shape[1]:].tolist(), caps)]
            else:
                new = _greedy(model, batch, caps, tokenizer.eos_token_id, s.grow_cache)
            for i, row in zip(idx, new):
                answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
            if progress is not None:
                progress.update(len(idx))
    finally:
        if was_training:
            model.train()
    return answers


def _greedy(model, batch: dict, limits: list[int], eos_id: int, grow: bool = True) -> list[list[int]]:
    """Greedy decoding that drops a row from the batch as soon as it ends or reaches its own ``limits`` entry.

    ``model.generate`` keeps a finished row in the batch, decoding padding, until the longest answer ends:
    in a batch of 64 answers of 10-96 tokens much of the work goes to rows that have ended. Here each
    step runs only the rows still answering (their KV cache rows selected with the cache's
    ``batch_select_indices``); positions follow the attention mask as in ``generate``, so every row's
    answer is the one it gets alone (tests/test_generate.py checks it against ``model.generate``).
    Returns each row's new token ids, without the end token.
    """
    name = _cache_key(batch)
    cache = batch.get(name)
    if cache is None:  # no shared prefix: the first step fills a new cache (or the model makes its own)
        name, cache = next(iter(_new_cache(model, grow).items()), (name, None))
    mask = batch["attention_mask"]
    done = cache.get_seq_length() if cache is not None else 0  # the shared prefix, already in the cache
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    inputs = dict(input_ids=batch["input_ids"][:, done:], position_ids=positions[:, done:])
    alive = list(range(mask.shape[0]))  # batch rows still answering, in the order of the tensors
    new: list[list[int]] = [[] for _ in alive]
    last = positions[:, -1]
    for _ in range(max(limits)):
        out = model(**inputs, attention_mask=mask, **({name: cache} if cache is not None else {}), use_cache=True,
                    logits_to_keep=1)
        name = _cache_key(out)
        cache = out[name]
        tokens = out.logits[:, -1].argmax(-1)
        keep = []
        for j, token in enumerate(tokens.tolist()):
            row = alive[j]
            if token != eos_id:
                new[row].append(token)
                if len(new[row]) < limits[row]:
                    keep.append(j)
        if not keep:
            break
        if len(keep) < len(alive):  # rows that ended leave the batch, and their cache rows with them
            index = torch.tensor(keep, device=mask.device)
            cache.batch_select_indices(index)
            mask, tokens, last = mask[index], tokens[index], last[index]
            alive = [alive[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        last = last + 1
        inputs = dict(input_ids=tokens[:, None], position_ids=last[:, None])
    return new


# A shared prefix shorter than this is not worth a separate forward pass.
MIN_SHARED_PREFIX = 8


def _batch(rows: list[list[int]], pad_id: int, device, share: bool = True) -> dict:
    """One generation batch: the token prefix every row shares, then each row's padding, then its own tokens.

    Chat prompts share their template's opening (SmolLM2's default system prompt is ~25 of a general
    question's ~40 tokens), so the shared part is run once (:func:`_prefix_cache`) instead of once per
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


def _prefix_cache(model, prefix: torch.Tensor, batch_size: int, grow: bool = True) -> dict:
    """``generate``'s cache argument: the shared prefix's KV cache, computed once and repeated for every row
    (empty when there is no shared prefix)."""
    if prefix.shape[1] == 0:
        return {}
    out = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True, **_new_cache(model, grow))
    name = _cache_key(out)
    out[name].batch_repeat_interleave(batch_size)
    return {name: out[name]}


def _new_cache(model, grow: bool = True) -> dict:
    """Forward keywords that make ``model`` fill a :class:`~smalltune.kv_cache.GrowingCache` where it fits, else
    none (the model makes its own cache)."""
    if not grow or not fits(model):
        return {}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values": GrowingCache()}


def _cache_key(mapping) -> str:
    """The KV cache's name in a model output or in forward keywords: transformers renamed ``past_key_values``
    to ``cache`` during 5.x, and a model's forward takes it back under the name its output gave it."""
    return "cache" if "cache" in mapping else "past_key_values"
