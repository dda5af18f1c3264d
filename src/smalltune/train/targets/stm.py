"""Selective Token Masking: leave the base model's most surprising target tokens out of the loss.

"Selective Self-to-Supervised Fine-Tuning" / STM (arXiv 2501.14315): tokens the base model finds
very unlikely force the largest weight changes and so the most forgetting; scoring each response
token once under the base model and dropping those with perplexity ``exp(token loss)`` above tau
(2.5 in the paper) keeps most of the task signal at a fraction of the drift. The scores are taken
once, before training, in eval mode; only the labels change, inputs stay whole. The mask is a few
lines over our own tokenised format, so no library is needed.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ...data.batching import collate, eval_batches
from ...data.tokenize import IGNORE, Tokenized
from ..loss import token_losses
from ..plugins import Plugin
from . import DATA_PLUGINS, need_model


@torch.no_grad()
def target_perplexities(model, items: list[Tokenized], device, pad_id: int, batch_size: int = 8) -> list[list[float | None]]:
    """Per position, the base model's perplexity of that label token (None where no label).

    >>> target_perplexities(model, items, "cpu", tok.pad_token_id)[0][:4]
    [None, None, 1.7, 12.3]
    """
    was_training = model.training
    model.eval()
    out: list[list[float | None]] = [[] for _ in items]
    try:
        for idx in eval_batches(items, batch_size):
            batch = {k: v.to(device) for k, v in collate([items[i] for i in idx], pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            losses = token_losses(logits, batch["labels"]).cpu()
            for row, i in enumerate(idx):
                labels = items[i].labels
                # the label at position j is predicted from position j - 1
                out[i] = [None] + [math.exp(min(float(losses[row, j - 1]), 80.0)) if labels[j] != IGNORE else None
                                   for j in range(1, len(labels))]
    finally:
        model.train(was_training)
    return out


def selective_token_mask(model, items: list[Tokenized], threshold: float, device, pad_id: int,
                         batch_size: int = 8) -> tuple[list[Tokenized], dict]:
    """Items with labels above perplexity ``threshold`` set to IGNORE, and the share masked.

    Items left without any trainable token are dropped (and counted).

    >>> kept, info = selective_token_mask(base_model, train_items, 2.5, "cpu", tok.pad_token_id)
    >>> info["stm_masked_share"]
    0.31
    """
    ppl = target_perplexities(model, items, device, pad_id, batch_size)
    kept, before, masked, dropped = [], 0, 0, 0
    for item, scores in zip(items, ppl):
        labels = list(item.labels)
        for j, s in enumerate(scores):
            if labels[j] == IGNORE:
                continue
            before += 1
            if s is not None and s > threshold:
                labels[j] = IGNORE
                masked += 1
        new = dataclasses.replace(item, labels=labels)
        if new.n_trainable:
            kept.append(new)
        else:
            dropped += 1
    info = {"stm_threshold": threshold, "stm_masked_tokens": masked, "stm_response_tokens": before,
            "stm_masked_share": round(masked / before, 4) if before else 0.0, "stm_dropped_examples": dropped}
    return kept, info



@DATA_PLUGINS.register("stm")
class SelectiveTokenMasking(Plugin):
    """``targets.stm_threshold``: mask the base model's most surprising target tokens."""

    name = "stm"
    keys = ("targets.stm_threshold",)
    order = 20

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.targets.stm_threshold is not None

    def transform_tokens(self, items, env):
        need_model(env.model, "targets.stm_threshold")
        env.model.to(env.device)
        return selective_token_mask(env.model, items, env.recipe.targets.stm_threshold, env.device,
                                    env.tokenizer.pad_token_id, env.batch_size)
