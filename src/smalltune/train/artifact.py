"""Load what a run trained: the base model with the run's artifact applied, and the base model beside it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ..errors import SmalltuneError
from ..models import load_from_recipe
from ..recipe import load_recipe
from ..rundir import RunDir
from .methods import METHODS


def load_trained(run_dir: str | Path, overrides: list[str] = ()):
    """(model, tokenizer, recipe) for a finished run, in eval mode; ``overrides`` (dotted recipe keys) change how
    it is used afterwards (``eval.precision=bf16``), not how it was trained.

    >>> model, tok, recipe = load_trained("runs/demo")
    """
    run = RunDir(Path(run_dir))
    if not run.recipe.exists():
        raise SmalltuneError(f"{run.path}: not a run directory (no recipe.yaml)")
    recipe = load_recipe(run.recipe, list(overrides))
    method = METHODS.get(recipe.method.name, "method.name")()
    artifact = run.path / method.artifact
    if not artifact.exists():
        raise SmalltuneError(f"{run.path}: no trained {method.artifact}/ yet; run `smalltune train` (or --resume) first")
    base, tok = load_from_recipe(recipe)
    return method.load(base, artifact), tok, recipe


class ModelPair:
    """A trained model and its base, for answering the same inputs with either (evaluation, chat).

    The base comes from the same weights when the artifact is a PEFT adapter (``disable_adapter``:
    no second copy in memory); every other method (full, partial, hft, bottleneck) loads the base
    from the recipe separately, once, on first use.

    >>> pair = ModelPair(model, recipe)
    >>> with pair.use("base") as base: ...
    """

    def __init__(self, trained: Any, recipe: Any):
        self.trained, self.recipe = trained, recipe
        self._base: Any = None

    @property
    def shares_weights(self) -> bool:
        """Whether the base is the trained model with its adapter off (no second copy of the weights)."""
        return hasattr(self.trained, "disable_adapter")

    @contextlib.contextmanager
    def use(self, which: str):
        """Yield the model called ``which`` ("finetuned" or "base") ready for inference."""
        if which == "finetuned":
            yield self.trained
        elif self.shares_weights:
            with self.trained.disable_adapter():
                yield self.trained
        else:
            if self._base is None:
                self._base, _ = load_from_recipe(self.recipe)
                self._base.to(next(self.trained.parameters()).device).eval()
            yield self._base
