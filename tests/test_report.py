"""The report renders from hand-written result files (the contracts of audit, train and evaluate)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from smalltune.cli import main
from smalltune.report import report

EVIL = '<script>alert("x")</script>'


def write_run(path: Path, skip: tuple[str, ...] = ()) -> Path:
    """A complete run directory written by hand, leaving out the files named in ``skip``."""
    path.mkdir(parents=True, exist_ok=True)
    files = {
        "recipe.yaml": "name: hand-run\nmodel:\n  name: tiny\ndata:\n  train: train.jsonl\n  max_length: 128\n"
                       "method:\n  name: lora\n  r: 8\ntrain:\n  lr: 0.001\n  epochs: 2\n  batch_size: 4\n  seed: 0\n",
        "provenance.json": json.dumps({"smalltune_version": "0.1.0", "libraries": {"torch": "2.13.0"},
                                       "python": "3.11", "platform": "linux", "seed": 0}),
        "audit.json": json.dumps({"provenance": {}, "stats": {"train": {"examples": 36, "tokens": 1200}},
                                  "findings": [
            {"check": "duplicates", "severity": "warning", "title": "exact duplicates", "count": 2,
             "message": f"two examples repeat {EVIL}", "examples": [{"file": "train.jsonl", "line": 4, "id": "ex-3"}]},
            {"check": "leakage", "severity": "error", "title": "validation leaks into train", "count": 1,
             "message": "one validation question appears in train", "examples": []}]}),
        "metrics.jsonl": "".join(json.dumps(r) + "\n" for r in _metrics()),
        "train_summary.json": json.dumps({
            "run_dir": str(path), "stopped": "early_stopping", "stop_message": "eval_loss has not improved",
            "steps": 9, "epochs": 1.0, "best_step": 6, "selection": "lowest eval_loss",
            "best_metrics": {"eval_loss": 2.1, "eval_ppl": 8.17, "eval_token_acc": 0.41},
            "train_tokens": 5400, "wall_seconds": 12.5, "trainable_params": 1000, "total_params": 100000,
            "data": {"validation_source": "carved 12% of train", "train": {"examples": 32, "tokens": 1000, "trainable_tokens": 400},
                     "validation": {"examples": 4, "tokens": 120, "trainable_tokens": 50}}, "events": []}),
        "eval.json": json.dumps(_eval()),
    }
    for name, text in files.items():
        if name not in skip:
            (path / name).write_text(text, encoding="utf-8")
    return path


def _metrics() -> list[dict]:
    recs = [{"type": "event", "event": "start", "step": 0}]
    for step in range(1, 10):
        recs.append({"type": "train", "step": step, "epoch": step / 9, "loss": 3.0 - 0.2 * step, "lr": 1e-3 * (1 - step / 10),
                     "grad_norm": 1.0, "tokens": 600 * step, "elapsed": step})
        if step % 3 == 0:
            recs.append({"type": "eval", "step": step, "epoch": step / 9, "eval_loss": {3: 2.5, 6: 2.1, 9: 2.3}[step],
                         "eval_ppl": {3: 12.2, 6: 8.17, 9: 9.97}[step], "eval_token_acc": {3: 0.3, 6: 0.41, 9: 0.42}[step],
                         "train_loss": 3.0 - 0.2 * step, "best_step": 6})
    recs.append({"type": "event", "event": "guard", "step": 9, "guard": "early_stopping", "action": "stop",
                 "message": "eval_loss has not improved", "values": {}})
    recs.append({"type": "event", "event": "end", "step": 9, "stopped": "early_stopping"})
    return recs


def _eval() -> dict:
    return {
        "provenance": {}, "settings": {"quick": True, "max_new_tokens": 64},
        "probes": {
            "task": {"key_fact_recall": {"base": 0.1, "finetuned": 0.55, "delta": 0.45, "ci": [0.3, 0.6], "n": 12},
                     "rougeL": {"base": 0.2, "finetuned": 0.5, "delta": 0.3, "ci": None, "n": 12}},
            "memorization": {"rate": {"base": 0.0, "finetuned": 0.25, "delta": 0.25, "n": 8}, "threshold": 0.8,
                             "worst": [{"id": "ex-1", "prompt": "Where are you?", "target": "12 Oak Road & co",
                                        "output": f"12 Oak Road {EVIL}", "overlap_tokens": 5, "similarity": 0.93}]},
            "forgetting": {"reference_ppl": {"base": 20.0, "finetuned": 21.5, "delta": 1.5, "n": 30},
                           "general_qa": {"base": 0.6, "finetuned": 0.55, "delta": -0.05, "n": 20}},
            "robustness": {"typos": {"clean": 0.55, "perturbed": 0.4, "drop": 0.15},
                           "rephrased": {"clean": 0.55, "perturbed": 0.5, "drop": 0.05}},
            "diversity": {"distinct_2": {"base": 0.8, "finetuned": 0.6, "delta": -0.2}},
        },
        "verdicts": [
            {"name": "forgetting", "status": "ok", "value": 0.075, "threshold": 0.1, "message": "general ability held", "fix": ""},
            {"name": "memorization", "status": "problem", "value": 0.25, "threshold": 0.1,
             "message": "a quarter of training answers come back verbatim", "fix": "lower train.epochs | raise method.dropout"},
        ],
        "samples": [{"id": "t1", "category": "hours", "question": f"When do you open? {EVIL}", "reference": "9 am",
                     "base": "I am a language model.", "finetuned": "We open at 9 am.", "key_facts": ["9 am"]}],
    }


SECTIONS = ["overview", "verdicts", "audit", "training", "checkpoints", "task", "forgetting", "memorization",
            "robustness", "samples", "provenance"]


def sections(html: str) -> dict[str, str]:
    """Section id -> its HTML."""
    return dict(re.findall(r'<section id="([a-z]+)" data-section="\1">(.*?)</section>', html, flags=re.S))


def test_full_run_renders_every_section_with_plots(tmp_path):
    run = write_run(tmp_path / "run")
    path = report(run)
    assert path == run / "report.html"
    html = path.read_text()
    found = sections(html)
    assert list(found) == SECTIONS
    assert not any("not run" in body for body in found.values())
    plots = re.findall(r'<svg class="plot" data-plot="([a-z-]+)"', html)
    assert plots == ["training-curves", "checkpoint-metrics", "task", "forgetting", "robustness"]
    # The chosen checkpoint is highlighted in the per-checkpoint table and the guard event listed.
    assert re.search(r'<tr class="best"><td class="num">6</td>', found["checkpoints"])
    assert "early_stopping" in found["training"]
    # Verdicts sorted worst first, with the fix to try on the problem only.
    assert found["verdicts"].index("memorization") < found["verdicts"].index("forgetting")
    assert "try: lower train.epochs | raise method.dropout" in found["verdicts"]
    assert "(threshold: 0.1)" in found["verdicts"]
    # Memorized output shown beside its training target.
    assert "12 Oak Road &amp; co" in found["memorization"]
    md = (run / "report.md").read_text()
    assert "| PROBLEM | memorization" in md and "\\| raise method.dropout" in md
    assert "| audit | 1 error, 1 warning |" in md


def test_user_text_is_escaped(tmp_path):
    html = report(write_run(tmp_path / "run")).read_text()
    assert "<script" not in html
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") == 3  # audit message, memorized output, question


def test_page_is_self_contained(tmp_path):
    html = report(write_run(tmp_path / "run")).read_text()
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', html, flags=re.I)
    assert not re.search(r"<link\b", html, flags=re.I)
    assert not re.search(r"url\((?!#)|@import", html)  # SVG clip paths refer to ids in the page: url(#...)
    assert "<script" not in html


@pytest.mark.parametrize("missing, not_run", [
    (("eval.json",), ["verdicts", "task", "forgetting", "memorization", "robustness", "samples"]),
    (("audit.json",), ["audit"]),
    (("metrics.jsonl", "train_summary.json", "eval.json", "audit.json"),
     ["verdicts", "audit", "training", "checkpoints", "task", "forgetting", "memorization", "robustness", "samples"]),
])
def test_missing_files_say_not_run(tmp_path, missing, not_run):
    html = report(write_run(tmp_path / "run", skip=missing)).read_text()
    found = sections(html)
    assert list(found) == SECTIONS
    assert sorted(k for k, body in found.items() if "not run" in body) == sorted(not_run)
    assert not (run_md := (tmp_path / "run" / "report.md").read_text()).count("Traceback")
    assert ("| evaluation | not run |" in run_md) == ("eval.json" in missing)


def test_probe_left_out_of_eval_says_not_run(tmp_path):
    run = write_run(tmp_path / "run")
    data = _eval()
    del data["probes"]["robustness"]
    (run / "eval.json").write_text(json.dumps(data))
    found = sections(report(run).read_text())
    assert "not run" in found["robustness"] and "not run" not in found["task"]


def test_unreadable_file_is_reported_not_fatal(tmp_path):
    run = write_run(tmp_path / "run")
    (run / "eval.json").write_text("{not json")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "ste')  # a run killed mid-line
    html = report(run).read_text()
    assert "eval.json: unreadable" in html and "metrics.jsonl: 1 unreadable line(s) skipped" in html
    assert 'data-plot="training-curves"' in html


@pytest.mark.parametrize("make", [lambda p: p / "nope", lambda p: p])
def test_cli_report_on_bad_dir_exits_2_with_one_line(tmp_path, capsys, make):
    code = main(["report", str(make(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_report_prints_path(tmp_path, capsys):
    run = write_run(tmp_path / "run", skip=("eval.json",))
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
