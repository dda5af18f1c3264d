"""Hostile and misleading input (issue 20, items 4-6): one clear line and a clean exit code, never a crash.

Every hostile file and recipe is generated here, in ``tmp_path``. Each test failed before its fix
(a RecursionError / IndexError / UnicodeDecodeError, a gigabyte alias expansion, a misleading message,
or argparse refusing ``k=v`` after an option).
"""

from __future__ import annotations

import io
import json
import shutil
import socket
from pathlib import Path

import pytest
from conftest import chat, toy_records, write_jsonl

from smalltune.cli import main
from smalltune.data.formats import load_examples
from smalltune.data.readers import read_records
from smalltune.errors import SmalltuneError


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "unexpected" not in err, err
    return err


def recipe_file(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- item 4: hostile data ------------------------------------------------------------------
DEEP = 100_000  # far past Python's recursion limit


def test_deeply_nested_jsonl_line_names_file_and_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "deep.jsonl", toy_records(3))
    with path.open("a") as f:
        f.write('{"messages": ' + "[" * DEEP + "]" * DEEP + "}\n")
    with pytest.raises(SmalltuneError, match=rf"deep\.jsonl:4: nested deeper than \d+ levels"):
        load_examples(path)
    assert main(["audit", str(path), "--no-progress"]) == 1  # the audit lists it as a finding
    out = capsys.readouterr().out
    assert "deep.jsonl:4" in out and "nested deeper" in out


def test_nesting_below_the_recursion_limit_is_refused_too(tmp_path):
    # 500 levels parse fine but would later break the JSON writers that copy metadata into result files
    record = chat("q", "a", extra=json.loads("[" * 500 + "]" * 500))
    path = write_jsonl(tmp_path / "d.jsonl", [record])
    with pytest.raises(SmalltuneError, match=r"d\.jsonl:1: nested deeper"):
        load_examples(path)


def test_deeply_nested_json_array_is_one_clear_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" + "[" * DEEP + "]" * DEEP + "]")
    (rec,) = read_records(path)
    assert rec.error.startswith("nested deeper") and rec.line == 1
    with pytest.raises(SmalltuneError, match=r"deep\.json:1: nested deeper"):
        load_examples(path)


