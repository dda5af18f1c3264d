"""Per-fold numbers and their mean with a 95% CI across folds.

Each fold's numbers are read back from its own result files (``eval.json``, ``train_summary.json``)
through the typed schema, so ``cv.json`` can always be recomputed from the fold folders.

The interval is Student's t over the k fold values: ``mean ± t(0.975, k-1) · sd / √k``. Folds share
most of their training data, so their scores are positively correlated and this interval is known
to be too narrow ("No Unbiased Estimator of the Variance of K-Fold Cross-Validation", Bengio &
Grandvalet, JMLR 2004); we also give the Nadeau–Bengio corrected interval ("Inference for the
Generalization Error", Machine Learning 2003), whose variance factor ``1/k + n_test/n_train``
widens it for that overlap. Neither is exact; read them as the spread to expect, not a guarantee.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..evaluate.summary import HEADLINES
from ..rundir import RunDir
from ..schema import read_train_summary
from ..schema.evaluation import estimate_at, read_eval

# The headline rows of `smalltune evaluate` (evaluate/summary.py), plus forgetting as a relative change.
RELATIVE = ("forgetting", "reference_ppl_relative_change", "general-text perplexity change (relative)")
SIDES = ("finetuned", "base", "delta")


def fold_numbers(run_dir: Path) -> dict:
    """What one fold contributes: training's chosen checkpoint and every headline metric, from its files."""
    run = RunDir(Path(run_dir))
    out: dict = {"run_dir": str(run.path), "training": None, "metrics": {}}
    if run.train_summary.exists():
        s = read_train_summary(run.train_summary)
        best = s.best_metrics or {}
        out["training"] = {"steps": s.steps, "epochs": s.epochs, "best_step": s.best_step,
                           "best_epoch": best.get("epoch"), "best_eval_loss": best.get("eval_loss"),
                           "stopped": s.stopped, "adapter_written": s.artifact_written}
    if run.eval.exists():
        result = read_eval(run.eval, run.path)
        for probe, key, label, _ in HEADLINES:
            m = result.metric(probe, key)
            if m is not None and m.n:
                out["metrics"][f"{probe}.{key}"] = {"label": label, "n": m.n,
                                                    **{side: getattr(m, side) for side in SIDES}}
        probe, key, label = RELATIVE
        if (e := estimate_at(result.probes, probe, key)) is not None and e.value is not None:
            out["metrics"][f"{probe}.{key}"] = {"label": label, "n": e.n, "finetuned": e.value, "base": None,
                                                "delta": None}
    return out


def t_interval(values: list[float], n_train: float | None = None, n_test: float | None = None) -> dict:
    """Mean, sample sd, and the 95% t-interval over fold values (plus the corrected one when sizes are given).

    >>> t_interval([0.5, 0.7, 0.6])["ci"]
    [0.351596, 0.848404]
    """
    from scipy import stats

    k = len(values)
    if k == 0:
        return {"mean": None, "sd": None, "ci": [None, None], "k": 0}
    mean = sum(values) / k
    if k < 2:
        return {"mean": _r(mean), "sd": None, "ci": [None, None], "k": k}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    t = float(stats.t.ppf(0.975, k - 1))
    out = {"mean": _r(mean), "sd": _r(sd), "ci": [_r(mean - t * sd / math.sqrt(k)), _r(mean + t * sd / math.sqrt(k))],
           "k": k}
    if n_train and n_test:
        half = t * sd * math.sqrt(1 / k + n_test / n_train)
        out["ci_corrected"] = [_r(mean - half), _r(mean + half)]
    return out


def spread(values: list[float]) -> dict:
    """min, median, max, mean of a per-fold quantity (the chosen checkpoint's step or epoch)."""
    import statistics

    if not values:
        return {"min": None, "median": None, "max": None, "mean": None, "values": []}
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "mean": _r(sum(values) / len(values)), "values": values}


def aggregate(folds: list[dict], n_train: float | None = None, n_test: float | None = None) -> dict:
    """Mean ± CI of every headline metric over the folds that have it, and the spread of the chosen checkpoint."""
    metrics: dict = {}
    names = list(dict.fromkeys(name for f in folds for name in f["metrics"]))
    for name in names:
        rows = [f["metrics"][name] for f in folds if name in f["metrics"]]
        metrics[name] = {"label": rows[0]["label"]}
        for side in SIDES:
            values = [r[side] for r in rows if isinstance(r.get(side), (int, float))]
            if values:
                metrics[name][side] = t_interval(values, n_train, n_test)
    trained = [f["training"] for f in folds if f["training"]]
    checkpoints = {
        "best_step": spread([t["best_step"] for t in trained if t["best_step"] is not None]),
        "best_epoch": spread([t["best_epoch"] for t in trained if t["best_epoch"] is not None]),
        "steps": spread([t["steps"] for t in trained]),
        "stopped": {reason: sum(t["stopped"] == reason for t in trained) for reason in
                    dict.fromkeys(t["stopped"] for t in trained)},
    }
    return {"metrics": metrics, "checkpoints": checkpoints}


def _r(x: float) -> float:
    return round(float(x), 6)
