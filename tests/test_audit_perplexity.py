"""The perplexity check on the tiny model agrees with a hand computation, batched or not."""

from __future__ import annotations

import math

import torch

from conftest import chat, write_jsonl
from smalltune.audit import audit
from smalltune.audit.checks import perplexity as ppl_check

ANSWERS = [("When do you open?", "At 8 am on weekdays, and at 9 am on Saturdays."),
           ("Can I pay by card?", "Yes."),
           ("Where do I park?", "In the free lot behind the building, next to the bakery on Maple Street.")]


def hand_losses(model_dir, text_pairs, max_length=128):
    """Per-token losses of each example's assistant tokens, one example at a time, no padding."""
    from smalltune.data.formats import load_examples
    from smalltune.data.tokenize import IGNORE, tokenize_example
    from smalltune.models import load_model

    model, tok = load_model(str(model_dir))
    out = []
    for ex in text_pairs:
        t = tokenize_example(tok, ex, max_length)
        ids = torch.tensor([t.input_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        logp = torch.log_softmax(logits.float(), -1)
        out.append([-logp[p - 1, t.labels[p]].item() for p in range(1, len(t.labels)) if t.labels[p] != IGNORE])
    return out


def test_perplexity_matches_hand_computation(tmp_path, tiny_model_dir, monkeypatch):
    from smalltune.data.formats import load_examples

    path = write_jsonl(tmp_path / "t.jsonl", [chat(q, a) for q, a in ANSWERS])
    losses = hand_losses(tiny_model_dir, load_examples(path))
    # A random model puts every token far above 2.5; a threshold at the median token of the
    # first example makes the share a non-trivial number to check.
    token_ppl = sorted(math.exp(x) for x in losses[0])
    threshold = token_ppl[len(token_ppl) // 2]
    monkeypatch.setattr(ppl_check, "TOKEN_PPL_THRESHOLD", threshold)
    report = audit(path, model=str(tiny_model_dir), max_length=128, progress=False)
    p = report.stats["perplexity"]
    all_tokens = [x for ls in losses for x in ls]
    assert p["response_tokens"] == len(all_tokens)
    assert p["tokens_above_threshold"] == sum(1 for x in all_tokens if math.exp(x) > threshold)
    assert 0 < p["share_above_threshold"] < 1
    # per-example perplexity: batched + padded + length-sorted equals one-at-a-time
    expected = sorted(math.exp(sum(ls) / len(ls)) for ls in losses)
    (info,) = [f for f in report.findings if f.check == "perplexity" and f.severity == "info"]
    highest = sorted(e["perplexity"] for e in info.examples)
    assert all(math.isclose(h, x, rel_tol=1e-5) for h, x in zip(highest, expected, strict=True))
    assert math.isclose(p["example_ppl"]["max"], expected[-1], rel_tol=1e-4)
    top = max(info.examples, key=lambda e: e["perplexity"])
    worst = sorted((math.exp(x) for x in losses[top["line"] - 1]), reverse=True)[:5]
    got = [w["perplexity"] for w in top["worst_tokens"]]
    assert all(math.isclose(g, x, rel_tol=1e-5) for g, x in zip(got, worst, strict=True))


def test_score_batches_equal_single_examples(tiny_model_dir):
    from smalltune.data.example import Example
    from smalltune.data.tokenize import tokenize_example
    from smalltune.models import load_model

    model, tok = load_model(str(tiny_model_dir))
    exs = [Example(chat(q, a)["messages"], f"e{i}") for i, (q, a) in enumerate(ANSWERS)]
    items = [tokenize_example(tok, ex, 128) for ex in exs]
    batched = ppl_check.score(model, items, tok.pad_token_id, batch_size=3, progress=False)
    single = [ppl_check.score(model, [it], tok.pad_token_id, progress=False)[0] for it in items]
    for b, s in zip(batched, single):
        assert len(b) == len(s) and max(abs(x - y) for x, y in zip(b, s)) < 1e-4


def test_the_same_data_and_base_model_are_scored_once_per_process(tmp_path, tiny_model_dir, monkeypatch):
    """The demo's two arms (and cv folds, tuning trials) audit the same data: the base model scores it once."""
    monkeypatch.setattr(ppl_check, "_SCORES", {})
    calls = []
    real = ppl_check.score
    monkeypatch.setattr(ppl_check, "score", lambda *a, **k: calls.append(1) or real(*a, **k))
    path = write_jsonl(tmp_path / "t.jsonl", [chat(q, a) for q, a in ANSWERS])
    first = audit(path, model=str(tiny_model_dir), max_length=128, progress=False).stats["perplexity"]
    second = audit(path, model=str(tiny_model_dir), max_length=128, progress=False).stats["perplexity"]
    assert first == second and len(calls) == 1
    other = write_jsonl(tmp_path / "u.jsonl", [chat(q, a + " Thanks.") for q, a in ANSWERS])
    audit(other, model=str(tiny_model_dir), max_length=128, progress=False)
    assert len(calls) == 2  # other answers: scored again
