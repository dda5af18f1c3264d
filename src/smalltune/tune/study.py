"""``smalltune tune``: a budgeted, forgetting-aware search on the user's own data, built on Optuna.

Two objectives (``objectives.py``): task quality on validation (maximise) and forgetting (minimise),
with the forgetting budget as a constraint (``Trial.set_constraint``, which TPE reads). The first trial
trains the recipe's own settings (``tune.start_from_recipe``), TPE draws the others (``space.py``); weak
trials stop at their first evaluations (``pruning.py``). Every trial trains in
this process on one loaded base model and one set of in-memory splits (``train(base=, splits=)``),
into its own run directory under ``<tuning folder>/trials/``. The study lives in an Optuna storage
that survives a crash (SQLite in the tuning folder by default; a database URL lets workers on
several machines share one study), so ``--resume`` continues and a second worker joins.

The choice: among finished trials within the budget, the best task quality; among trials within
``QUALITY_TIE`` of it, the least forgetting (the issue's "prefer the least-forgetting checkpoint
within min_delta", applied across trials).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import console
from ..errors import SmalltuneError
from ..rundir import RunLock, atomic_write_json
from .objectives import score_trial, trial_forgetting
from .pruning import HalvingPruner
from .space import methods_that_fit, recipe_params, suggest

QUALITY_TIE = 0.02  # key-fact recall within 2 points (about one validation answer in 50) counts as a tie
DEFAULT_BUDGET = 0.10  # forgetting budget when the recipe sets none (docs/guards.md: the planner's default)
TUNE_FILE = "tune.json"
BUDGET_CONSTRAINT = "forgetting_budget"  # forgetting minus the budget: feasible at 0 or less
FROM_RECIPE = "from_recipe"  # user attribute of the trial that trains the recipe's own settings


@dataclass
class TrialRow:
    number: int
    state: str  # complete, pruned, fail, running
    params: dict
    quality: float | None = None
    quality_name: str = ""
    forgetting: float | None = None
    feasible: bool = False
    pareto: bool = False
    steps: int | None = None
    epochs: float | None = None
    seconds: float | None = None
    stopped: str = ""
    run_dir: str = ""
    from_recipe: bool = False  # the trial that trains the recipe's own settings


@dataclass
class TuneResult:
    """What ``tune`` returns and writes as ``tune.json``."""

    folder: str
    study: str
    storage: str
    budget: float
    trials: list[TrialRow] = field(default_factory=list)
    chosen: int | None = None
    why: str = ""
    recipe: str = ""  # the chosen trial's recipe, written next to tune.json
    run_dir: str = ""  # the chosen trial's trained run
    wall_seconds: float = 0.0
    running: int = 0  # trials other workers of a shared study are still training
    schema_version: str = "1.0"

    def to_dict(self) -> dict:
        return asdict(self)


def _storage(recipe, folder: Path):
    import optuna

    url = recipe.tune.storage or f"sqlite:///{(folder / 'tune.db').resolve()}"
    # SQLite has one writer at a time, and sqlite3 gives up after 5 s waiting for the lock: workers sharing a file
    # on a busy machine wait up to a minute instead (a precaution; the race seen in tests is _study's)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    # heartbeats let another worker (or --resume) see a trial whose process died
    return url, optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=60, grace_period=180)


def _open_study(recipe, folder: Path, resume: bool):
    import optuna

    url, storage = _storage(recipe, folder)
    name = recipe.tune.study or recipe.name or folder.name
    exists = name in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if exists and not resume and not recipe.tune.storage:
        raise SmalltuneError(f"{folder} already holds tuning study {name!r}; pass --resume to continue it, "
                             "or set another output_dir")
    sampler = optuna.samplers.TPESampler(seed=recipe.train.seed, multivariate=True)
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True, sampler=sampler,
                               directions=["maximize", "minimize"]), url


def _lost_a_race(e: Exception) -> bool:
    """Whether ``e`` is what a worker sees when another creates the storage's tables or the study row at the
    same moment (all seen in this suite): on SQLite an OperationalError ("table ... already exists", "database
    is locked") or an IntegrityError on a unique row; on PostgreSQL an IntegrityError on ``pg_type``'s unique
    index or a ProgrammingError "type/relation ... already exists" (DuplicateObject, DuplicateTable)."""
    name = type(e).__name__
    return name in ("IntegrityError", "OperationalError") or (name == "ProgrammingError" and "already exists" in str(e))


def _study(recipe, folder: Path, resume: bool):
    for attempt in range(5):
        try:
            return _open_study(recipe, folder, resume)
        except Exception as e:  # the loser of a race retries and finds the winner's tables and study
            if not _lost_a_race(e) or attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def tune(recipe, resume: bool = False, progress: bool = True, trials: int | None = None) -> TuneResult:
    """Search ``recipe``'s hyperparameters on its own data; write the chosen recipe and tune.json.

    >>> result = tune(load_recipe("examples/dental/recipe.yaml", ["tune.trials=8"]))
    >>> result.recipe, result.run_dir
    """
    import optuna

    from ..recipe import recipe_from_dict
    from ..train.loop import train
    from ..train.setup import Base
    from ..train.splits import load_splits

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = Path(recipe.output_dir or f"runs/{recipe.name or Path(recipe.data.train).stem}-tune")
    lock = RunLock(folder).acquire()  # one worker per tuning folder; workers on other folders share the storage
    try:
        study, url = _study(recipe, folder, resume)
        budget = recipe.guards.forgetting_budget if recipe.guards.forgetting_budget is not None else DEFAULT_BUDGET
        wanted = trials or recipe.tune.trials
        done = [t for t in study.trials if t.state.is_finished()]
        base, splits, methods = Base.load(recipe), load_splits(recipe), methods_that_fit(recipe)
        anchored = _start_from_recipe(study, recipe, methods)
        started, durations = time.perf_counter(), []
        bar = _bar(wanted, len(done), progress)

        def objective(trial):
            t0 = time.perf_counter()
            overrides = suggest(trial, recipe, methods)
            out = folder / "trials" / f"trial-{trial.number:03d}"
            raw = recipe.to_dict() | {"output_dir": str(out), "name": f"{recipe.name or 'tune'}-trial-{trial.number}"}
            raw["guards"] = raw["guards"] | {"enabled": True, "forgetting_budget": budget}
            trial_recipe = recipe_from_dict(raw, overrides)
            # against the plan's trial one earlier trial is a fair bar; against a random one, two are
            pruner = HalvingPruner(trial, study, recipe.tune.halving_rate, min_trials=1 if anchored else 2,
                                   margin=recipe.tune.prune_margin)
            result = train(trial_recipe, base=base, splits=splits, progress=False, verbose=False, plugins=[pruner])
            trial.set_user_attr("run_dir", str(out))
            trial.set_constraint(BUDGET_CONSTRAINT, trial_forgetting(result) - budget)
            # a pruned trial is not scored: its validation answers cost more than its training (1d's tuned arm)
            scores = None if pruner.pruned_at is not None else score_trial(result, base, trial_recipe, splits.validation)
            trial.set_user_attr("result", {"steps": result.steps, "epochs": result.epochs, "stopped": result.stopped,
                                           "seconds": round(time.perf_counter() - t0, 1),
                                           "quality_name": scores.quality_name if scores else ""})
            durations.append(time.perf_counter() - t0)
            if scores is None:
                raise optuna.TrialPruned(f"stopped at step {pruner.pruned_at}")
            return scores.quality, scores.forgetting

        def after(study, trial):
            bar.update(1)
            bar.set_postfix_str(_best_so_far(study, budget) + _time_left(durations, wanted - bar.n), refresh=True)

        remaining = max(0, wanted - len(done))
        study.optimize(objective, n_trials=remaining, callbacks=[after], catch=(SmalltuneError,))
        bar.close()
        result = _summarise(study, url, folder, budget, recipe)
        result.wall_seconds = round(time.perf_counter() - started, 1)
        atomic_write_json(folder / TUNE_FILE, result.to_dict())
        from .report import write_report

        write_report(folder, result)
        return result
    finally:
        lock.release()


def _start_from_recipe(study, recipe, methods: list[str]) -> bool:
    """Queue the recipe's own settings as the search's first trial (``tune.start_from_recipe``); True when the
    study starts from them. A plan is the evidence's best guess (benchmarks/README.md 1e: six trials from random
    starts did not beat it), so it is the trial every other one has to beat."""
    if not recipe.tune.start_from_recipe:
        return False
    if study.trials:  # a resumed or shared study: anchored when it began with the recipe's trial
        return bool(study.trials[0].user_attrs.get(FROM_RECIPE))
    params = recipe_params(recipe, methods)
    if params is None:
        console.info("tune: the recipe's own settings lie outside the search space; the search starts at random")
        return False
    study.enqueue_trial(params, user_attrs={FROM_RECIPE: True}, skip_if_exists=True)
    return True


def _summarise(study, url: str, folder: Path, budget: float, recipe) -> TuneResult:
    import optuna

    pareto = {t.number for t in study.best_trials} if any(
        t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) else set()
    rows = []
    for t in study.trials:
        info = t.user_attrs.get("result", {})
        quality, forgetting = (t.values or [None, None]) if t.values else (None, None)
        rows.append(TrialRow(
            number=t.number, state=t.state.name.lower(), params=dict(t.params), quality=quality,
            quality_name=info.get("quality_name", ""), forgetting=forgetting,
            feasible=t.state == optuna.trial.TrialState.COMPLETE and _within_budget(t),
            pareto=t.number in pareto, steps=info.get("steps"), epochs=info.get("epochs"),
            seconds=info.get("seconds"), stopped=info.get("stopped", ""), run_dir=t.user_attrs.get("run_dir", ""),
            from_recipe=bool(t.user_attrs.get(FROM_RECIPE))))
    out = TuneResult(str(folder), study.study_name, url if "@" not in url else url.split("@")[-1], budget, rows)
    feasible = [r for r in rows if r.feasible]
    out.running = sum(r.state == "running" for r in rows)
    if not feasible and out.running:  # a worker of a shared study that ended first: its trials were pruned
        # against trials still training elsewhere, whose results decide the choice
        out.why = (f"no finished trial within the {budget:.0%} forgetting budget yet; {out.running} trial(s) still "
                   "running in other workers: `smalltune tune --resume` shows the choice once they end")
        return out
    if not feasible:
        out.why = (f"no finished trial stayed within the forgetting budget of {budget:.0%}; raise "
                   "guards.forgetting_budget, add trials, or lower tune.lr_factor")
        return out
    best_quality = max(r.quality for r in feasible)
    ties = [r for r in feasible if r.quality >= best_quality - QUALITY_TIE]
    chosen = min(ties, key=lambda r: (r.forgetting, -r.quality))
    out.chosen, out.run_dir = chosen.number, chosen.run_dir
    out.why = (f"trial {chosen.number}: best {chosen.quality_name.replace('_', ' ')} {chosen.quality:.3f} within "
               f"{QUALITY_TIE:g} of the best ({best_quality:.3f}) among {len(feasible)} trials inside the "
               f"{budget:.0%} forgetting budget, and the least forgetting of those ({chosen.forgetting:+.1%})")
    chosen_recipe = Path(chosen.run_dir) / "recipe.yaml"
    if chosen_recipe.exists():
        target = folder / "recipe.yaml"
        from ..recipe import load_recipe

        picked = load_recipe(chosen_recipe)
        picked.output_dir, picked.name = None, recipe.name
        picked.save(target)
        out.recipe = str(target)
    return out


def _within_budget(trial) -> bool:
    # a trial that never measured its forgetting counts as over budget; studies written before
    # set_constraint hold the same number as Optuna's unnamed constraint "0"
    return max(trial.constraints.values(), default=1.0) <= 0


def _best_so_far(study, budget: float) -> str:
    good = [t for t in study.trials if t.values and _within_budget(t)]
    if not good:
        return "no trial within budget yet"
    best = max(good, key=lambda t: t.values[0])
    return f"best {best.values[0]:.3f} (forgetting {best.values[1]:+.1%}, trial {best.number})"


def _time_left(durations: list[float], remaining: int) -> str:
    if not durations or remaining <= 0:
        return ""
    left = sum(durations) / len(durations) * remaining
    return f"; ~{math.ceil(left / 60)} min left"


def _bar(total: int, initial: int, progress: bool):
    from .. import console

    return console.progress(total, initial, disable=not progress, desc="tuning")


def load_result(folder) -> TuneResult:
    data = json.loads((Path(folder) / TUNE_FILE).read_text(encoding="utf-8"))
    data["trials"] = [TrialRow(**r) for r in data.get("trials", [])]
    return TuneResult(**data)
