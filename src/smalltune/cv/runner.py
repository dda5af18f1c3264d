"""``smalltune cv``: train and evaluate on k folds of the training data, in one process, on one loaded base.

Each fold is an ordinary run directory (``<output>/folds/fold-<k>/``): its validation split is the
held-out fold (recorded in its ``splits.json``), which both guides training (early stopping, the
chosen checkpoint) and is what the fold is evaluated on. ``cv.json`` is rewritten after every fold,
so a stopped cross-validation shows what finished and ``--resume`` continues from there.
"""

from __future__ import annotations

import copy
import datetime as _dt
from collections import Counter
from pathlib import Path

from .. import console
from ..errors import SmalltuneError
from ..provenance import provenance
from ..rundir import RunDir, atomic_write_json, read_json
from .aggregate import aggregate, fold_numbers
from .folds import NO_CATEGORY, Fold, make_folds

CV_FILE = "cv.json"
CV_SCHEMA = "1.0"
CI_TEXT = ("mean over folds with a 95% Student-t interval (t(0.975, k-1)·sd/√k); ci_corrected widens it by the "
           "Nadeau–Bengio factor √(1/k + n_test/n_train) for the folds' shared training data")


def default_output(recipe) -> Path:
    stem = Path(recipe.data.train).stem or "data"
    return Path("runs") / f"{recipe.name or stem}-cv-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def fold_recipe(recipe, output: Path, fold: Fold):
    """The recipe of one fold: its own run directory; the held-out fold replaces any validation/test file."""
    r = copy.deepcopy(recipe)
    r.output_dir = str(output / "folds" / f"fold-{fold.index}")
    r.name = f"{recipe.name or Path(recipe.data.train).stem}-fold-{fold.index}"
    r.data.validation = None  # the fold is the validation split (recorded in splits.json)
    r.data.test = None  # evaluation then reads the run's recorded validation split: the held-out fold
    return r


def cross_validate(recipe, folds: int = 5, seed: int | None = None, output=None, quick: bool = False,
                   resume: bool = False, threshold: float = 0.8, probes=None, progress: bool = True) -> dict:
    """k-fold training and evaluation of ``recipe`` on ``recipe.data.train``; writes and returns ``cv.json``.

    ``probes`` limits each fold's evaluation to those probes (default: every probe that applies).

    >>> cv = cross_validate(load_recipe("examples/dental/recipe.yaml"), folds=5)
    >>> cv["aggregate"]["metrics"]["task.key_fact_recall"]["finetuned"]["mean"]
    """
    from ..data import load_examples
    from ..train.setup import Base
    from ..train.splits import Splits
    from .page import write_pages

    from ..evaluate.probes import PROBES

    for name in probes or []:
        PROBES.get(name, "--probes")  # a misspelled probe fails now, not after the first fold trained
    seed = recipe.train.seed if seed is None else seed
    out = Path(output or recipe.output_dir or default_output(recipe))
    cv_path = out / CV_FILE
    if out.exists() and any(out.iterdir()) and not resume:
        raise SmalltuneError(f"{out} is not empty; pass --resume to continue that cross-validation, or another --output")
    examples = load_examples(recipe.data.train)
    plan = make_folds(examples, folds, seed, threshold, recipe.data.train)
    state = _start(recipe, plan, seed, threshold, quick, probes, cv_path, resume)
    base = None
    for fold in plan:
        r = fold_recipe(recipe, out, fold)
        run = RunDir(Path(r.output_dir))
        if not (resume and run.train_summary.exists()):
            base = base or Base.load(recipe)  # loaded once, a fresh copy per fold
            console.info(f"fold {fold.index}/{len(plan)}: training on {len(fold.train)}, holding out "
                         f"{len(fold.validation)} → {run.path}")
            splits = Splits(fold.train, fold.validation,
                            f"cross-validation fold {fold.index} of {len(plan)}: {len(fold.validation)} held-out examples")
            from ..train import train

            train(r, resume=resume and run.started, progress=progress, base=base, splits=splits, verbose=progress)
        note = _evaluate_fold(run, quick, probes, progress, resume)
        state["per_fold"] = [f for f in state["per_fold"] if f["fold"] != fold.index]
        state["per_fold"].append({"fold": fold.index, **fold_numbers(run.path), "note": note})
        state["per_fold"].sort(key=lambda f: f["fold"])
        atomic_write_json(cv_path, state)  # after every fold: a stopped run shows what finished
    n_test = sum(len(f.validation) for f in plan) / len(plan)
    state["aggregate"] = aggregate(state["per_fold"], n_train=len(examples) - n_test, n_test=n_test)
    state["status"] = "complete"
    atomic_write_json(cv_path, state)
    write_pages(out, state)
    return state


def _evaluate_fold(run: RunDir, quick: bool, probes, progress: bool, resume: bool) -> str:
    """Evaluate a fold on its held-out examples; a fold that published no adapter is recorded, not evaluated."""
    from ..evaluate import evaluate
    from ..schema import read_train_summary

    summary = read_train_summary(run.train_summary)
    if not summary.artifact_written:
        return f"not evaluated: {summary.stop_message or 'no adapter was written'}"
    if not (resume and run.eval.exists()):
        evaluate(run.path, quick=quick, probes=probes, progress=progress)
    return ""


def _start(recipe, plan: list[Fold], seed: int, threshold: float, quick: bool, probes, cv_path: Path,
           resume: bool) -> dict:
    """The cv.json being built: settings and the fold plan; on resume, the stored one (same plan required)."""
    folds = [{**f.record(), "categories": dict(Counter(e.category or NO_CATEGORY for e in f.validation))} for f in plan]
    if resume and cv_path.exists():
        state = read_json(cv_path)
        if [f["validation_ids"] for f in state.get("fold_plan", [])] != [f["validation_ids"] for f in folds]:
            raise SmalltuneError(f"{cv_path}: the folds differ from the stored ones (data, --folds, --seed or "
                                 "--threshold changed); start a new cross-validation with another --output")
        return state
    state = {
        "schema_version": CV_SCHEMA, "status": "running", "train_file": recipe.data.train,
        "ignored": {k: v for k, v in (("data.validation", recipe.data.validation), ("data.test", recipe.data.test)) if v},
        "folds": len(plan), "seed": seed, "near_dup_threshold": threshold, "quick": quick, "probes": probes,
        "stratified_by": "category", "grouped_by": "the audit's near-duplicate clusters (prompts and whole examples)",
        "ci": CI_TEXT, "fold_plan": folds, "per_fold": [], "aggregate": None,
        "provenance": provenance(recipe, seed, examples=sum(len(f.validation) for f in plan)),
    }
    atomic_write_json(cv_path, state)
    return state
