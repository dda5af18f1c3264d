"""The typed result files: every record round-trips, unversioned (older) files still read, a newer major
version is refused with one line, and the report, verdicts and run directory read through the records."""

from __future__ import annotations

import json
import math

import pytest

from smalltune.cli import main
from smalltune.errors import SmalltuneError
from smalltune.evaluate.verdicts import read_training, verdicts
from smalltune.report import report
from smalltune.report.load import load_results
from smalltune.rundir import RunDir
from smalltune.schema import (EVAL_SCHEMA, METRICS_SCHEMA, SUMMARY_SCHEMA, EvalRecord, EvalResult, EventRecord,
                              OtherRecord, SchemaVersionError, TrainRecord, TrainSummary, encode_metric, metric_at,
                              parse_metric, read_eval, read_metrics, read_train_summary)

from test_report import _eval, _metrics, write_run

TRAIN = {"type": "train", "step": 4, "epoch": 0.5, "loss": 2.25, "lr": 1e-3, "grad_norm": 0.75, "tokens": 640,
         "elapsed": 3.5, "ewc_penalty": 0.01}
EVAL = {"type": "eval", "step": 4, "epoch": 0.5, "eval_loss": 2.0, "eval_ppl": math.exp(2.0), "eval_token_acc": 0.4,
        "eval_tokens": 120, "train_loss": 2.2, "best_step": 4, "ref_ppl": 21.0, "ref_ppl_base": 20.0, "forgetting": 0.05,
        "within_forgetting_budget": True, "over_memorization": False, "ppl_ratio": 1.0, "my_guard_signal": 7}
EVENT = {"type": "event", "event": "guard", "step": 4, "guard": "early_stopping", "action": "stop",
         "message": "eval_loss has not improved", "values": {"best": 1.9}}
SUMMARY = {"run_dir": "runs/x", "stopped": "early_stopping", "stop_message": "no improvement", "steps": 9, "epochs": 1.0,
           "best_step": 6, "best_metrics": {"step": 6, "eval_loss": 2.1, "eval_ppl": 8.17, "eval_token_acc": 0.41},
           "selection": "step 6: lowest eval_loss", "train_tokens": 5400, "wall_seconds": 12.5,
           "trainable_params": 1000, "total_params": 100000,
           "data": {"validation_source": "carved", "train": {"examples": 32, "tokens": 1000, "trainable_tokens": 400},
                    "validation": {"examples": 4, "tokens": 120, "trainable_tokens": 50}, "processes": 1},
           "events": [{"guard": "early_stopping", "action": "stop", "step": 9, "message": "m", "values": {}}],
           "guards": {"overfitting": {"gap": 0.2}}, "artifact_written": True, "base_metrics": None,
           "provenance": {"seed": 0}, "note_from_a_plugin": "kept"}


@pytest.mark.parametrize("data, cls", [(TRAIN, TrainRecord), (EVAL, EvalRecord), (EVENT, EventRecord)])
def test_each_metrics_record_round_trips(data, cls):
    rec = parse_metric({"schema_version": METRICS_SCHEMA, **data})
    assert type(rec) is cls and rec.kind == data["type"] and rec.step == 4
    assert rec.to_dict() == {"schema_version": METRICS_SCHEMA, **data}
    assert parse_metric(json.loads(json.dumps(rec.to_dict()))) == rec


def test_signals_unknown_to_the_schema_are_kept_in_extra():
    train, ev = parse_metric(TRAIN), parse_metric(EVAL)
    assert train.extra == {"ewc_penalty": 0.01} and train.lookup("ewc_penalty") == 0.01 and train.lookup("loss") == 2.25
    assert ev.ref_ppl == 21.0 and ev.within_forgetting_budget is True and ev.extra == {"my_guard_signal": 7}
    # An optional guard signal that is absent stays out of the line (no "ref_ppl": null on every record).
    assert "ref_ppl" not in encode_metric({"type": "eval", "step": 1, "eval_loss": 1.0})
    # A kind this version does not know survives reading and writing back unchanged.
    other = parse_metric({"schema_version": "1.4", "type": "probe_sample", "step": 3, "text": "hi"})
    assert isinstance(other, OtherRecord) and other.kind == "probe_sample"
    assert other.to_dict() == {"schema_version": "1.4", "type": "probe_sample", "step": 3, "text": "hi"}


def test_summary_and_eval_round_trip():
    summary = TrainSummary.from_dict({"schema_version": SUMMARY_SCHEMA, **SUMMARY})
    assert summary.to_dict() == {"schema_version": SUMMARY_SCHEMA, **SUMMARY}
    assert summary.best.eval_ppl == 8.17 and summary.best.step == 6 and summary.base is None
    assert summary.data_info.train.trainable_tokens == 400 and summary.data_info.extra == {"processes": 1}
    assert [(e.event, e.guard, e.action) for e in summary.guard_events] == [("guard", "early_stopping", "stop")]
    assert summary.extra == {"note_from_a_plugin": "kept"}

    settings = {"generation": {"max_new_tokens": 64, "do_sample": False}, "quick": True, "caps": {"test": 16},
                "seed": 0, "heldout": "test.jsonl", "reference": "wiki", "skipped": {}, "wall_seconds": 9.5,
                "ci": "95% paired bootstrap", "max_new_tokens": 64}
    data = json.loads(json.dumps({"schema_version": EVAL_SCHEMA, **_eval(), "settings": settings}))
    result = EvalResult.from_dict(data)
    assert result.to_dict() == data and EvalResult.from_dict(result.to_dict()) == result
    assert result.settings.quick is True and result.settings.extra == {"max_new_tokens": 64}
    assert result.verdicts[1].status == "problem" and result.samples[0].key_facts == ["9 am"]
    assert result.metric("task", "key_fact_recall").ci_low == 0.3
    assert metric_at(result.probes, "task", "missing") is None and metric_at(result.probes, "nope", "x") is None


