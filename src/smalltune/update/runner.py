"""``update``: a new version of a trained run, from its weights, on new data, behind a regression gate.

Steps, each written into the new version's run directory before the next starts:

1. read the new data (corrections included) and the lineage's data at the parent (``lineage.pool_of``);
2. audit new against old (:mod:`.compare`): stale examples leave the pool, stale and leaked test
   questions leave the test set;
3. train from the parent's artifact (``train(init_from=...)``) at the update learning rate on the new
   examples (those that change an earlier answer ``update.changed_repeats`` times) plus a replayed share of
   the earlier ones (plus general replay);
4. the regression gate (:mod:`.gate`): the new version against its parent, on the earlier test set,
   the new test data and the forgetting suite;
5. ``version.json``, and the pointer moves to the new version when the gate passes (or ``force``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .. import console
from ..data import Example, carve_validation
from ..errors import EXIT_FINDINGS, SmalltuneError
from ..rundir import RunDir, RunLock, atomic_write_json
from .compare import Comparison, compare
from .corrections import read_new_data
from .gate import GateResult, run_gate
from .lineage import (AUDIT_FILE, GATE_FILE, POOL, TEST, VersionRecord, now, pool_of, relative_parent, tests_of,
                      version_of, write_examples, write_version)
from .pointer import move_pointer, promote, read_pointer

NEW_VALIDATION_MIN = 10  # fewer new examples than this all train (a correction is too precious to only validate)


@dataclass
class UpdateResult:
    """What ``update`` returns: where the version is, what the audit and the gate said, whether it is served."""

    run_dir: str
    parent: str
    version: int
    comparison: Comparison
    gate: GateResult | None
    promoted: bool
    forced: bool
    message: str

    @property
    def exit_code(self) -> int:
        return 0 if self.promoted else EXIT_FINDINGS


def _unique_ids(examples: list[Example], taken: set[str], prefix: str) -> list[Example]:
    """Copies of ``examples`` whose ids clash with none in ``taken`` (a clash gets ``prefix/`` in front)."""
    out = []
    for ex in examples:
        ex = copy.copy(ex)
        ex.meta = dict(ex.meta)
        if ex.id in taken:
            ex.id = f"{prefix}/{ex.id}"
        n = 2
        base = ex.id
        while ex.id in taken:
            ex.id, n = f"{base}-{n}", n + 1
        taken.add(ex.id)
        out.append(ex)
    return out


def _next_dir(parent: Path, record: VersionRecord) -> Path:
    root = record.lineage[0] if record.lineage else parent.name
    out = parent.parent / f"{root}-v{record.version + 1}"
    n = 2
    while out.exists():
        out, n = parent.parent / f"{root}-v{record.version + 1}-{n}", n + 1
    return out


def _given(overrides, key: str) -> bool:
    """Whether ``key`` (``guards.forgetting_budget``) is set by one of the update's command-line overrides."""
    from ..recipe.load import parse_override

    return any(parse_override(str(o))[0] == key.split(".") for o in overrides)


def update_recipe(parent_recipe, out: Path, files: dict, lr: float, overrides=()):
    """The new version's recipe: the parent's, with the update's data files, learning rate and replay.

    Its unlikelihood weight is ``update.unlikelihood`` unless ``regularize.unlikelihood`` is given to this update:
    not the parent's, which an earlier update set the same way (so ``update.unlikelihood=0`` turns it off in any
    version)."""
    recipe = copy.deepcopy(parent_recipe)
    recipe.name, recipe.output_dir = out.name, str(out)
    recipe.data.train, recipe.data.validation = str(files["train"]), str(files["validation"])
    recipe.data.test = str(files["test"]) if files.get("test") else None
    recipe.data.validation_fraction = None
    # The version keeps its rate as ``update.lr``: the next update starts from this recipe, and deriving
    # its rate from ``train.lr`` again would lower it once more per version (1e-4 -> 5e-5 -> 2.5e-5).
    recipe.train.lr = recipe.update.lr = lr
    if not recipe.regularize.replay_ratio:
        recipe.regularize.replay_ratio = recipe.update.general_replay
    if not _given(overrides, "regularize.unlikelihood"):  # acts only on examples that replace an earlier answer
        recipe.regularize.unlikelihood = recipe.update.unlikelihood
    return recipe


