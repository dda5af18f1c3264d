"""Evaluation: task quality, memorization, forgetting, robustness and diversity, base vs fine-tuned.

Kept import-light (no torch) so ``import smalltune`` stays fast; :func:`evaluate` imports the
runner on first call. Probes live in ``probes/`` (one module each, one registry), pure metrics in
``metrics.py``, thresholds in ``verdicts.py``.
"""


def evaluate(run_dir, test=None, reference=None, quick: bool = False, probes=None, progress: bool = True,
             precision: str | None = None):
    """Evaluate a trained run; writes ``<run_dir>/eval.json``. See :func:`smalltune.evaluate.runner.evaluate`.

    >>> result = smalltune.evaluate("runs/dental-demo", quick=True)
    >>> [v.name for v in result.verdicts if v.status != "ok"]
    """
    from .runner import evaluate as _evaluate

    return _evaluate(run_dir, test=test, reference=reference, quick=quick, probes=probes, progress=progress,
                     precision=precision)


__all__ = ["evaluate"]
