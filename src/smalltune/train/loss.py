"""Token-level loss and validation metrics, shared by training, guards and evaluation."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from ..data.batching import collate, eval_batches
from ..data.tokenize import IGNORE
from .autocast import cast_once, own_autocast_forward


# Without a gradient, losses are taken this many positions at a time: one fp32 copy of a whole evaluation batch's
# logits (the forgetting guard's 2,061 reference positions x 49k vocabulary: 400 MB, and as much again for the
# softmax) costs more memory traffic than the arithmetic. 128 positions at a time give the same losses to the bit,
# and the whole pass (forward included) took 0.88 of its time for the guard's text, 0.93 for the demo validation set
# (benchmarks/eval_loss_rows.py). With a gradient, slices would each send back a full-size gradient.
EVAL_LOSS_ROWS = 128


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position next-token loss (0 where no label); shape (batch, seq-1)."""
    target = labels[:, 1:]
    if torch.is_grad_enabled():
        flat = logits[:, :-1].float()
        return F.cross_entropy(flat.reshape(-1, flat.size(-1)), target.reshape(-1), ignore_index=IGNORE,
                               reduction="none").view(target.shape)
    return sliced_token_stats(logits, labels)[0]


def sliced_token_stats(logits: torch.Tensor, labels: torch.Tensor,
                       predict: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Without a gradient: per-position next-token losses and, with ``predict``, the predicted (argmax) next tokens,
    both shape (batch, seq-1), from ``EVAL_LOSS_ROWS`` positions upcast to fp32 at a time.

    The argmax is taken on those fp32 slices: over bf16 logits it took 6x as long on a CPU (Zen 5: 80 ms against
    14 ms for 960 positions of a 49k vocabulary), and the upcast is exact, so the predictions are the same."""
    target = labels[:, 1:]
    losses = torch.empty(target.shape, dtype=torch.float32, device=logits.device)
    predicted = torch.empty(target.shape, dtype=torch.long, device=logits.device) if predict else None
    n = target.shape[1]
    for row in range(target.shape[0]):
        for i in range(0, n, EVAL_LOSS_ROWS):
            end = min(i + EVAL_LOSS_ROWS, n)
            rows = logits[row, i:end].float()
            losses[row, i:end] = F.cross_entropy(rows, target[row, i:end], ignore_index=IGNORE, reduction="none")
            if predict:
                predicted[row, i:end] = rows.argmax(-1)
    return losses, predicted


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions with a label."""
    losses = token_losses(logits, labels)
    n = (labels[:, 1:] != IGNORE).sum().clamp(min=1)
    return losses.sum() / n


def scored_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the output layer must run for the loss, and the labels aligned to those positions.

    Only a position whose next token carries a label (in any row) needs logits: prompt positions never
    reach the vocabulary-wide output projection and its softmax (49k columns for SmolLM2, a fifth of the
    model's matmul work per token and the largest activations of a step). Returns ``(positions, aligned)``
    with ``causal_lm_loss(logits[:, positions], aligned) == causal_lm_loss(logits, labels)``: the scored
    positions plus the last one (it predicts nothing; the shift drops it), and the label one ahead of each
    scored position behind a placeholder first column.
    """
    scored = (labels[:, 1:] != IGNORE).any(0).nonzero().squeeze(1)
    positions = torch.cat([scored, scored.new_tensor([labels.shape[1] - 1])])
    return positions, torch.cat([labels[:, :1], labels[:, scored + 1]], dim=1)


def keeps_logits(model) -> bool:
    """Whether ``model`` computes logits at chosen positions only (transformers' ``logits_to_keep``).

    Not for peft's prefix and prompt tuning: prompt tuning prepends virtual positions that a hook trims
    from the logits afterwards, so kept positions would be shifted."""
    import inspect

    from ..models import prompt_learning

    if prompt_learning(model):
        return False
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def batch_logits(model, batch: dict, keep: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of a batch for :func:`causal_lm_loss` / :func:`token_losses`; with ``keep``, only at
    :func:`scored_positions` (same losses, a cheaper forward and backward)."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if not keep:
        return model(**inputs).logits, batch["labels"]
    positions, labels = scored_positions(batch["labels"])
    return model(**inputs, logits_to_keep=positions).logits, labels


@torch.no_grad()
def item_token_stats(model, items, batch_size: int, device, pad_id: int, autocast=None,
                     accuracy: bool = True) -> list[tuple[float, int, int]]:
    """Per tokenised item: (summed next-token loss, labelled tokens, correct next-token predictions).

    Kept per item so evaluation can bootstrap over items; :func:`dataset_metrics` sums it. ``accuracy=False``
    counts no correct predictions (0): the argmax over the vocabulary costs ~8% of a pass that scores every
    position, and a perplexity-only pass (the forgetting guard's) does not need it.
    """
    was_training = model.training
    model.eval()
    keep = keeps_logits(model)
    out: list[tuple[float, int, int]] = [(0.0, 0, 0)] * len(items)
    with contextlib.ExitStack() as precision:
        if autocast:  # one autocast context for the pass, frozen weights cast once in it too (train/autocast.py)
            precision.enter_context(autocast())
            precision.enter_context(cast_once(model))
            precision.enter_context(own_autocast_forward(model))  # logits stay bf16 until sliced_token_stats
        for idx in eval_batches(items, batch_size):
            batch = {k: v.to(device) for k, v in collate([items[i] for i in idx], pad_id).items()}
            logits, labels = batch_logits(model, batch, keep)
            mask = labels[:, 1:] != IGNORE
            losses, predicted = sliced_token_stats(logits, labels, accuracy)
            losses = losses * mask
            correct = ((predicted == labels[:, 1:]) & mask).sum(1) if accuracy else [0] * len(idx)
            for row, i in enumerate(idx):
                out[i] = (float(losses[row].sum()), int(mask[row].sum()), int(correct[row]))
    if was_training:
        model.train()
    return out


def dataset_metrics(model, items, batch_size: int, device, pad_id: int, autocast=None,
                    accuracy: bool = True) -> dict[str, float]:
    """Token-weighted loss, perplexity and next-token accuracy (without ``accuracy``: none) of ``model`` on
    tokenised ``items``.

    >>> dataset_metrics(model, val_items, 16, "cpu", tok.pad_token_id)["eval_ppl"]
    """
    stats = item_token_stats(model, items, batch_size, device, pad_id, autocast, accuracy)
    total_loss = sum(s[0] for s in stats)
    total_n = sum(s[1] for s in stats)
    loss = total_loss / max(total_n, 1)
    return {
        "eval_loss": loss,
        "eval_ppl": math.exp(min(loss, 50.0)),
        **({"eval_token_acc": sum(s[2] for s in stats) / max(total_n, 1)} if accuracy else {}),
        "eval_tokens": total_n,
    }
