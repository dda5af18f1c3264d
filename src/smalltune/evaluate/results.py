"""The metric shape of evaluation results; the records of ``eval.json`` are in :mod:`smalltune.schema.evaluation`.

Every metric has one shape, :func:`metric`: base and fine-tuned values on the same inputs, their
difference, a 95% paired bootstrap CI **of the delta** (items resampled, both models kept
together), and the item count. The report renders only from these dictionaries.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

# The records of eval.json live in the result schema; re-exported for the probes and the runner.
from ..schema.evaluation import EvalResult, EvalSettings, Sample, Verdict
from .metrics import bootstrap_ci


def _clean(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def metric(base: Sequence[float], finetuned: Sequence[float], statistic: Callable | None = None,
           seed: int = 0, n_boot: int = 1000, recenter: bool = False) -> dict:
    """The metric shape for paired per-item values (None items are dropped pairwise).

    ``statistic`` maps an (items, k) array to a number; by default it is the mean of column 0.
    Per-item rows may carry several columns (e.g. summed loss and token count) for weighted
    statistics; then ``base`` and ``finetuned`` are sequences of tuples.

    >>> metric([0, 0, 1], [1, 1, 1])
    {'base': 0.333333, 'finetuned': 1.0, 'delta': 0.666667, 'ci': [...], 'n': 3}
    """
    pairs = [(b, f) for b, f in zip(base, finetuned) if b is not None and f is not None]
    if not pairs:
        return {"base": None, "finetuned": None, "delta": None, "ci": [None, None], "n": 0}
    b = np.array([np.atleast_1d(p[0]) for p in pairs], dtype=float)
    f = np.array([np.atleast_1d(p[1]) for p in pairs], dtype=float)
    stat = statistic or (lambda a: float(np.mean(a[:, 0])))
    width = b.shape[1]
    both = np.concatenate([b, f], axis=1)
    ci = bootstrap_ci(both, lambda rows: stat(rows[:, width:]) - stat(rows[:, :width]), n_boot=n_boot, seed=seed,
                      recenter=recenter)
    vb, vf = stat(b), stat(f)
    return {"base": _clean(vb), "finetuned": _clean(vf), "delta": _clean(vf - vb),
            "ci": [_clean(ci[0]), _clean(ci[1])], "n": len(pairs)}


def single(value: float | None, n: int) -> dict:
    """The metric shape for something measured on one model only (the other side is None)."""
    return {"base": None, "finetuned": _clean(value), "delta": None, "ci": [None, None], "n": n}


__all__ = ["metric", "single", "EvalResult", "EvalSettings", "Sample", "Verdict"]