def test_written_summary_records_the_version_and_reads_back(tmp_path):
    summary = TrainSummary(**{k: v for k, v in SUMMARY.items() if k != "note_from_a_plugin"})
    assert summary.schema_version == SUMMARY_SCHEMA and summary.to_dict()["schema_version"] == SUMMARY_SCHEMA
    path = tmp_path / "train_summary.json"
    path.write_text(json.dumps(summary.to_dict()))
    assert read_train_summary(path) == summary


def test_run_dir_log_stamps_the_version_and_resume_truncation_keeps_records(tmp_path):
    run = RunDir(tmp_path / "run")
    run.log({k: v for k, v in TRAIN.items()})  # a plain dict, as a loop may still write
    run.log(parse_metric(EVAL))  # a typed record read from an older file keeps its own version
    run.log(EventRecord(event="end", step=9, extra={"stopped": "completed"}))
    lines = [json.loads(x) for x in run.metrics.read_text().splitlines()]
    assert [x["schema_version"] for x in lines] == [METRICS_SCHEMA, "0", METRICS_SCHEMA]
    records = run.read_metrics()
    assert [r.kind for r in records] == ["train", "eval", "event"] and records[2].extra == {"stopped": "completed"}
    run.truncate_metrics_after(4)
    assert run.read_metrics() == records[:2]


def test_version_0_files_without_schema_version_still_read(tmp_path):
    # The hand-written run of test_report holds files as smalltune wrote them before versioning.
    run = write_run(tmp_path / "run")
    summary = read_train_summary(run / "train_summary.json")
    assert summary.schema_version == "0" and summary.stopped == "early_stopping" and summary.best_step == 6
    assert summary.guards == {} and summary.artifact_written  # fields the old file lacks take their defaults
    result = read_eval(run / "eval.json")
    assert result.schema_version == "0" and result.run_dir == str(run) and len(result.samples) == 1
    log = read_metrics(run / "metrics.jsonl")
    assert len(log.records) == len(_metrics()) and log.bad_lines == 0
    assert {r.schema_version for r in log.records} == {"0"} and [e.event for e in log.events] == ["start", "guard", "end"]
    training = read_training(RunDir(run))
    assert training.best.eval_ppl == 8.17 and [r.step for r in training.evals] == [3, 6, 9]
    assert {v.name for v in verdicts({}, training)} >= {"validation_perplexity", "overfitting"}


def test_future_major_version_is_refused_with_one_line(tmp_path):
    run = write_run(tmp_path / "run")
    summary = json.loads((run / "train_summary.json").read_text())
    (run / "train_summary.json").write_text(json.dumps({**summary, "schema_version": "2.0"}))
    with pytest.raises(SchemaVersionError) as e:
        read_train_summary(run / "train_summary.json")
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "train_summary.json" in msg and "2.0" in msg and "upgrade smalltune" in msg
    assert isinstance(e.value, SmalltuneError)
    # A newer minor of the same major is read: what it added lands in extra.
    (run / "eval.json").write_text(json.dumps({**_eval(), "schema_version": "1.7", "new_section": {"a": 1}}))
    assert read_eval(run / "eval.json").extra == {"new_section": {"a": 1}}
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"schema_version": "3.1", "type": "train", "step": 10}) + "\n")
    with pytest.raises(SchemaVersionError, match=r"metrics\.jsonl:\d+: schema_version 3\.1"):
        read_metrics(run / "metrics.jsonl")
    # The report lists what it cannot read instead of misreading it, and still renders the rest.
    res = load_results(run)
    assert res.summary is None and res.curves is None and res.eval is not None
    assert any(p.startswith("train_summary.json: schema_version 2.0") for p in res.problems)
    assert any(p.startswith("metrics.jsonl:") and "3.1" in p for p in res.problems)
    assert "upgrade smalltune" in report(run).read_text()


def test_cli_run_reads_the_summary_through_the_schema(tmp_path, capsys, monkeypatch):
    from smalltune import pipeline

    run = write_run(tmp_path / "run")
    summary = json.loads((run / "train_summary.json").read_text())
    (run / "train_summary.json").write_text(json.dumps({**summary, "schema_version": "9.0"}))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((run / "recipe.yaml").read_text())
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: run / "report.html")
    assert main(["run", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "schema_version 9.0" in err and len(err.splitlines()) == 1


def test_report_renders_from_typed_records(tmp_path):
    res = load_results(write_run(tmp_path / "run"))
    assert isinstance(res.summary, TrainSummary) and isinstance(res.eval, EvalResult)
    assert all(isinstance(r, EvalRecord) for r in res.curves.evals)
    assert [e.guard for e in res.curves.guard_events] == ["early_stopping"]
    steps, ppl = res.curves.series("evals", "eval_ppl")
    assert steps == [3, 6, 9] and ppl == [12.2, 8.17, 9.97]
    assert res.verdicts[1].fix.startswith("lower train.epochs") and res.samples[0].facts_found("open at 9 am") == 1