def update_budget(recipe, parent: RunDir, parent_record: VersionRecord, overrides=()) -> dict | None:
    """The update's forgetting budget (``guards.forgetting_budget``), counted from the base like every version's:
    the lineage's, or with ``update.forgetting_room`` the parent's measured forgetting at its chosen step plus that
    room when that is larger. Without room a first version that spent most of the budget leaves its updates none
    (benchmarks/README.md, continual updates: second updates stopped at their first evaluation); with it the
    lineage may drift past the budget by at most the room per version, and the gate still bounds each step."""
    lineage, room = recipe.guards.forgetting_budget, recipe.update.forgetting_room
    # the parent's recipe holds its own budget, room included: the lineage's is in its version record
    if parent_record.forgetting_budget and not _given(overrides, "guards.forgetting_budget"):
        lineage = parent_record.forgetting_budget["lineage"]
    if lineage is None:
        return None
    spent = None
    if parent.train_summary.exists():
        summary = json.loads(parent.train_summary.read_text(encoding="utf-8"))
        spent = (summary.get("best_metrics") or {}).get("forgetting")
    effective = max(lineage, spent + room) if room and spent is not None else lineage
    return {"lineage": lineage, "parent_spent": spent, "room": room, "budget": round(effective, 6)}


def update_lr(recipe) -> float:
    """``update.lr``, else the parent's rate times the method's ``update_share`` (full fine-tuning: a half), or
    without one its update/fresh ratio (LoRA: a fifth)."""
    from ..train.methods import METHODS

    if recipe.update.lr:
        return recipe.update.lr
    rate = METHODS.get(recipe.method.name, "method.name").rate
    share = rate.update_share or rate.update_lr / rate.lr
    return float(f"{recipe.train.lr * share:.6g}")  # 5e-05 in the recipe, not 4.9999999999999996e-05


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def update(run_dir, new_data, test=None, force: bool = False, output_dir=None, overrides=(), quick: bool = False,
           caps=None, resume: bool = False, progress: bool = True, verbose: bool = True) -> UpdateResult:
    """Train a new version of ``run_dir`` on ``new_data`` and gate it against ``run_dir``.

    ``overrides`` are dotted recipe keys (``update.replay_share=0.5``, ``train.epochs=2``) applied to
    the parent's recipe; ``caps`` (sample caps of the gate's evaluation) default to the recipe's, or
    ``evaluate --quick``'s with ``quick``.

    >>> result = update("runs/clinic", "week-12.jsonl", test="week-12-test.jsonl")
    >>> result.promoted, [c["message"] for c in result.gate.regressions]
    """
    from ..evaluate.runner import caps_from_recipe
    from ..recipe import load_recipe
    from ..train import train
    from ..train.methods import METHODS
    from ..train.splits import Splits

    parent = RunDir(Path(run_dir).resolve())
    if not parent.recipe.exists():
        raise SmalltuneError(f"{run_dir}: not a run directory (no recipe.yaml); pass a version trained by smalltune")
    parent_recipe = load_recipe(parent.recipe, list(overrides))
    method = METHODS.get(parent_recipe.method.name, "method.name")()
    artifact = parent.path / method.artifact
    if not artifact.exists():
        raise SmalltuneError(f"{run_dir}: no trained {method.artifact}/ to start from; finish training it first")
    parent_record = version_of(parent.path)
    u = parent_recipe.update

    new = read_new_data(new_data, u.corrections_test_share, parent_recipe.train.seed)
    if test:
        new_test_file = read_new_data(test, all_test=True)
        new.test += new_test_file.test
        new.corrections += new_test_file.corrections
    if not new.train:
        raise SmalltuneError(f"{new_data}: no training examples left (every record is a test record)")
    old_train, old_val = pool_of(parent.path, parent_recipe)
    old_test = tests_of(parent.path, parent_recipe)

    out = Path(output_dir).resolve() if output_dir else _next_dir(parent.path, parent_record)
    lock = RunLock(out).acquire()  # one writer; train() re-enters it
    try:
        if (out / "metrics.jsonl").exists() and not resume:
            raise SmalltuneError(f"{out} already holds a run; pass --resume to continue this update, or --output")
        # --- 1-2: data and the new-vs-old audit -------------------------------------------------------
        taken = {e.id for e in old_train + old_val + old_test}
        added = _unique_ids(new.train, taken, out.name)
        added_test = _unique_ids(new.test, taken, out.name)
        c = compare(old_train + old_val, added, old_test, added_test, u.conflict_similarity, u.duplicate_similarity)
        atomic_write_json(out / AUDIT_FILE, c.to_dict())
        gone = {e.id for e in c.stale} | {e.id for e in c.copies} | {e.id for e in c.superseded}
        trained_new = [e for e in added if e.id not in gone]
        keep_train = [e for e in old_train if e.id not in gone]
        keep_val = [e for e in old_val if e.id not in gone]
        if len(trained_new) >= NEW_VALIDATION_MIN:
            new_train, new_val = carve_validation(trained_new, None, parent_recipe.train.seed)
        else:
            new_train, new_val = trained_new, []
        _, replay = carve_validation(keep_train, u.replay_share, parent_recipe.train.seed) if u.replay_share else ([], [])
        replacing = {e.id for e in c.replacing}
        # what each changed example replaces: regularize.unlikelihood pushes those answers down
        new_train = [_replaces(e, c.stale_answers[e.id]) if e.id in replacing else e for e in new_train]
        repeats = [_repeat(e, k) for e in new_train if e.id in replacing for k in range(2, u.changed_repeats + 1)]
        train_set, val_set = new_train + repeats + replay, keep_val + new_val
        if not val_set:
            raise SmalltuneError(f"{run_dir}: no validation examples left for the update; give more new data")
        dropped = {e.id for e in c.stale_test} | {e.id for e in c.leaked_test}
        gate_parent = [e for e in old_test if e.id not in dropped]
        gate_new = [e for e in added_test if e.id not in dropped]
        parent_source = "the lineage's earlier test set"
        if not gate_parent and not old_test:  # no test set yet: the earlier validation questions stand in
            gate_parent, parent_source = keep_val, "earlier validation examples (the lineage has no test set yet)"

        data = out / "data"
        files = {"train": write_examples(data / "train.jsonl", train_set),
                 "validation": write_examples(data / "validation.jsonl", val_set),
                 "test": write_examples(out / TEST, gate_parent_test(old_test, dropped) + gate_new)}
        write_examples(out / POOL, [*_tag(keep_train, "train"), *_tag(new_train, "train"), *_tag(keep_val, "validation"),
                                    *_tag(new_val, "validation")])
        write_examples(data / "added.jsonl", trained_new)
        write_examples(data / "added_test.jsonl", added_test)
        recipe = update_recipe(parent_recipe, out, files, update_lr(parent_recipe), overrides)
        budget = update_budget(parent_recipe, parent, parent_record, overrides)
        if budget:
            recipe.guards.forgetting_budget = budget["budget"]
        record = VersionRecord(
            name=out.name, version=parent_record.version + 1, parent=relative_parent(out, parent.path),
            lineage=[*parent_record.lineage, out.name], created=now(),
            data_added={"file": str(new_data), "sha256": _sha256(new_data), "test_file": str(test) if test else None,
                        "train": len(trained_new), "test": len(added_test), "corrections": new.corrections,
                        "validation": len(new_val), "changed": len(c.replacing), "changed_repeats": u.changed_repeats},
            replay={"share": u.replay_share, "examples": len(replay), "pool": len(keep_train),
                    "general_replay_ratio": recipe.regularize.replay_ratio},
            stale={"train": [e.id for e in c.stale], "test": [e.id for e in c.stale_test]}, lr=recipe.train.lr,
            forgetting_budget=budget)
        write_version(out, record)
        if verbose:
            _print_plan(c, record, out, recipe.regularize.unlikelihood)

        # --- 3: train from the parent's weights ---------------------------------------------------------
        result = train(recipe, resume=resume and RunDir(out).started, progress=progress,
                       splits=Splits(train_set, val_set, f"{len(keep_val)} earlier validation examples (stale ones left "
                                                         f"out) + {len(new_val)} carved from the new data"),
                       verbose=verbose, init_from=str(artifact))
        if not result.artifact_written:
            record.status = "no artifact"
            write_version(out, record)
            # the budget is the lineage's: a version has what its parents left of it (train/guards/forgetting.py)
            spent = ("; the forgetting budget counts from the base model across the lineage, so an update has only "
                     "what earlier versions left: give each update room beyond its parent (update.forgetting_room=0.03), "
                     "raise the budget (guards.forgetting_budget=...) or lower update.lr"
                     if result.stopped == "forgetting_budget" else "")
            return UpdateResult(str(out), str(parent.path), record.version, c, None, False, False,
                                f"the update wrote no {method.artifact}/ ({result.stop_message}){spent}; "
                                "nothing to promote")

        # --- 4: the gate -----------------------------------------------------------------------------------
        caps = caps or caps_from_recipe(recipe, quick)
        sources = {"parent_test": {"source": parent_source, "items": len(gate_parent), "left_out": len(dropped)},
                   "new_test": {"source": str(test or new_data), "items": len(gate_new)}}
        gate = run_gate(parent.path, out, gate_parent, gate_new, caps, u, progress=progress and verbose, sources=sources)
        passed = gate.passed
        gate.forced = force and not passed
        atomic_write_json(out / GATE_FILE, gate.to_dict())
        record.status = "gated"
        record.gate = {"passed": passed, "forced": gate.forced, "regressions": [x["message"] for x in gate.regressions],
                       "checks": len(gate.checks)}
        write_version(out, record)
    finally:
        lock.release()

    # --- 5: the pointer ------------------------------------------------------------------------------------
    project = out.parent
    if read_pointer(project) is None and parent.path.parent == project:
        move_pointer(project, parent.path.name, "update", note="the first version, served until an update passes")
    promoted = passed or force
    if promoted and out.parent == parent.path.parent:
        promote(out, force=force, by="update")
    elif promoted:
        promoted = False  # a version outside the parent's project folder is promoted by hand (smalltune promote)
    _write_report(out)
    if passed:
        message = f"{out.name} passed the regression gate ({len(gate.checks)} checks) and is now served"
    elif force:
        message = f"{out.name} failed the gate and was promoted anyway (--force): " + "; ".join(record.gate["regressions"])
    else:
        message = (f"{out.name} is kept but not promoted: " + "; ".join(record.gate["regressions"])
                   + f" (thresholds: update.* in {out / 'recipe.yaml'}; --force promotes anyway)")
    return UpdateResult(str(out), str(parent.path), record.version, c, gate, promoted, gate.forced, message)


