"""Greedy decoding that keeps its batch full: when answers end, their places go to the next prompts.

A batch of ``batch_size`` places decodes one token per step. Without refilling, a batch of answers of 10-96
tokens spends most of its steps on a few long answers, and on a CPU a step's cost is mostly reading every weight
once (the built-in model at two threads: ~56 ms a step for 1-15 rows, ~200 ms for 128; benchmarks/README.md,
"Continuous batching"). So the prompts join in chunks as places free up (iteration-level scheduling, as in "Orca:
A Distributed Serving System for Transformer-Based Generative Models", OSDI 2022): a chunk is prefilled on its
own (its shared opening run once, :mod:`~smalltune.prompt_batch`), then its keys and values take free places of
the batch's KV cache as the last positions of the window every row attends over
(:meth:`~smalltune.kv_cache.GrowingCache.place`); positions and the attention mask are each row's own, so a row
answers as it would alone. Leading positions no row still attends to leave the window (:meth:`trim`).

Without a :class:`~smalltune.kv_cache.GrowingCache` (a model with sliding-window layers, ``grow_cache: false``)
or with ``continuous=False``, the prompts go one batch at a time and finished rows leave the batch.
"""

from __future__ import annotations

from collections import deque

import torch

from .kv_cache import GrowingCache
from .prompt_batch import cache_key, model_batch, new_cache

# New prompts join once this share of the places is free: each join is one prefill pass (reading every weight
# once more), and until then a free place decodes nothing useful. A cold evaluation's 1,224 base answers, 128
# places, 2 threads: 1/8 130.8 s, 1/16 124.4 s, 1/32 128.4 s, every place at once (1/128) 146.4 s.
JOIN_SHARE = 1 / 16


def _next_tokens(logits: torch.Tensor) -> torch.Tensor:
    """Each row's most likely next token. Taken over fp32 logits: argmax over bf16 ones (autocast's output) ran
    unvectorised, 10.4 ms for 128 rows of the built-in model's 49,152 logits against 7.6 ms with the exact cast
    first (2-core AMX Xeon); ties go to the first index either way."""
    return logits[:, -1].float().argmax(-1)


