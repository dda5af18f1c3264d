"""train.report_to: training loss, evaluations and guard events reach TensorBoard and MLflow as they happen,
and an MLflow run tracked by `smalltune run` also holds report.html and eval.json. Values are read back with
each tracker's own reader and compared with metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from smalltune import pipeline, train
from smalltune.errors import RecipeError
from smalltune.rundir import RunDir

SMALL_EVAL = {"eval.test_samples": 4, "eval.memorization_samples": 4, "eval.reference_paragraphs": 2,
              "eval.probe_questions": 4, "eval.max_new_tokens": 6}


def records(run: RunDir, kind: str) -> list[dict]:
    lines = [json.loads(x) for x in run.metrics.read_text().splitlines()]
    return [r for r in lines if r.get("type") == kind]


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["tensors"]:  # text (guard messages) is stored as a tensor event
            out.setdefault(tag, []).extend((e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag))
    return out


def test_tensorboard_gets_train_loss_evaluations_and_base(make_recipe):
    pytest.importorskip("tensorboard")
    recipe = make_recipe(**{"train.max_steps": 6, "train.report_to": ["tensorboard"]})
    train(recipe, progress=False)
    run = RunDir(recipe.output_dir)
    scalars = tensorboard_scalars(run.path / "trackers")
    logged = {step: value for step, value in scalars["train/loss"]}
    expected = {r["step"]: r["loss"] for r in records(run, "train")}
    assert sorted(logged) == sorted(expected) == list(range(1, 7))
    assert all(logged[s] == pytest.approx(expected[s], rel=1e-6) for s in expected)
    evals = records(run, "eval")
    assert [s for s, _ in scalars["eval/eval_loss"]] == [r["step"] for r in evals] == [3, 6]
    assert [v for _, v in scalars["eval/eval_loss"]] == pytest.approx([r["eval_loss"] for r in evals], rel=1e-6)
    start = next(r for r in records(run, "event") if r["event"] == "start")
    assert scalars["base/eval_loss"][0][1] == pytest.approx(start["base_eval"]["eval_loss"], rel=1e-6)


def test_guard_events_reach_both_trackers_with_their_message(make_recipe, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    # Any gradient norm is above this limit: the numerical guard stops the run at step 1.
    recipe = make_recipe(**{"train.max_steps": 6, "train.report_to": ["tensorboard", "mlflow"],
                            "guards.grad_norm_limit": 1e-9})
    result = train(recipe, progress=False)
    assert result.stopped == "numerical"
    run = RunDir(recipe.output_dir)
    scalars = tensorboard_scalars(run.path / "trackers")
    assert scalars["guard/numerical"] == [(1, 2.0)]  # 2 = stop
    (step, text), = scalars["guard/numerical/message/text_summary"]  # TensorBoard names text summaries so
    assert step == 1 and text.startswith("stop:") and "gradient" in text.lower()
    run_id = json.loads((run.path / "trackers" / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "guard/numerical")] == [(1, 2.0)]
    saved = client.download_artifacts(run_id, "guards/step-1-numerical.txt", str(tmp_path))
    assert open(saved).read() == text


def test_mlflow_run_gets_metrics_guards_report_and_eval(make_recipe, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    recipe = make_recipe(**{"train.max_steps": 6, "train.report_to": ["mlflow"], **SMALL_EVAL})
    pipeline.run(recipe, quick=False, progress=False)
    run = RunDir(recipe.output_dir)
    info = json.loads((run.path / "trackers" / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    mlrun = client.get_run(info["run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == run.path.name
    assert mlrun.data.params["train.lr"] == str(recipe.train.lr)
    history = {m.step: m.value for m in client.get_metric_history(info["run_id"], "train/loss")}
    assert history == pytest.approx({r["step"]: r["loss"] for r in records(run, "train")}, rel=1e-6)
    evals = {m.step: m.value for m in client.get_metric_history(info["run_id"], "eval/eval_loss")}
    assert evals == pytest.approx({r["step"]: r["eval_loss"] for r in records(run, "eval")}, rel=1e-6)
    artifacts = {a.path for a in client.list_artifacts(info["run_id"])}
    assert {"report.html", "eval.json", "report.md"} <= artifacts
    stored = json.loads(open(client.download_artifacts(info["run_id"], "eval.json", str(tmp_path))).read())
    assert stored == json.loads(run.eval.read_text())
    rouge = stored["probes"]["task"]["rouge_l"]["finetuned"]
    assert client.get_metric_history(info["run_id"], "final/task.rouge_l.finetuned")[0].value == pytest.approx(rouge)


def test_default_is_no_tracker_and_unknown_names_are_refused(make_recipe):
    recipe = make_recipe(**{"train.max_steps": 2})
    assert recipe.train.report_to == []
    train(recipe, progress=False)
    assert not (RunDir(recipe.output_dir).path / "trackers").exists()
    with pytest.raises(RecipeError, match="train.report_to has unknown tracker 'tensorbord'"):
        make_recipe(**{"train.report_to": ["tensorbord"]})
