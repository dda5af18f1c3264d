"""Forgetting-aware automatic tuning (``smalltune tune``): see ``study.py``."""


def tune(recipe, resume: bool = False, progress: bool = True, trials: int | None = None):
    """Search the recipe's hyperparameters on its own data; see :func:`smalltune.tune.study.tune`."""
    from .study import tune as _tune

    return _tune(recipe, resume=resume, progress=progress, trials=trials)


__all__ = ["tune"]
