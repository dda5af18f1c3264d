"""``smalltune run``: audit -> train -> evaluate -> report, all into one run directory.

Each stage is the same public function a person can call alone; this module only decides the
order, skips what a resumed run already finished, and stops before training when the audit
found errors (the data is wrong: spending compute on it would hide the problem).

>>> from smalltune import load_recipe
>>> from smalltune.pipeline import run
>>> run(load_recipe("examples/dental/recipe.yaml"), quick=True)
PosixPath('runs/dental-demo/report.html')
"""

from __future__ import annotations

from pathlib import Path

from .errors import EXIT_FINDINGS, SmalltuneError
from .recipe import Recipe, recipe_from_dict
from .rundir import RunDir, open_run_dir
from .schema import read_train_summary


def audit_stage(recipe: Recipe, run: RunDir, force: bool, progress: bool) -> None:
    """Audit the recipe's data into audit.json; errors stop the pipeline unless ``force``."""
    from .audit import audit

    result = audit(recipe.data.train, validation=recipe.data.validation, test=recipe.data.test,
                   recipe=recipe, run_dir=run.path, progress=progress)
    errors = [f for f in result.findings if f.severity == "error"]
    if result.exit_code("error") and not force:
        titles = "; ".join(f.title for f in errors[:3]) + (" ..." if len(errors) > 3 else "")
        raise SmalltuneError(f"the data audit found {len(errors)} error(s) ({titles}); details in {run.audit}. "
                             "Fix the data, or pass --force to train anyway", EXIT_FINDINGS)
    from . import console

    console.info(f"audit: {len(errors)} errors, {len(result.findings) - len(errors)} other findings → {run.audit}")


def train_stage(recipe: Recipe, run: RunDir, resume: bool, progress: bool) -> None:
    from .train import train

    # Resume only what training started: a run stopped by the audit has no checkpoint to continue.
    _check_trained(train(recipe, resume=resume and run.started, progress=progress), run)


def _check_trained(summary, run: RunDir) -> None:
    """A run a guard stopped with no checkpoint passing the guards has nothing to evaluate: stop here."""
    if not summary.artifact_written:
        raise SmalltuneError(f"training stopped by the {summary.stopped} guard and no checkpoint passed the "
                             f"guards ({summary.stop_message}); see {run.train_summary}", EXIT_FINDINGS)


def evaluate_stage(recipe: Recipe, run: RunDir, quick: bool, progress: bool) -> None:
    from .evaluate import evaluate

    from . import console

    evaluate(run.path, quick=quick, progress=progress)
    console.info(f"evaluation → {run.eval}")


def report_stage(run: RunDir) -> Path:
    from .report import report
    from .train.tracking import attach_results

    path = report(run.path)
    attach_results(run.path)  # a run tracked in MLflow also gets report.html and eval.json there
    return path


def run(recipe: Recipe, resume: bool = False, quick: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Run every stage for ``recipe`` into its run directory; returns the path of report.html.

    With ``resume``, stages whose result file exists are skipped and training continues from its
    latest checkpoint. ``quick`` caps the evaluation (fewer questions, shorter answers).
    Raises :class:`SmalltuneError` with exit code 1 when the audit finds errors (unless ``force``).
    """
    if recipe.tune.enabled:
        recipe = tuned_recipe(recipe, resume, progress)
    run_dir = open_run_dir(recipe, resume)
    if not resume:  # a fresh run here may follow one the audit stopped: its files are stale now
        for path in (run_dir.audit, run_dir.eval, run_dir.report, run_dir.report_md):
            path.unlink(missing_ok=True)
    done = lambda path: resume and path.exists()  # noqa: E731
    try:
        if done(run_dir.audit) and not force:
            _check_stored_audit(run_dir)
        elif not done(run_dir.audit):
            audit_stage(recipe, run_dir, force, progress)
        if done(run_dir.train_summary):  # finished before: still nothing to evaluate if no artifact was written
            _check_trained(read_train_summary(run_dir.train_summary), run_dir)
        else:
            train_stage(recipe, run_dir, resume, progress)
        if not done(run_dir.eval):
            evaluate_stage(recipe, run_dir, quick, progress)
        return report_stage(run_dir)
    except SmalltuneError:
        _report_what_ran(run_dir)
        raise
    finally:
        if run_dir.lock is not None:
            run_dir.lock.release()  # held from the start: one writer for every stage


def tuned_recipe(recipe: Recipe, resume: bool, progress: bool) -> Recipe:
    """The ``tune:`` section of a recipe: search first (into ``<output_dir>-tune``), then run the chosen recipe."""
    from . import console
    from .recipe import load_recipe
    from .tune import tune

    out = recipe.output_dir or str(Path("runs") / (recipe.name or Path(recipe.data.train).stem))
    search = recipe_from_dict(recipe.to_dict(), [f"output_dir={out}-tune"])
    result = tune(search, resume=resume, progress=progress)
    if result.chosen is None:
        raise SmalltuneError(f"tuning: {result.why}", EXIT_FINDINGS)
    console.info(f"tuning chose {result.why}; training it in {out}")
    return load_recipe(result.recipe, [f"output_dir={out}", "tune.enabled=false"])


def _report_what_ran(run_dir: RunDir) -> None:
    """When a stage stops the pipeline, the page still shows what ran (e.g. the audit's findings)."""
    if run_dir.audit.exists() or run_dir.metrics.exists():
        try:
            report_stage(run_dir)
        except SmalltuneError:
            pass  # the stage's own error is the one to show


def _check_stored_audit(run_dir: RunDir) -> None:
    """On resume, an audit that stopped the run before still stops it (the data has not changed)."""
    from .audit.report import AuditReport
    from .rundir import read_json

    errors = AuditReport.from_dict(read_json(run_dir.audit)).errors
    if errors:
        raise SmalltuneError(f"the data audit found {len(errors)} error(s); details in {run_dir.audit}. "
                             "Fix the data and start a new run, or pass --force to train anyway", EXIT_FINDINGS)