def test_huge_integer_is_a_record_error(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"prompt": "q", "completion": "a", "n": ' + "1" * 5000 + "}\n")
    with pytest.raises(SmalltuneError, match=r"n\.jsonl:1: unreadable JSON value"):
        load_examples(path)


def test_audit_of_a_file_whose_answers_are_all_empty(tmp_path, capsys):
    path = write_jsonl(tmp_path / "empty.jsonl", [{"prompt": f"q{i}?", "completion": ""} for i in range(5)])
    assert main(["audit", str(path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "no usable training examples" in out and "empty" in out


def test_audit_of_a_csv_without_the_expected_columns(tmp_path, capsys):
    path = tmp_path / "cols.csv"
    path.write_text("question,answer\nWhen are you open?,At nine.\nWhere are you?,Oak Road.\n")
    assert main(["audit", str(path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "no usable training examples" in out and "unrecognised record shape" in out


def test_audit_with_a_model_and_no_usable_example(tmp_path, tiny_model_dir, capsys):
    path = write_jsonl(tmp_path / "empty.jsonl", [{"prompt": "q", "completion": " "}] * 3)
    assert main(["audit", str(path), "--model", str(tiny_model_dir), "--no-progress"]) == 1
    assert "no usable training examples" in capsys.readouterr().out


def test_a_one_megabyte_answer_is_cut_before_it_is_tokenised(tokenizer):
    from smalltune.data.example import Example
    from smalltune.data.tokenize import tokenize_examples

    class Spy:  # the real tokenizer, recording how much text it is asked to encode
        is_fast = True

        def __init__(self, tok):
            self.tok, self.lengths = tok, []

        def __call__(self, text, **kw):
            self.lengths.append(len(text))
            return self.tok(text, **kw)

        def apply_chat_template(self, *a, **kw):
            return self.tok.apply_chat_template(*a, **kw)

    answer = "The clinic is open on weekdays. " * 32_768  # 1 MiB
    examples = [Example([{"role": "user", "content": "Tell me."}, {"role": "assistant", "content": answer}], "big"),
                Example([{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}], "small")]
    spy = Spy(tokenizer)
    kept, stats = tokenize_examples(spy, examples, max_length=512)
    assert max(spy.lengths) < 100_000  # a head of the 1 MiB text, not all of it
    assert [len(t) for t in kept] == [512, len(kept[1])] and len(kept[1]) < 512
    assert stats.truncated_examples == 1
    full = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    assert abs(stats.truncated_trainable - (full - 512)) < 0.02 * full  # the cut is estimated, closely
    # the tokens kept are exactly those of the whole text
    whole = tokenizer(tokenizer.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in examples[0].messages], tokenize=False),
        add_special_tokens=False)["input_ids"]
    assert kept[0].input_ids == whole[:512]


# --- item 4: hostile recipes ---------------------------------------------------------------
def test_recipe_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"data:\n  train: caf\xe9.jsonl\n")
    assert main(["recipe", "--check", str(path)]) == 2
    assert one_line_error(capsys) == f"error: {path}: not UTF-8 text (byte 0xe9 on line 2); save the recipe as UTF-8"
    assert main(["train", str(path), "--no-progress"]) == 2
    assert "not UTF-8 text" in one_line_error(capsys)


def bomb(levels: int, width: int = 10) -> str:
    """An alias bomb under a real key: width**levels strings from a few hundred bytes of YAML."""
    rows = [f"    - &a0 [{', '.join(['lol'] * width)}]"]
    rows += [f"    - &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "data:\n  train: t.jsonl\n  system_prompt:\n" + "\n".join(rows) + "\n"


def test_alias_bomb_inside_a_real_key_is_refused_before_expansion(tmp_path, capsys):
    # 10**6 strings: before the fix the error message alone held all of them (~7 MB); 10**9 took gigabytes
    path = recipe_file(tmp_path, bomb(6))
    assert main(["recipe", "--check", str(path)]) == 2
    err = one_line_error(capsys)
    assert "aliases expand to more than" in err and len(err) < 300


def test_a_big_alias_bomb_is_refused_as_fast(tmp_path, capsys):
    path = recipe_file(tmp_path, bomb(30))  # 10**30 strings once expanded
    assert main(["train", str(path), "--no-progress"]) == 2
    assert "aliases expand to more than" in one_line_error(capsys)


def test_recursive_alias_is_refused(tmp_path, capsys):
    path = recipe_file(tmp_path, "data:\n  train: t.jsonl\n  system_prompt: &a [*a]\n")
    assert main(["recipe", "--check", str(path)]) == 2
    assert "refers to its own anchor" in one_line_error(capsys)


def test_python_tags_are_refused(tmp_path, capsys):
    path = recipe_file(tmp_path, "data:\n  train: !!python/object/apply:os.system [\"touch pwned\"]\n")
    assert main(["recipe", "--check", str(path)]) == 2
    assert "not valid YAML" in one_line_error(capsys) and not (tmp_path / "pwned").exists()


def test_ordinary_aliases_still_work(tmp_path):
    from smalltune.recipe import load_recipe

    r = load_recipe(recipe_file(tmp_path, "data:\n  train: &t t.jsonl\n  validation: *t\n"))
    assert r.data.validation == r.data.train == "t.jsonl"


def test_deeply_nested_yaml_is_refused(tmp_path, capsys):
    path = recipe_file(tmp_path, "data: " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["recipe", "--check", str(path)]) == 2
    assert "not valid YAML" in one_line_error(capsys)


@pytest.mark.parametrize("text, message", [
    ("data:\n  train: t.jsonl\ntrain:\n  batch_size: .inf\n", "train.batch_size must be an integer, got inf"),
    ("data:\n  train: t.jsonl\ntrain:\n  lr: .nan\n", "train.lr must be a finite number, got nan"),
    ("data:\n  train: t.jsonl\nname: 2001-13-40\n", "not valid YAML"),
    ("data:\n  train: t.jsonl\n  system_prompt: {a: [" + ", ".join(["x" * 50] * 1000) + "]}\n",
     "data.system_prompt must be a string, got {'a': ["),
])
def test_odd_values_are_one_short_line(tmp_path, capsys, text, message):
    path = recipe_file(tmp_path, text)
    assert main(["recipe", "--check", str(path)]) == 2
    err = one_line_error(capsys)
    assert message in err and len(err) < 400


# --- item 5: messages that mislead ---------------------------------------------------------
def test_pickle_only_model_folder_says_safetensors_and_how_to_convert(tmp_path, tiny_model_dir, capsys):
    from smalltune.models import load_model

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(SmalltuneError) as err:
        load_model(str(folder))
    msg = str(err.value)
    assert "only pickle weights (pytorch_model.bin)" in msg and "safetensors" in msg and "save_pretrained" in msg
    assert "hub" not in msg
    data = write_jsonl(tmp_path / "t.jsonl", toy_records(3))
    recipe = recipe_file(tmp_path, f"model:\n  name: {folder}\ndata:\n  train: {data}\n")
    assert main(["recipe", "--check", str(recipe)]) == 2
    assert "only pickle weights" in one_line_error(capsys)


def test_directory_as_data_file(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    with pytest.raises(SmalltuneError, match="data: is a directory, expected a data file"):
        load_examples(folder)
    assert main(["audit", str(folder), "--no-progress"]) == 2
    assert "is a directory, expected a data file" in one_line_error(capsys)


def test_recipe_check_checks_the_data_files(tmp_path, capsys):
    (tmp_path / "folder.jsonl").mkdir()
    path = recipe_file(tmp_path, "data:\n  train: missing.jsonl\n  validation: folder.jsonl\n  test: notes.txt\n")
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["recipe", "--check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "3 problems" in err and out == ""  # no "valid"
    assert "data.train: missing.jsonl: file not found" in err
    assert "data.validation:" in err and "is a directory" in err
    assert "data.test:" in err and "unsupported file type '.txt'" in err
    good = recipe_file(tmp_path, f"data:\n  train: {write_jsonl(tmp_path / 't.jsonl', toy_records(3))}\n", "good.yaml")
    assert main(["recipe", "--check", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: valid"


def test_audit_table_keeps_line_numbers_at_80_columns(tmp_path):
    from rich.console import Console

    from smalltune.audit import audit
    from smalltune.audit.summary import audit_summary

    name = "customer_support_transcripts_2024_export.jsonl"
    records = [chat("When are you open on weekdays?", "From nine to five.")] * 3 + [chat("Where?", " ")]
    report = audit(write_jsonl(tmp_path / name, records), progress=False)
    out = io.StringIO()
    audit_summary(report, Console(file=out, width=80, color_system=None, highlight=False))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    cells = "".join(line.split("│")[4].strip() for line in lines if line.count("│") == 5)  # the "where" column
    assert f"{name}:4" in cells and f"{name}:1" in cells


def test_hub_id_offline_fails_at_once(monkeypatch):
    from smalltune import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SmalltuneError, match=r"'someorg/some-model' is not a built-in model.*HF_HUB_OFFLINE is set"):
        models.load_tokenizer("someorg/some-model")


def test_hub_id_without_network_never_reaches_the_hub_client(monkeypatch):
    import transformers

    from smalltune import models

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(models, "_probe_hub", lambda address, timeout: "huggingface.co:443 did not answer")

    def refuse(*a, **kw):
        raise AssertionError("from_pretrained called although the hub is unreachable")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    with pytest.raises(SmalltuneError, match="not in the local hub cache, and huggingface.co:443 did not answer"):
        models.load_model("someorg/some-model")


def test_hub_probe_tells_a_listening_port_from_a_closed_one():
    from smalltune.models import _probe_hub

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert _probe_hub(("127.0.0.1", server.getsockname()[1]), 2.0) is None
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        assert "127.0.0.1" in _probe_hub(("127.0.0.1", port), 2.0)  # refused: unreachable at once


# --- item 6: options and overrides in any order --------------------------------------------
@pytest.mark.parametrize("verb", ["train", "run"])
def test_overrides_after_options(tmp_path, capsys, verb):
    data = write_jsonl(tmp_path / "t.jsonl", toy_records(3))
    path = recipe_file(tmp_path, f"data:\n  train: {data}\n")
    # an invalid override value stops at validation: proof that it was read, without training
    assert main([verb, str(path), "--no-progress", "train.epochs=2", "--resume", "train.lr=-1"]) == 2
    assert one_line_error(capsys) == f"error: invalid recipe {path}: train.lr must be > 0, got -1"
    assert main([verb, "--no-progress", str(path), "train.lr=1e-4", "--resume", "train.lr=-2"]) == 2
    assert "train.lr must be > 0, got -2" in one_line_error(capsys)  # later overrides win, in typed order


def test_stray_words_are_still_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as code:
        main(["train", "r.yaml", "--no-progress", "stray"])
    assert code.value.code == 2 and "unrecognized arguments: stray" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["audit", "data.jsonl", "--no-progress", "train.lr=1"])  # audit takes no overrides


def test_a_csv_header_with_a_line_break_gives_a_one_line_error(tmp_path):
    """Found by tests/test_fuzz.py: a header cell holding a carriage return made a two-line message."""
    from smalltune.data import load_examples
    from smalltune.errors import SmalltuneError

    path = tmp_path / "soup.csv"
    path.write_bytes(b'"\r"\r:')
    with pytest.raises(SmalltuneError) as err:
        load_examples(path)
    assert len(str(err.value).splitlines()) == 1 and "'\\r'" in str(err.value)


@pytest.mark.parametrize("name,data", [
    ("escaped.jsonl", json.dumps({"prompt": "Open today?", "completion": "Yes\b until 5 pm."}).encode() + b"\n"),
    ("form-feed.jsonl", json.dumps({"prompt": "Open today?", "completion": "Yes\f until 5 pm."}).encode() + b"\n"),
    ("raw.csv", b"prompt,completion\nOpen today?,Yes\x08 until 5 pm.\n"),
])
def test_control_characters_train_and_the_audit_warns(tmp_path, name, data):
    """Found by tests/test_fuzz.py (random run): training read a backspace the audit called a format error.

    One rule now: a control character in the text trains as it is, and the audit warns about it."""
    from smalltune.audit import audit

    path = tmp_path / name
    path.write_bytes(data)
    assert len(load_examples(path)) == 1
    report = audit(path, progress=False)
    (found,) = [f for f in report.findings if f.check == "format"]
    assert found.severity == "warning" and found.title == "control or NUL characters"
    assert "U+0008" in found.examples[0]["problem"] or "U+000C" in found.examples[0]["problem"]


@pytest.mark.parametrize("name,data", [
    ("utf16.csv", "prompt,completion\nOpen today?,Yes.\n".encode("utf-16-le")),  # no BOM: decodes as UTF-8
    ("nul.jsonl", b'{"prompt": "Open today?", "completion": "Yes\x00."}\n'),
])
def test_a_nul_byte_is_refused_by_training_and_an_audit_error(tmp_path, name, data):
    from smalltune.audit import audit

    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(SmalltuneError, match=r":1: NUL byte at column \d+: .*UTF-16 or binary file"):
        load_examples(path)
    titles = {f.title for f in audit(path, progress=False).errors}
    assert "NUL bytes in the file" in titles
