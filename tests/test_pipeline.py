"""`smalltune run`: audit -> train -> evaluate -> report into one run directory, on the tiny model."""

from __future__ import annotations

import json
import re

import pytest

from smalltune import pipeline
from smalltune.cli import main
from smalltune.errors import SmalltuneError
from smalltune.rundir import RunDir

from conftest import toy_records, write_jsonl

RUN_FILES = ["recipe.yaml", "provenance.json", "audit.json", "metrics.jsonl", "train_summary.json", "eval.json",
             "report.html", "report.md"]


# Small evaluation caps keep the real evaluation to seconds on the tiny model.
SMALL_EVAL = {"eval.test_samples": 4, "eval.memorization_samples": 4, "eval.reference_paragraphs": 2,
              "eval.probe_questions": 4, "eval.max_new_tokens": 8}


def sections(html: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([a-z]+)" data-section="\1">(.*?)</section>', html, flags=re.S))


def test_pipeline_writes_every_file_and_a_full_report(make_recipe):
    recipe = make_recipe(**{"train.max_steps": 6, **SMALL_EVAL})
    path = pipeline.run(recipe, progress=False)
    run = RunDir(path.parent)
    assert path == run.report
    for name in RUN_FILES:
        assert (run.path / name).is_file(), f"{name} missing"
    assert (run.adapter / "adapter_model.safetensors").is_file()
    found = sections(path.read_text())
    # Every stage ran, so the stage-level sections show results, not "not run".
    for name in ("overview", "audit", "training", "checkpoints", "verdicts", "provenance"):
        assert "not run" not in found[name], name
    assert 'data-plot="training-curves"' in found["training"]
    # The report shows the evaluation's own verdicts, not made-up ones.
    verdicts = json.loads(run.eval.read_text())["verdicts"]
    assert verdicts and all(v["name"] in found["verdicts"] for v in verdicts)
    summary = json.loads(run.train_summary.read_text())
    assert summary["steps"] == 6
    assert f"<td class=\"num\">{summary['best_step']}</td>" in found["checkpoints"]


def test_audit_errors_stop_before_training(make_recipe, tmp_path, capsys):
    # Validation questions copied from train: the audit calls this leakage, an error.
    val = write_jsonl(tmp_path / "val.jsonl", toy_records(36)[:6])
    recipe = make_recipe(**{"data.validation": str(val)})
    recipe_file = tmp_path / "recipe.yaml"
    recipe.save(recipe_file)
    assert main(["run", str(recipe_file), "--no-progress"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "audit.json" in err[0] and "--force" in err[0]
    run = RunDir(recipe.output_dir)
    audit = json.loads(run.audit.read_text())
    assert any(f["severity"] == "error" for f in audit["findings"])
    assert not run.metrics.exists() and not run.adapter.exists()  # no compute spent
    # The page is there to read the findings; training and evaluation say "not run".
    found = sections(run.report.read_text())
    assert "leakage" in found["audit"]
    assert "not run" in found["training"] and "not run" in found["verdicts"]


def test_force_trains_despite_audit_errors(make_recipe, tmp_path, monkeypatch):
    val = write_jsonl(tmp_path / "val.jsonl", toy_records(36)[:6])
    recipe = make_recipe(**{"data.validation": str(val), "train.max_steps": 3})
    monkeypatch.setattr(pipeline, "evaluate_stage", lambda *a, **k: None)  # evaluation is tested above
    with pytest.raises(SmalltuneError) as e:
        pipeline.run(recipe, progress=False)
    assert e.value.exit_code == 1
    path = pipeline.run(make_recipe(**{"data.validation": str(val), "train.max_steps": 3}), force=True, progress=False)
    assert RunDir(path.parent).train_summary.exists()


def test_resume_skips_finished_stages(make_recipe, monkeypatch):
    recipe = make_recipe(**{"train.max_steps": 3})
    monkeypatch.setattr(pipeline, "evaluate_stage", lambda *a, **k: None)
    path = pipeline.run(recipe, progress=False)
    run = RunDir(path.parent)
    path.unlink()
    # A resumed run with every result file present redoes nothing but the report.
    run.eval.write_text(json.dumps({"probes": {}, "verdicts": [], "samples": []}))

    def boom(*a, **k):
        raise AssertionError("a finished stage ran again")

    for stage in ("audit_stage", "train_stage", "evaluate_stage"):
        monkeypatch.setattr(pipeline, stage, boom)
    assert pipeline.run(make_recipe(**{"train.max_steps": 3}), resume=True, progress=False) == path
    assert path.is_file()


def test_run_with_bad_recipe_key_exits_2(tmp_path, capsys):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("data:\n  train: x.jsonl\ntrain:\n  lr: -1\n")
    assert main(["run", str(recipe_file)]) == 2
    assert "train.lr must be > 0" in capsys.readouterr().err
