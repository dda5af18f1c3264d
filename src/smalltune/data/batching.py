"""Batches for training and evaluation: right padding, length grouping.

Padding is masked by the attention mask, never by token id: SmolLM2's pad token *is* its end
token, which does carry loss at the end of every assistant turn.
"""

from __future__ import annotations

import random

import torch

from .tokenize import IGNORE, Tokenized


def collate(items: list[Tokenized], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(t) for t in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, t in enumerate(items):
        n = len(t)
        ids[row, :n] = torch.tensor(t.input_ids)
        labels[row, :n] = torch.tensor(t.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batch_indices(lengths: list[int], batch_size: int, seed: int, group_by_length: bool) -> list[list[int]]:
    """Shuffled batches of indices; with grouping, each batch holds examples of similar length.

    Grouping sorts within random windows of 50 batches (the idea of transformers'
    ``group_by_length``), then shuffles the batch order, so batches stay random across the epoch
    while padding shrinks. The longest batch goes first so an out-of-memory error shows at once.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        window = batch_size * 50
        order = [i for w in range(0, len(order), window)
                 for i in sorted(order[w: w + window], key=lambda i: -lengths[i])]
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length and len(batches) > 1:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        first = batches.pop(longest)
        rng.shuffle(batches)
        batches.insert(0, first)
    return batches


# A forward pass computes every padded position: the guard's reference windows (88-215 tokens) in one batch
# of 16 were 46% padding (benchmarks/README.md, "Padding in evaluation passes").
EVAL_MAX_PADDING = 0.1


def eval_batches(items: list[Tokenized], batch_size: int, max_padding: float | None = EVAL_MAX_PADDING
                 ) -> list[list[int]]:
    """Length-sorted batches for evaluation, where order does not matter: at most ``batch_size`` items, and a
    batch ends early where the next (longer) item would make padding more than ``max_padding`` of its
    real tokens (``None``: fixed-size batches)."""
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    batches, current, tokens = [], [], 0
    for i in order:
        n = len(items[i])  # sorted: the batch's padded width if i joins it
        full = len(current) == batch_size
        padded = max_padding is not None and (len(current) + 1) * n > (1 + max_padding) * (tokens + n)
        if current and (full or padded):
            batches.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += n
    return batches + [current] if current else batches
