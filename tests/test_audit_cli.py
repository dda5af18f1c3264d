"""`smalltune audit`: exit codes 0/1/2, --fail-on, --json, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import chat, write_jsonl
from smalltune.audit import AuditReport
from smalltune.cli import main

DATA = Path(__file__).parent / "data" / "audit"
QA = [("When do you open?", "At 8 am on weekdays."), ("Can I pay by card?", "Yes, all major cards."),
      ("Where do I park?", "In the free lot behind us."), ("Do you see children?", "Yes, from age one.")]


def test_clean_data_exits_0_and_writes_json(tmp_path, capsys):
    path = write_jsonl(tmp_path / "t.jsonl", [chat(q, a) for q, a in QA])
    out = tmp_path / "out" / "audit.json"
    assert main(["audit", str(path), "--json", str(out), "--no-progress"]) == 0
    report = AuditReport.from_dict(json.loads(out.read_text()))
    assert report.stats["splits"]["train"]["examples"] == 4 and report.exit_code() == 0
    assert "0 errors" in capsys.readouterr().out


def test_errors_exit_1_and_summary_lists_worst_first(tmp_path, capsys):
    out = tmp_path / "a.json"
    assert main(["audit", str(DATA / "bad_format.jsonl"), "--json", str(out), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "malformed records" in text and "bad_format.jsonl:2" in text
    assert text.index("error") < text.index("warning")
    saved = json.loads(out.read_text())
    assert saved["summary"]["error"] >= 7 and saved["findings"][0]["severity"] == "error"
    # control characters in text still train, so they are a warning (one rule with training's loader)
    assert any(f["title"] == "control or NUL characters" and f["severity"] == "warning" for f in saved["findings"])


def test_fail_on_warning(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [chat(q, a) for q, a in QA] + [chat(*QA[0])])  # a duplicate: warning
    assert main(["audit", str(path), "--no-progress"]) == 0
    assert main(["audit", str(path), "--fail-on", "warning", "--no-progress"]) == 1


def test_leakage_is_an_error(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [chat(q, a) for q, a in QA])
    val = write_jsonl(tmp_path / "val.jsonl", [chat(QA[2][0], "Behind the building.")])
    assert main(["audit", str(train), "--validation", str(val), "--no-progress"]) == 1


def test_unusable_input_exits_2_with_one_line(tmp_path, capsys):
    cases = [
        ["audit", str(tmp_path / "missing.jsonl")],
        ["audit", str(write_jsonl(tmp_path / "x.txt", []))],
        ["audit", str(DATA / "bad_format.jsonl"), "--validation", str(tmp_path / "nope.jsonl")],
        ["audit"],  # no data and no recipe
        ["audit", str(DATA / "bad_format.jsonl"), "--recipe", str(tmp_path / "no-recipe.yaml")],
    ]
    junk = tmp_path / "junk.jsonl"
    junk.write_text("{not json\n[1, 2\n")
    cases.append(["audit", str(junk)])
    for argv in cases:
        assert main(argv + ["--no-progress"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
