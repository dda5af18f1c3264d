"""The base model's outputs kept on disk between processes (``eval.cache_base_answers``).

What the untrained base model outputs depends only on the model, what it is asked and how it runs, not on the run
that asks: evaluation's greedy answers and per-item losses, and training's measurements of the untrained model
(its validation metrics, the forgetting guard's base perplexity). So a later process on the same base (another run
of the data, a tuning worker, a fold, an update, an update's gate, an evaluation) reads them instead of paying the
passes again (benchmarks/README.md, "The base model's answers kept on disk"; "Guards overhead").

A file's name hashes everything the outputs depend on, library versions included. Anything unreadable is a miss,
never an error; files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable


def model_key(recipe) -> tuple:
    """The base model a recipe loads: name, revision, a local folder's weight files, how it is loaded."""
    from .models import weights_stamp

    m = recipe.model
    return (m.name, m.revision, weights_stamp(m.name), m.load_in_4bit)


def path(kind: str, key: tuple) -> Path:
    """The file for the base's outputs of ``kind`` under ``key`` (``$SMALLTUNE_ANSWER_CACHE``, else the
    smalltune cache's ``answers/``)."""
    import torch
    import transformers

    from . import __version__
    from .models import cache_dir

    folder = Path(os.environ.get("SMALLTUNE_ANSWER_CACHE") or cache_dir() / "answers")
    ident = json.dumps([str(k) for k in (kind, *key, torch.__version__, transformers.__version__, __version__)])
    return folder / f"base-{hashlib.sha256(ident.encode()).hexdigest()[:24]}.json"


def read(file: Path | None, field: str) -> Any | None:
    """``field`` of a file :func:`write` wrote, or None (no file, or one that cannot be read)."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))[field] if file and file.exists() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(file: Path, field: str, value: Any, model: str) -> None:
    from .rundir import atomic_write_json

    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(file, {"schema_version": "1.0", "model": model, field: value})


def remember(recipe, key: tuple, measure: Callable[[], Any]) -> Any:
    """``measure()`` of the recipe's untrained base model, read from disk when an earlier process measured it under
    ``key`` (what the measurement depends on besides the model). The value must be JSON: a number or a dict of them.
    With ``eval.cache_base_answers`` off, just ``measure()``."""
    if not recipe.eval.cache_base_answers:
        return measure()
    file = path("measurement", (*model_key(recipe), *key))
    value = read(file, "value")
    if value is None:
        value = measure()
        write(file, "value", value, recipe.model.name)
    return value