def gate_parent_test(old_test: list[Example], dropped: set[str]) -> list[Example]:
    return [e for e in old_test if e.id not in dropped]


def _repeat(ex: Example, k: int) -> Example:
    """The ``k``-th training copy of ``ex`` (``update.changed_repeats``): an id of its own, the same example."""
    ex = copy.copy(ex)
    ex.id = f"{ex.id}#{k}"
    return ex


def _replaces(ex: Example, answers: list[str]) -> Example:
    """``ex`` marked with the earlier answers it replaces (``stale_answers``, read by ``regularize.unlikelihood``)."""
    from ..train.regularize.unlikelihood import STALE_KEY

    ex = copy.copy(ex)
    ex.meta = {**ex.meta, STALE_KEY: answers}
    return ex


def _tag(examples: list[Example], split: str) -> list[Example]:
    out = []
    for ex in examples:
        ex = copy.copy(ex)
        ex.meta = {**ex.meta, "pool_split": split}
        out.append(ex)
    return out


def _write_report(out: Path) -> None:
    try:
        from ..report import report

        report(out)
    except SmalltuneError as e:  # the version stands without its page; say why
        console.warn(f"report not written: {e}")


def _print_plan(c: Comparison, record: VersionRecord, out: Path, unlikelihood: float) -> None:
    a, r = record.data_added, record.replay
    console.info(f"[bold]smalltune update[/bold] → {out} (version {record.version}, parent {record.parent})")
    console.info(f"  adds    {a['train']} training and {a['test']} test examples"
                 + (f" ({a['corrections']} corrections)" if a["corrections"] else "")
                 + (f"; {a['changed']} change earlier answers (trained {a['changed_repeats']}× per epoch)"
                    if a["changed"] and a["changed_repeats"] > 1 else "")
                 + f"; replays {r['examples']} of {r['pool']} earlier examples; lr {record.lr:g}")
    for f in c.findings:
        (console.warn if f.severity != "info" else console.info)(f"{f.title}: {f.count}")
    if not a["changed"]:
        return
    # the numbers: benchmarks/README.md, "The gate instead of the validation ceiling" (5 seeds of the demo)
    retrain = f"or retrain: smalltune train on {out / POOL}, every example the lineage now holds true"
    if unlikelihood:
        console.warn(f"{a['changed']} new example(s) change earlier answers; the answers they replace are pushed down "
                     "(regularize.unlikelihood). On the demo such updates then gave the new value about as often as "
                     "retraining from the base, and the gate refused 2 of 5 of them for a loss on earlier facts: if "
                     f"it refuses this one, judge the regressed metric and --force, {retrain}")
    else:
        console.warn(f"{a['changed']} new example(s) change earlier answers and regularize.unlikelihood is off: on the "
                     "demo such updates preferred the new value on 4-52% of the questions, retraining on 70-89%; "
                     f"turn it on (update.unlikelihood=1) {retrain}")
