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
