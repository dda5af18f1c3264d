"""Token-level loss and validation metrics, shared by training, guards and evaluation."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from ..data.batching import collate, eval_batches
from ..data.tokenize import IGNORE


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position next-token loss (0 where no label); shape (batch, seq-1)."""
    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(target.shape)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions with a label."""
    losses = token_losses(logits, labels)
    n = (labels[:, 1:] != IGNORE).sum().clamp(min=1)
    return losses.sum() / n


@torch.no_grad()
def item_token_stats(model, items, batch_size: int, device, pad_id: int, autocast=None) -> list[tuple[float, int, int]]:
    """Per tokenised item: (summed next-token loss, labelled tokens, correct next-token predictions).

    Kept per item so evaluation can bootstrap over items; :func:`dataset_metrics` sums it.
    """
    was_training = model.training
    model.eval()
    out: list[tuple[float, int, int]] = [(0.0, 0, 0)] * len(items)
    for idx in eval_batches(items, batch_size):
        batch = {k: v.to(device) for k, v in collate([items[i] for i in idx], pad_id).items()}
        with autocast() if autocast else contextlib.nullcontext():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        mask = labels[:, 1:] != IGNORE
        losses = token_losses(logits, labels) * mask
        correct = (logits[:, :-1].argmax(-1) == labels[:, 1:]) & mask
        for row, i in enumerate(idx):
            out[i] = (float(losses[row].sum()), int(mask[row].sum()), int(correct[row].sum()))
    if was_training:
        model.train()
    return out


def dataset_metrics(model, items, batch_size: int, device, pad_id: int, autocast=None) -> dict[str, float]:
    """Token-weighted loss, perplexity and next-token accuracy of ``model`` on tokenised ``items``.

    >>> dataset_metrics(model, val_items, 16, "cpu", tok.pad_token_id)["eval_ppl"]
    """
    stats = item_token_stats(model, items, batch_size, device, pad_id, autocast)
    total_loss = sum(s[0] for s in stats)
    total_n = sum(s[1] for s in stats)
    loss = total_loss / max(total_n, 1)
    return {
        "eval_loss": loss,
        "eval_ppl": math.exp(min(loss, 50.0)),
        "eval_token_acc": sum(s[2] for s in stats) / max(total_n, 1),
        "eval_tokens": total_n,
    }
