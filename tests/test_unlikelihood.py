"""Unlikelihood on stale answers (regularize.unlikelihood): where a stale answer departs, its value, its gradient."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from conftest import crash_at_call
from smalltune.data.example import Example
from smalltune.data.tokenize import IGNORE, Tokenized
from smalltune.errors import DataError
from smalltune.train.regularize.unlikelihood import Unlikelihood, departures, stale_answers, stale_items, unlikelihood


def _ex(answer: str, **meta) -> Example:
    return Example([{"role": "user", "content": "How much is a cleaning?"}, {"role": "assistant", "content": answer}],
                   "e1", meta=meta)


def test_departures_are_the_first_token_of_each_changed_stretch():
    assert departures([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == []
    assert departures([1, 9, 5, 4], [1, 7, 4]) == [1]  # one stretch replaced: its first token only
    assert departures([1, 9, 4, 8, 6], [1, 7, 4, 3, 6]) == [1, 3]  # two changed values
    assert departures([1, 2, 9, 3], [1, 2, 3]) == [2]  # a stale insertion
    assert departures([1, 2], [1, 2, 3]) == []  # the new answer only adds: nothing of the stale one departs


def test_stale_answers_come_from_the_record_and_a_corrections_model_answer():
    ex = _ex("A cleaning costs $110.", stale_answers=["A cleaning costs $95.", "A cleaning costs $110."],
             model_answer="It is $80.")
    assert stale_answers(ex) == ["A cleaning costs $95.", "It is $80."]  # the new answer itself is not stale
    assert stale_answers(_ex("x", stale_answers="y")) == ["y"]
    bad = _ex("x", stale_answers=[3])
    bad.source, bad.line = "train.jsonl", 7
    with pytest.raises(DataError, match="train.jsonl:7: stale_answers must be a string or a list of strings"):
        stale_answers(bad)


def test_the_stale_price_is_marked_at_its_first_differing_token(tokenizer):
    ex = _ex("A cleaning costs $110 at our clinic.", stale_answers=["A cleaning costs $95 at our clinic."])
    items = stale_items(tokenizer, [ex, ex], 128, None)  # a repeated example counts once
    assert len(items) == 1
    marked = [i for i, x in enumerate(items[0].labels) if x != IGNORE]
    assert len(marked) == 1
    before = tokenizer.decode(items[0].input_ids[: marked[0]])
    assert before.endswith("A cleaning costs $") and tokenizer.decode([items[0].labels[marked[0]]]) == "9"


class ToyLM(torch.nn.Module):
    def __init__(self, vocab=6, dim=4):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.lin = torch.nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.lin(self.emb(input_ids)))


def test_the_term_is_minus_log_one_minus_p_and_a_step_on_it_lowers_p():
    model = ToyLM()
    item = Tokenized(_ex("x"), [1, 2, 3], [IGNORE, IGNORE, 3])  # position 1 should not say token 3
    ids, labels = torch.tensor([item.input_ids]), torch.tensor([item.labels])
    p = lambda: torch.softmax(model(ids).logits[0, 1], -1)[3]  # noqa: E731
    with torch.no_grad():
        expected = -torch.log(1 - p())
        assert float(unlikelihood(model(ids).logits, labels)) == pytest.approx(float(expected), rel=1e-5)
    plugin = Unlikelihood()
    plugin.weight, plugin.batch, plugin.cursor, plugin.last = 2.0, 4, 0, 0.0
    plugin._items, plugin._pad, plugin._device, plugin._keep = [item], 0, "cpu", False
    before = float(p().detach())
    value = plugin.penalty(model)
    assert float(value) == pytest.approx(2 * float(expected), rel=1e-5) and plugin.metrics()["unlikelihood"] > 0
    value.backward()
    with torch.no_grad():
        for w in model.parameters():
            w -= 1.0 * w.grad
    assert float(p()) < before


def test_a_resumed_run_continues_the_stale_answers_where_it_stopped(make_recipe, tmp_path, monkeypatch):
    """The turn through the stale answers is state: a killed and resumed run trains what an uninterrupted one does."""
    from safetensors.torch import load_file

    from conftest import toy_records, write_jsonl
    from smalltune import train
    from smalltune.rundir import RunDir

    records = toy_records()
    for r in records[1::3]:  # the price questions: earlier prices each
        r["stale_answers"] = [r["messages"][-1]["content"].replace("$95", "$90").replace("$80", "$70")]
    data = write_jsonl(tmp_path / "stale.jsonl", records)
    # the tiny random model gives a stale token p ~ 1/49k, so -log(1 - p) ~ p: a large weight makes the term's gradient
    # count, and a resume that lost its place in the stale answers would train other weights
    common = {"data.train": str(data), "train.max_steps": 6, "eval.every_steps": 2, "early_stopping.enabled": False,
              "regularize.unlikelihood": 1e4, "regularize.unlikelihood_batch": 3}
    clean = train(make_recipe(**common, output_dir=str(tmp_path / "clean")), progress=False)
    start = next(r for r in RunDir(clean.run_dir).read_metrics() if r.kind == "event" and r.event == "start")
    n = start.extra["unlikelihood_answers"]
    assert n > 0 and start.extra["unlikelihood_tokens"] == 2 * n  # two changed prices in each

    restore = crash_at_call(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(make_recipe(**common, output_dir=str(tmp_path / "crashed")), progress=False)
    restore()
    resumed = train(make_recipe(**common, output_dir=str(tmp_path / "crashed")), resume=True, progress=False)
    a = load_file(str(RunDir(clean.run_dir).adapter / "adapter_model.safetensors"))
    b = load_file(str(RunDir(resumed.run_dir).adapter / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