class _Places:
    """The batch being decoded: its KV cache (a forward keyword ``name``), attention mask, each place's latest
    position and the token it feeds next, and which prompt each place answers (-1: free)."""

    def __init__(self, cache, name: str, mask: torch.Tensor, last: torch.Tensor, tokens: torch.Tensor,
                 owners: list[int]):
        self.cache, self.name, self.mask, self.last, self.tokens, self.owners = cache, name, mask, last, tokens, owners

    @classmethod
    def prefill(cls, model, rows: list[list[int]], owners: list[int], pad_id: int, share: bool, grow: bool,
                openings: dict | None = None):
        """A chunk of prompts run up to their first new token (``openings``: shared openings already run)."""
        batch = model_batch(model, rows, pad_id, share, grow, openings)
        name = cache_key(batch)
        cache = batch.get(name)
        if cache is None:  # no shared prefix: this pass fills a new cache (or the model makes its own)
            name, cache = next(iter(new_cache(model, grow).items()), (name, None))
        mask = batch["attention_mask"]
        done = cache.get_seq_length() if cache is not None else 0  # the shared prefix, already in the cache
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as in ``generate``: padding takes no position
        out = model(input_ids=batch["input_ids"][:, done:], position_ids=positions[:, done:], attention_mask=mask,
                    **({name: cache} if cache is not None else {}), use_cache=True, logits_to_keep=1)
        name = cache_key(out)
        return cls(out[name], name, mask, positions[:, -1], _next_tokens(out.logits), list(owners))

    def step(self, model) -> None:
        """Every place feeds its token and gets its next one."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.owners), 1))], dim=1)
        self.last = self.last + 1
        out = model(input_ids=self.tokens[:, None], position_ids=self.last[:, None], attention_mask=self.mask,
                    **{self.name: self.cache}, use_cache=True, logits_to_keep=1)
        self.name = cache_key(out)
        self.cache = out[self.name]
        self.tokens = _next_tokens(out.logits)

    def free(self) -> list[int]:
        return [j for j, owner in enumerate(self.owners) if owner < 0]

    def join(self, chunk: "_Places") -> None:
        """``chunk``'s rows take free places; their positions are the window's last ones, masked before."""
        places = self.free()[: len(chunk.owners)]  # greedy() takes no more prompts than there are free places
        index = torch.tensor(places, device=self.mask.device)
        width, span = chunk.mask.shape[1], self.mask.shape[1]
        self.cache.place(index, chunk.cache)
        if width > span:  # the window widened ahead: nobody attends to the new leading positions
            self.mask = torch.cat([self.mask.new_zeros((len(self.owners), width - span)), self.mask], dim=1)
        self.mask[index] = 0
        self.mask[index, -width:] = chunk.mask
        self.last[index], self.tokens[index] = chunk.last, chunk.tokens
        for place, owner in zip(places, chunk.owners):
            self.owners[place] = owner

    def drop_free(self) -> None:
        """Free places leave the batch (their cache rows with them)."""
        keep = [j for j, owner in enumerate(self.owners) if owner >= 0]
        if len(keep) < len(self.owners):
            index = torch.tensor(keep, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.mask, self.last, self.tokens = self.mask[index], self.last[index], self.tokens[index]
            self.owners = [self.owners[j] for j in keep]

    def trim(self) -> None:
        """Leading positions that no answering place attends to leave the window."""
        busy = [j for j, owner in enumerate(self.owners) if owner >= 0]
        if busy:
            used = self.mask[busy].any(0)
            n = int(used.int().argmax())
            if n:
                self.mask = self.mask[:, n:]
                self.cache.trim(n)


@torch.no_grad()
def greedy(model, rows: list[list[int]], limits: list[int], eos_id: int, pad_id: int, batch_size: int,
           share: bool = True, grow: bool = True, continuous: bool = True, progress=None) -> list[list[int]]:
    """Each prompt's greedy new token ids (without the end token), each capped at its ``limits`` entry.

    ``rows`` join the batch in their order (sorted by length, a chunk's padding is small). ``continuous`` refills
    free places (needs a growing cache); otherwise the next batch starts when the last answer of one has ended.
    ``progress`` (a tqdm bar) advances by one per finished answer.
    """
    queue = deque(range(len(rows)))
    new: list[list[int]] = [[] for _ in rows]
    places: _Places | None = None
    refill = False  # whether free places take new prompts (decided by the first chunk's cache)
    join_at = max(1, round(batch_size * JOIN_SHARE))
    openings: dict = {}  # a shared opening's KV cache, run once for every chunk that starts with it
    while True:
        busy = len(places.owners) - len(places.free()) if places else 0
        free = len(places.owners) - busy if busy else batch_size  # places a chunk can take now
        if queue and (busy == 0 or (refill and free >= join_at)):
            take = [queue.popleft() for _ in range(min(free, len(queue)))]
            chunk = _Places.prefill(model, [rows[i] for i in take], take, pad_id, share, grow, openings)
            if busy:
                places.join(chunk)
            else:
                places = chunk
                refill = continuous and isinstance(chunk.cache, GrowingCache)
            fed = take
        elif busy:
            if not refill or (not queue and free >= join_at):
                # no prompt will take these places: they leave instead of decoding (once a few are free: each drop
                # copies the cache; the 1,224 base answers took 115-118 s so, 124-126 s dropping every ended row)
                places.drop_free()
            places.step(model)
            fed = places.owners
        else:
            return new
        _record(places, fed, new, limits, eos_id, progress)
        if refill:
            places.trim()


def _record(places: _Places, fed: list[int], new: list[list[int]], limits: list[int], eos_id: int, progress) -> None:
    """Each answering place's new token goes to its answer; a place whose answer ended (end token, or its cap)
    is freed."""
    fed = set(fed)
    for j, token in enumerate(places.tokens.tolist()):
        owner = places.owners[j]
        if owner < 0 or owner not in fed:
            continue
        if token != eos_id:
            new[owner].append(token)
        if token == eos_id or len(new[owner]) >= limits[owner]:
            places.owners[j] = -1
            if progress is not None:
                progress.update(1)
