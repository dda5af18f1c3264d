"""Data: every input shape normalises to the same examples; every malformed case names file and line."""

from __future__ import annotations

import json

import pytest

from conftest import chat, write_jsonl
from smalltune.data import carve_validation, load_examples, tokenize_examples
from smalltune.data.example import Example
from smalltune.data.tokenize import IGNORE
from smalltune.errors import DataError

EXPECTED = [
    [{"role": "user", "content": "When do you open?"}, {"role": "assistant", "content": "At 8 am."}],
    [{"role": "user", "content": "Translate to French\n\ncheese"}, {"role": "assistant", "content": "fromage"}],
]


def test_all_shapes_and_formats_normalise_alike(tmp_path):
    msgs = write_jsonl(tmp_path / "m.jsonl", [{"messages": EXPECTED[0], "category": "hours", "id": 7},
                                              {"messages": EXPECTED[1]}])
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "When do you open?", "completion": "At 8 am.", "category": "hours"},
                                             {"prompt": "Translate to French\n\ncheese", "completion": "fromage"}])
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "When do you open?", "output": "At 8 am.", "category": "hours"},
                                  {"instruction": "Translate to French", "input": "cheese", "output": "fromage"}], indent=2))
    csv = tmp_path / "c.csv"
    csv.write_text('prompt,completion,category\nWhen do you open?,At 8 am.,hours\n"Translate to French\n\ncheese",fromage,\n')
    for path, shape in [(msgs, "messages"), (pc, "prompt_completion"), (alpaca, "alpaca"), (csv, "prompt_completion")]:
        examples = load_examples(path)
        assert [e.messages for e in examples] == EXPECTED, path.name
        assert examples[0].category == "hours" and examples[1].category is None
        assert examples[0].shape == shape
    assert load_examples(msgs)[0].id == "7"
    assert [e.line for e in load_examples(alpaca)] == [2, 7]
    assert [e.line for e in load_examples(csv)] == [2, 3]


def test_extra_fields_are_kept_as_metadata(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [chat("q?", "a.", key_facts=["a"], rephrasings=["Q?"])])
    ex = load_examples(path)[0]
    assert ex.meta == {"key_facts": ["a"], "rephrasings": ["Q?"]}


@pytest.mark.parametrize("content, line, message", [
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{"messages": [', 2,
     "malformed JSON"),
    ('{"text": "hello"}\n', 1, "unrecognised record shape (fields: text)"),
    ('{"messages": [{"role": "user", "content": "hi"}]}\n', 1, "missing assistant turn"),
    ('{"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n', 1, "role 'bot'"),
    ('{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}]}\n', 1,
     "empty or whitespace-only"),
    ('{"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}\n', 1,
     "must start with a user turn"),
    ('{"messages": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "x", "weight": 2}]}\n', 1,
     "weight must be 0 or 1"),
    ('{"prompt": 3, "completion": "x"}\n', 1, "prompt must be a string, got int"),
    ('[1, 2]\n', 1, "expected an object, got list"),
])
def test_malformed_records_name_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        load_examples(path)
    text = str(err.value)
    assert text.startswith(f"{path}:{line}: ") and message in text and "\n" not in text


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(DataError, match="unsupported file type"):
        load_examples(tmp_path / "x.parquet")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no records"):
        load_examples(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9", "completion": "x"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl:1: not valid UTF-8"):
        load_examples(tmp_path / "latin1.jsonl")
    (tmp_path / "bad.json").write_text('[{"prompt": "a",\n "completion": }]')
    with pytest.raises(DataError, match=r"bad\.json:2: malformed JSON"):
        load_examples(tmp_path / "bad.json")


def test_loss_only_on_assistant_tokens_and_weight_zero_turns_skipped(tokenizer):
    ex = Example(id="x", messages=[
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there.", "weight": 0},
        {"role": "user", "content": "Hours?"}, {"role": "assistant", "content": "Nine to five."}])
    [t], stats = tokenize_examples(tokenizer, [ex], 512, system_prompt="Be brief.")
    trained = tokenizer.decode([i for i, l in zip(t.input_ids, t.labels) if l != IGNORE])
    assert trained == "Nine to five.<|im_end|>"
    assert "Be brief." in tokenizer.decode(t.input_ids)
    assert stats.trainable_tokens == t.n_trainable == len(tokenizer("Nine to five.<|im_end|>")["input_ids"])


def test_truncation_is_counted_and_empty_examples_are_reported(tokenizer):
    long_q = Example(id="long", source="f.jsonl", line=3, messages=[
        {"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}])
    fine = Example(id="fine", messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    kept, stats = tokenize_examples(tokenizer, [long_q, fine], 64)
    assert [t.example.id for t in kept] == ["fine"]
    assert stats.dropped == ["f.jsonl:3 (long)"]
    assert stats.truncated_examples == 1 and stats.truncated_trainable == 2  # "ok" + end marker
    assert all(len(t) <= 64 for t in kept)


def test_validation_split_is_stratified_and_deterministic():
    examples = [Example(id=str(i), category="ab"[i % 2] if i < 40 else "c", messages=EXPECTED[0]) for i in range(43)]
    train, val = carve_validation(examples, 0.2, seed=1)
    assert len(train) + len(val) == 43 and not {e.id for e in train} & {e.id for e in val}
    assert {e.category for e in val} == {"a", "b", "c"}  # the 3-example category still contributes one
    assert [e.id for e in carve_validation(examples, 0.2, seed=1)[1]] == [e.id for e in val]


def test_json_object_holding_one_array_reads_that_array(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"meta": {"tags": ["x", "[y"]}, "data": [{"prompt": "a", "completion": "b"},
                                                                       {"prompt": "c", "completion": "d"}]}, indent=1))
    examples = load_examples(path)
    assert [e.target for e in examples] == ["b", "d"]
    assert [e.line for e in examples] == [9, 13]


def test_eval_batches_bound_padding_and_keep_every_item_once():
    from smalltune.data.batching import eval_batches
    from smalltune.data.tokenize import Tokenized

    # the lengths of the forgetting guard's reference windows on the demo
    lengths = [186, 88, 215, 104, 126, 92, 163, 106, 139, 123, 126, 196, 211, 186]
    ex = Example(messages=[{"role": "assistant", "content": "x"}], id="x")
    items = [Tokenized(ex, [1] * n, [1] * n) for n in lengths]

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    fixed = eval_batches(items, 16, max_padding=None)
    assert len(fixed) == 1 and padded(fixed) > 1.4 * sum(lengths)  # one batch: 46% padding
    bounded = eval_batches(items, 16)
    assert sorted(i for b in bounded for i in b) == list(range(len(items)))
    for b in bounded:
        assert len(b) * max(lengths[i] for i in b) <= 1.1 * sum(lengths[i] for i in b)
    assert all(len(b) <= 3 for b in eval_batches(items, 3))
    same = [Tokenized(ex, [1] * 50, [1] * 50)] * 40
    assert [len(b) for b in eval_batches(same, 16)] == [16, 16, 8]  # equal lengths: full batches
