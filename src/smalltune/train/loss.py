"""Token-level loss and validation metrics, shared by training, guards and evaluation."""

from __future__ import annotations

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
def dataset_metrics(model, items, batch_size: int, device, pad_id: int, autocast=None) -> dict[str, float]:
    """Token-weighted loss, perplexity and next-token accuracy of ``model`` on tokenised ``items``.

    >>> dataset_metrics(model, val_items, 16, "cpu", tok.pad_token_id)["eval_ppl"]
    """
    was_training = model.training
    model.eval()
    total_loss, total_correct, total_n = 0.0, 0, 0
    for idx in eval_batches(items, batch_size):
        batch = {k: v.to(device) for k, v in collate([items[i] for i in idx], pad_id).items()}
        with autocast() if autocast else _null():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        mask = labels[:, 1:] != IGNORE
        total_loss += token_losses(logits, labels)[mask].sum().item()
        total_correct += (logits[:, :-1].argmax(-1) == labels[:, 1:])[mask].sum().item()
        total_n += int(mask.sum())
    if was_training:
        model.train()
    loss = total_loss / max(total_n, 1)
    return {
        "eval_loss": loss,
        "eval_ppl": math.exp(min(loss, 50.0)),
        "eval_token_acc": total_correct / max(total_n, 1),
        "eval_tokens": total_n,
    }


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
