"""Load what a run trained: the base model with the run's artifact applied."""

from __future__ import annotations

from pathlib import Path

from ..errors import SmalltuneError
from ..models import load_from_recipe
from ..recipe import load_recipe
from ..rundir import RunDir
from .methods import METHODS


def load_trained(run_dir: str | Path):
    """(model, tokenizer, recipe) for a finished run, in eval mode.

    >>> model, tok, recipe = load_trained("runs/demo")
    """
    run = RunDir(Path(run_dir))
    if not run.recipe.exists():
        raise SmalltuneError(f"{run.path}: not a run directory (no recipe.yaml)")
    recipe = load_recipe(run.recipe)
    method = METHODS.get(recipe.method.name, "method.name")()
    artifact = run.path / method.artifact
    if not artifact.exists():
        raise SmalltuneError(f"{run.path}: no trained {method.artifact}/ yet; run `smalltune train` (or --resume) first")
    base, tok = load_from_recipe(recipe)
    return method.load(base, artifact), tok, recipe
