"""Evaluation passes (`train/loss.py`): what they score and how often they enter autocast."""

from __future__ import annotations

import contextlib

import pytest


@pytest.fixture(scope="module")
def scored(tiny_model_dir, tokenizer):
    from smalltune.data.tokenize import tokenize_plain
    from smalltune.models import load_model

    model, _ = load_model(str(tiny_model_dir))
    texts = [f"Paragraph {i}: " + "the clinic opens at nine and closes at five. " * (1 + i % 4) for i in range(11)]
    return model, list(tokenize_plain(tokenizer, texts, 64))


def test_a_pass_enters_autocast_once_and_scores_like_one_batch_at_a_time(scored, tokenizer):
    """Weights are cast to bf16 once per autocast context (for parameters that require grad), so the pass keeps one
    context open: entering it per batch cast every weight again for each batch."""
    import torch

    from smalltune.train.loss import item_token_stats

    model, items = scored
    entered = []

    def autocast():
        entered.append(1)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    pad = tokenizer.pad_token_id
    together = item_token_stats(model, items, 4, "cpu", pad, autocast)
    assert len(entered) == 1
    alone = [item_token_stats(model, [item], 1, "cpu", pad, autocast)[0] for item in items]
    assert [n for _, n, _ in together] == [n for _, n, _ in alone]
    for (a, _, _), (b, _, _) in zip(together, alone):
        assert a == pytest.approx(b, rel=2e-2)  # bf16 matmuls over different paddings: close, not equal
    fp32 = item_token_stats(model, items, 4, "cpu", pad)
    assert [x[0] for x in together] == pytest.approx([x[0] for x in fp32], rel=2e-2)  # losses stay fp32-like


def test_a_perplexity_only_pass_counts_no_accuracy_and_the_same_losses(scored, tokenizer):
    from smalltune.train.loss import dataset_metrics

    model, items = scored
    full = dataset_metrics(model, items, 4, "cpu", tokenizer.pad_token_id)
    lean = dataset_metrics(model, items, 4, "cpu", tokenizer.pad_token_id, accuracy=False)
    assert "eval_token_acc" in full and "eval_token_acc" not in lean
    assert lean["eval_loss"] == full["eval_loss"] and lean["eval_tokens"] == full["eval_tokens"]


def test_the_pass_leaves_the_model_in_the_mode_it_found(scored, tokenizer):
    from smalltune.train.loss import item_token_stats

    model, items = scored
    for mode in (True, False):
        model.train(mode)
        item_token_stats(model, items[:3], 2, "cpu", tokenizer.pad_token_id, contextlib.nullcontext)
        assert model.training is mode


def test_losses_without_a_gradient_are_taken_in_slices_and_equal_the_whole_batch(monkeypatch):
    """Without a gradient, token_losses takes EVAL_LOSS_ROWS positions at a time (no fp32 copy of the whole batch's
    logits); every position, slice ends and ignored labels included, gets the loss of the one-piece computation."""
    import torch

    from smalltune.data.tokenize import IGNORE
    from smalltune.train import loss

    torch.manual_seed(0)
    logits = (torch.randn(3, 21, 50) * 3).to(torch.bfloat16)
    labels = torch.randint(0, 50, (3, 21))
    labels[0, :7] = IGNORE
    labels[2, 15:] = IGNORE
    whole = loss.token_losses(logits, labels)  # grad enabled: the one-piece path
    monkeypatch.setattr(loss, "EVAL_LOSS_ROWS", 6)  # 20 positions per row: slices of 6, 6, 6 and 2
    with torch.no_grad():
        sliced = loss.token_losses(logits, labels)
    assert sliced.dtype == torch.float32 and sliced.shape == whole.shape == (3, 20)
    assert torch.equal(sliced, whole)
    assert (whole[labels[:, 1:] == IGNORE] == 0).all() and (whole[labels[:, 1:] != IGNORE] > 0).all()
    with torch.no_grad():  # the predictions from the fp32 slices: the bf16 logits' own argmax
        again, predicted = loss.sliced_token_stats(logits, labels, predict=True)
    assert torch.equal(again, whole) and torch.equal(predicted, logits[:, :-1].argmax(-1))
