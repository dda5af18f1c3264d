"""Experiment trackers (``train.report_to``): training loss, evaluations and guard events, as they happen.

We use accelerate's tracker integration (``Accelerator(log_with=...)``, ``init_trackers``, ``log``)
rather than each tracker's own client: one code path for TensorBoard, MLflow, trackio and wandb.
This plugin only translates our metrics records into tracker values:

* ``train/<name>`` per optimizer step (loss, lr, grad_norm, tokens, plugin penalties),
* ``eval/<name>`` per evaluation (validation loss, perplexity, token accuracy, guard signals),
  and ``base/<name>`` once, the base model on the same validation set,
* ``guard/<guard>`` per guard event (0 note, 1 warn, 2 stop) and its message as text where the
  tracker takes text (TensorBoard, wandb; an MLflow run gets ``guards/step-N-<guard>.txt``).

Trackers finish on the run's "end" record, not in ``close`` (which the loop calls before that
record). ``finish`` is called per tracker instead of ``accelerator.end_training()``, which would also
tear down the process group that the loop still needs. The MLflow run's id is kept in
``<run>/trackers/mlflow.json`` so a resumed training continues the same MLflow run and ``smalltune run``
can attach ``report.html`` and ``eval.json`` to it at the end (:func:`attach_results`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SmalltuneError
from ..rundir import atomic_write_json, read_json
from .plugins import Plugin
from .regularize import REGULARIZERS

PROJECT = "smalltune"  # TensorBoard subfolder, MLflow experiment, trackio/wandb project
MLFLOW_FILE = "mlflow.json"
ACTION_CODE = {"note": 0, "warn": 1, "stop": 2, "abandon": 3}
SKIP = {"type", "event", "step", "epoch", "schema_version"}
INSTALL = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio", "wandb": "wandb"}


def _available(name: str) -> bool:
    from accelerate.utils import imports

    return bool(getattr(imports, f"is_{name}_available")())


def _numbers(record: dict, prefix: str) -> dict:
    return {f"{prefix}/{k}": float(v) for k, v in record.items()
            if k not in SKIP and isinstance(v, (int, float)) and not isinstance(v, bool)}


def flat_config(recipe) -> dict:
    """The recipe as dotted keys with scalar values (what tracker hyperparameter tables accept)."""
    out: dict = {}

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)

    walk(recipe.to_dict(), "")
    return out


def tracker_dir(run_path) -> Path:
    return Path(run_path) / "trackers"


@REGULARIZERS.register("trackers")
class Trackers(Plugin):
    """Sends what the run logs to the trackers named in ``train.report_to``."""

    name = "trackers"
    keys = ("train.report_to",)
    order = 95  # after the guards: it only listens

    def __init__(self, names: list[str]):
        self._names, self._acc, self._open = list(names), None, False

    @classmethod
    def enabled(cls, recipe) -> bool:
        return bool(recipe.train.report_to)

    @classmethod
    def from_recipe(cls, recipe) -> "Trackers":
        missing = [n for n in recipe.train.report_to if not _available(n)]
        if missing:
            raise SmalltuneError(f"train.report_to: {', '.join(missing)} not installed; "
                                 f"pip install {' '.join(INSTALL[n] for n in missing)}")
        return cls(recipe.train.report_to)

    def state_dict(self) -> dict:
        return {}  # nothing to restore: a resumed run reopens the same trackers

    def setup(self, env) -> dict:
        acc = env.accelerator
        if acc is None or not acc.is_main_process or self._open:
            return {}
        folder = tracker_dir(env.run_path)
        acc.project_configuration.logging_dir = str(folder)  # make_accelerator ran before the run dir existed
        name = Path(env.run_path).name
        kwargs = {"mlflow": {"run_name": name}, "trackio": {"name": name},
                  "wandb": {"name": name, "dir": str(folder), "mode": os.environ.get("WANDB_MODE", "offline")},
                  "tensorboard": {}}
        if (folder / MLFLOW_FILE).exists():  # resumed: continue the same MLflow run
            kwargs["mlflow"] = {"run_id": read_json(folder / MLFLOW_FILE)["run_id"]}
        acc.init_trackers(PROJECT, config=flat_config(env.recipe), init_kwargs=kwargs)
        self._acc, self._open = acc, True
        for tracker in acc.trackers:
            if tracker.name == "mlflow":
                import mlflow

                atomic_write_json(folder / MLFLOW_FILE, {"run_id": tracker.active_run.info.run_id,
                                                         "tracking_uri": mlflow.get_tracking_uri(),
                                                         "experiment": PROJECT})
        return {"trackers": [t.name for t in acc.trackers]}

    def log(self, record: dict) -> None:
        if not self._open:
            return
        kind, step = record.get("type"), record.get("step")
        if kind == "train":
            self._acc.log(_numbers(record, "train"), step=step)
        elif kind == "eval":
            self._acc.log(_numbers(record, "eval"), step=step)
        elif record.get("event") == "start" and isinstance(record.get("base_eval"), dict):
            self._acc.log(_numbers(record["base_eval"], "base"), step=0)
        elif record.get("event") == "guard":
            self._guard(record)
        elif record.get("event") == "end":
            self.finish()

    def _guard(self, record: dict) -> None:
        guard, step = record.get("guard", "guard"), record.get("step")
        self._acc.log({f"guard/{guard}": ACTION_CODE.get(record.get("action"), 0)}, step=step)
        text = f"{record.get('action')}: {record.get('message', '')}"
        for tracker in self._acc.trackers:
            if tracker.name in ("tensorboard", "wandb"):
                tracker.log({f"guard/{guard}/message": text}, step=step)
            elif tracker.name == "mlflow":
                import mlflow

                mlflow.log_text(text, f"guards/step-{step}-{guard}.txt")

    def finish(self) -> None:
        if self._open:
            for tracker in self._acc.trackers:
                tracker.finish()
            self._open = False


def attach_results(run_dir) -> list[str]:
    """Add ``report.html``, ``report.md`` and ``eval.json`` (and headline evaluation numbers) to the run's
    MLflow run, when training tracked one; returns the files attached. Called at the end of ``smalltune run``."""
    folder = tracker_dir(run_dir)
    if not (folder / MLFLOW_FILE).exists():
        return []
    from mlflow.tracking import MlflowClient

    info = read_json(folder / MLFLOW_FILE)
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    files = [p for p in (Path(run_dir) / n for n in ("report.html", "report.md", "eval.json")) if p.exists()]
    for path in files:
        client.log_artifact(info["run_id"], str(path))
    if (Path(run_dir) / "eval.json").exists():
        from ..evaluate.summary import HEADLINES
        from ..schema.evaluation import read_eval

        result = read_eval(Path(run_dir) / "eval.json", run_dir)
        for probe, key, _, _ in HEADLINES:
            m = result.metric(probe, key)
            for side in ("finetuned", "delta"):
                value = getattr(m, side) if m is not None else None
                if isinstance(value, (int, float)):
                    client.log_metric(info["run_id"], f"final/{probe}.{key}.{side}", float(value))
    return [p.name for p in files]
