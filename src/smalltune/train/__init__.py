"""Training: methods, guards, the loop, checkpoints and the trained artifact.

Kept import-light (no torch) so ``import smalltune`` and ``smalltune --help`` stay fast; the
functions below import their modules on first call.
"""


def train(recipe, resume: bool = False, progress: bool = True, **kwargs):
    """Fine-tune according to ``recipe``; see :func:`smalltune.train.loop.train` (``base=``, ``splits=``).

    >>> result = smalltune.train(smalltune.load_recipe("recipe.yaml"))
    """
    from .loop import train as _train

    return _train(recipe, resume=resume, progress=progress, **kwargs)


def load_trained(run_dir, overrides: list[str] = ()):
    """(model, tokenizer, recipe) of a finished run; see :func:`smalltune.train.artifact.load_trained`."""
    from .artifact import load_trained as _load

    return _load(run_dir, overrides)


__all__ = ["train", "load_trained"]
