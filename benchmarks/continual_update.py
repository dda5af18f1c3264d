"""Continual updates (issue 15, item 6): sequential naive fine-tuning vs retraining from scratch vs `smalltune update`.

The demo's training data is split, with a fixed seed, into an **initial set** (six of the eight categories) and
two later batches: **batch 1** adds new facts (the *insurance* and *services* categories, held back from the
initial set), **batch 2** changes facts (every initial example whose answer holds one of the CHANGES values is
repeated with the new value: same question, new answer; prices and hours changed). The demo's 72 test questions are
split the same way, into *old* facts, *new* facts and *changed* facts (answers and key facts rewritten).

Arms, each after the two batches, from the same version 1 (the demo recipe on the initial set):

* ``naive``: sequential fine-tuning at the fresh rate on each batch alone, from the previous weights;
* ``scratch``: retraining from the base model on everything known at that point (stale answers replaced);
* ``update``: ``smalltune update`` twice with its defaults (replay, new-vs-old audit; ``force`` so the final model
  is measured whatever the gate says: its verdicts are recorded); since bee7292 whole-model updates train at half
  the parent's rate (5e-5 here);
* ``update-1.5e-5``: the default before that, 0.15 of the parent's rate (the method's update/fresh ratio);
* ``update-5e-5``: ``update.lr=5e-5`` set explicitly (measured while the default was 1.5e-5; now the default's rate);
* ``update-changed3``: the default rate, each example that changes an earlier answer trained 3 times per epoch;
* ``update-noreplay``: the defaults without general replay (``update.general_replay=0``);
* ``update-5e-5-reserve3``: version 1 trained under a +7% forgetting budget instead of +10%, so the lineage's
  budget (counted from the base) keeps 3 points for the updates, which run at the recipe's +10% and 5e-5.

Measured on the final model of each arm: key-fact recall on old, new and changed facts (on changed questions it
also counts their unchanged key facts); ``new_value_rate``: the share of answers to the changed-fact questions,
each asked three ways, that give every new value (since 2026-12-04; the measure of "the new value wins");
``stale_answer_rate``: the share of changed-fact answers that still give an old value; general-text perplexity
change and general-question accuracy change against the base model, training wall seconds per update (from each run's
``train_summary.json``, so resumed runs count in full; ``update``'s whole calls, gate included, are kept beside). One row per (arm, seed) in ``results/continual_update.jsonl``; a killed run resumes.

    .venv/bin/python benchmarks/continual_update.py --seeds 0 1 2          # the experiment (hours on 2 CPU cores)
    .venv/bin/python benchmarks/continual_update.py --summarize            # table + JSON from saved rows
    SMALLTUNE_BENCH_MAX_STEPS=2 .venv/bin/python benchmarks/continual_update.py --seeds 0 --model PATH  # plumbing smoke
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import _evidence as E

NAME = "continual_update"
# update arms: recipe overrides of the updates (``update``: the defaults). ``update-5e-5`` tested the guess that the
# update rate then default (1.5e-5 for full fine-tuning: the fresh 1e-4 times the method's update/fresh ratio; the arm
# ``update-1.5e-5`` now) was too low for changed facts: half the fresh rate, the default since. ``update-changed3``
# tests a narrower lever: every new example that changes an earlier answer trained three times per epoch (its rows
# at 1.5e-5 are kept under their own name; the arm now runs at the default rate). ``update-noreplay`` leaves out the
# general replay an update adds when its parent had none (``update.general_replay``): with fresh full fine-tuning the
# base model's own answers replayed *raised* forgetting of general text (benchmarks/README.md, "1c"), so they might
# spend the lineage's budget the changed facts need (refuted 2026-12-04: without them the budget ran out sooner).
# ``update-5e-5-reserve3`` tests a lineage budget planned for its versions: on the demo version 1 spent about three
# quarters of the +10% budget (+7.2-7.3%), so the updates had little room; here version 1 stops at +7% (its own
# folder, ``v1-reserve3``) and the updates get the whole +10% back.
# ``update-room3`` gives each update 3 points of budget beyond what its parent spent (``update.forgetting_room``): on
# data version 2 the default's second update was past the lineage's budget at its first evaluation and published nothing;
# ``update-room3-changed3`` also trains each changed example three times an epoch within that room.
# ``update-replay3`` triples the general replay of updates (``update.general_replay=0.3``): without it the budget ran
# out sooner (``update-noreplay``), so more of it may leave the changed facts more steps under the same budget.
# ``update-mlp`` trains only the MLPs of layers 4-15 in updates (method ``partial``), where ROME locates factual
# associations: a fact changed there may move general text less per step, so more steps fit in the budget.
# ``update-ewc`` anchors each update to its parent's weights, harder where general text depends on them (EWC,
# arXiv 1612.00796, lambda 1e4 as in experiment 3, where it cut LoRA's forgetting from +12.4% to +5.3% at the same
# validation loss): the changes may then take weights general text needs less, and the budget last longer.
# ``update-2.5e-5`` halves the update rate again (a quarter of the fresh 1e-4): the second update's rise in forgetting
# per step should halve; whether its learning of the changes per point of forgetting improves is the question.
# ``update-room3-unlikely`` adds to ``update-room3`` an unlikelihood term on the answers the changed examples replace
# (``regularize.unlikelihood=1``, arXiv 1908.04319): the cross-entropy on the new answer lowers the old value only
# indirectly, so the budget ran out while the old value still won; this pushes the old value's first token down
# directly, where it departs from the new answer. ``update-unlikely``: the same term under the lineage's budget alone
# (``update.forgetting_room`` 0, its default). ``update-room3-unlikely0.3``: a third of the weight, after seed 1 of the
# weight 1 published nothing (its best checkpoint's validation loss was worse than the parent's).
# ``update-room3-unlikely-ceiling``: ``update-room3-unlikely`` again after the start's validation loss became a ceiling
# on checkpoint selection instead of a veto after it (commit 2be0619): the same recipe, its own folders and rows.
# ``update-stated`` and ``update-stated-unlikely``: the default update, without and with the unlikelihood term, after
# the audit also retires earlier examples that state a replaced value in answer to another question (commit
# 9311610; 5 of the demo's validation examples state old prices and hours): rows of ``update`` and ``update-unlikely``
# were measured before it.
# ROME (arXiv 2202.05262) traces factual recall to the MLPs of early-middle layers; SmolLM2-135M has 30 layers.
MID_MLPS = "[" + ",".join(f"layers.{i}.mlp" for i in range(4, 16)) + "]"
UPDATES = {"update": [], "update-1.5e-5": ["update.lr=1.5e-5"], "update-5e-5": ["update.lr=5e-5"],
           "update-changed3": ["update.changed_repeats=3"], "update-noreplay": ["update.general_replay=0"],
           "update-5e-5-reserve3": ["update.lr=5e-5", "guards.forgetting_budget=0.1"],
           "update-room3": ["update.forgetting_room=0.03"],
           "update-room3-changed3": ["update.forgetting_room=0.03", "update.changed_repeats=3"],
           "update-replay3": ["update.general_replay=0.3"],
           "update-mlp": ["method.name=partial", "method.top_k_layers=0", f"method.modules={MID_MLPS}"],
           "update-ewc": ["regularize.ewc_lambda=1e4"],
           "update-2.5e-5": ["update.lr=2.5e-5"],
           "update-room3-unlikely": ["update.forgetting_room=0.03", "regularize.unlikelihood=1"],
           "update-unlikely": ["regularize.unlikelihood=1"],
           "update-room3-unlikely0.3": ["update.forgetting_room=0.03", "regularize.unlikelihood=0.3"],
           "update-room3-unlikely-ceiling": ["update.forgetting_room=0.03", "regularize.unlikelihood=1"],
           "update-stated": [], "update-stated-unlikely": ["regularize.unlikelihood=1"],
           # no validation ceiling: the regression gate alone judges the version against its parent
           "update-gate": ["update.validation_slack="],
           "update-gate-unlikely": ["update.validation_slack=", "regularize.unlikelihood=1"],
           "update-gate-room3-unlikely": ["update.validation_slack=", "regularize.unlikelihood=1",
                                          "update.forgetting_room=0.03"]}
# version 1 of an arm, when it is not the shared ``v1``: (folder, recipe overrides)
V1 = {"update-5e-5-reserve3": ("v1-reserve3", ["guards.forgetting_budget=0.07"])}
ARMS = ("naive", "scratch", *UPDATES)
NEW_CATEGORIES = ("insurance", "services")
# the data's version: 2 since 2026-12-04 (values before a comma are changed too). Its rows carry it and its runs live
# in their own folders; the rows of version 1 are kept under the arm names "<arm> (data v1)".
DATA = 2
# old value -> new value: prices and hours that change in batch 2
CHANGES = {"$95": "$110", "$40": "$55", "$25": "$30", "$60": "$65", "$350": "$375", "1 pm": "2 pm", "3 pm": "4 pm"}
METRICS = ["recall_old", "recall_new", "recall_changed", "new_value_rate", "new_value_preferred", "stale_answer_rate",
           "reference_ppl_change", "general_accuracy_change", "seconds_per_update"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _write(path: Path, rows: list[dict]) -> Path:
    E.atomic_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def _value(v: str) -> str:
    """A pattern for the value ``v`` standing alone: "$40" not inside "$400" or "$40,000", but "3 pm," at a clause's
    end (in data version 1 a comma after a value hid it: "Friday 8 am to 3 pm, and Saturday" kept the old closing time
    in the batch that changed it)."""
    return rf"(?<![\w$]){re.escape(v)}(?!\d|,\d)"


def _changed(text: str) -> str:
    for old, new in CHANGES.items():
        text = re.sub(_value(old), new, text)
    return text


def _holds_change(text: str) -> bool:
    return _changed(text) != text


def _new_value_won(reference: str, answer: str) -> bool:
    """Whether ``answer`` gives every new value the reference answer of a changed-fact question holds.

    ``recall_changed`` (key-fact recall on the changed questions) also counts their unchanged key facts ("9 am" beside
    the changed "2 pm", "Dr. Brennan" where only the price changed): in data version 1, 4 of the 11 key facts, up to 31%
    recall for a model that never saw the change. This is the measure of "the new value wins"."""
    new = [v for v in CHANGES.values() if re.search(_value(v), reference)]
    return bool(new) and all(re.search(_value(v), answer) for v in new)


def _unchanged(text: str) -> str:
    """The new values of ``text`` put back to the old ones: the answer as the data taught it before batch 2."""
    for old, new in CHANGES.items():
        text = re.sub(_value(new), old, text)
    return text


def new_value_preference(model, tok, recipe, examples) -> dict:
    """Share of changed-fact questions whose reference answer, with its new values, the model finds more likely than
    the same answer with the old values (summed answer-token loss, teacher-forced): the "efficacy score" of knowledge
    editing ("Locating and Editing Factual Associations in GPT", arXiv 2202.05262). Greedy answers of a 135M model
    rarely state a price or an hour at all (``new_value_rate``); this asks which of the two the model prefers."""
    import dataclasses

    from smalltune.data.tokenize import tokenize_examples
    from smalltune.train.loss import item_token_stats

    wins = n = 0
    for ex in examples:
        answer = ex.messages[-1]["content"]
        if _unchanged(answer) == answer:
            continue
        old = dataclasses.replace(ex, messages=[*ex.messages[:-1], {**ex.messages[-1], "content": _unchanged(answer)}])
        items, _ = tokenize_examples(tok, [ex, old], recipe.data.max_length, recipe.data.system_prompt)
        if len(items) != 2:
            continue
        (new_loss, _, _), (old_loss, _, _) = item_token_stats(model, items, 2, "cpu", tok.pad_token_id, accuracy=False)
        wins, n = wins + (new_loss < old_loss), n + 1
    return {"new_value_preferred": wins / max(n, 1), "preference_questions": n}


def _rewrite(record: dict) -> dict:
    out = json.loads(json.dumps(record))
    out["messages"][-1]["content"] = _changed(out["messages"][-1]["content"])
    if out.get("key_facts"):
        out["key_facts"] = [_changed(f) for f in out["key_facts"]]
    out["id"] = f"{record['id']}-changed"
    return out


def split_data(folder: Path) -> dict[str, Path]:
    """The initial set, the two batches and the three test sets as files (fixed: seed 0, the same for every run)."""
    if (folder / "test_changed_asked3.jsonl").exists():
        return {p.stem: p for p in folder.glob("*.jsonl")}
    train = _rows(E.DEMO / "train.jsonl")
    test = _rows(E.DEMO / "test.jsonl")
    random.Random(0).shuffle(train)
    initial = [r for r in train if r.get("category") not in NEW_CATEGORIES]
    batch1 = [r for r in train if r.get("category") in NEW_CATEGORIES]
    batch2 = [_rewrite(r) for r in initial if _holds_change(r["messages"][-1]["content"])]
    changed = [_rewrite(r) for r in test if _holds_change(r["messages"][-1]["content"])]
    rest = [r for r in test if not _holds_change(r["messages"][-1]["content"])]
    files = {"initial": initial, "batch1": batch1, "batch2": batch2, "validation": _rows(E.DEMO / "validation.jsonl"),
             "test_old": [r for r in rest if r.get("category") not in NEW_CATEGORIES],
             "test_new": [r for r in rest if r.get("category") in NEW_CATEGORIES], "test_changed": changed}
    # retraining from scratch after each batch: everything known then, stale answers replaced by the new ones
    stale = {r["id"].removesuffix("-changed") for r in batch2}
    files["all1"] = initial + batch1
    files["all2"] = [r for r in initial if r["id"] not in stale] + batch1 + batch2
    # each changed-fact question asked three ways (as written and its two rephrasings): the new value given or not is
    # decided per answer, and 8 questions alone are 12.5 points each
    files["test_changed_asked3"] = [
        {**r, "id": f"{r['id']}-{k}", "messages": [{"role": "user", "content": q}, r["messages"][-1]]}
        for r in changed for k, q in enumerate([r["messages"][0]["content"], *r.get("rephrasings", [])])]
    return {name: _write(folder / f"{name}.jsonl", rows) for name, rows in files.items()}


# Smoke test of the plumbing (SMALLTUNE_BENCH_MAX_STEPS set): no self-generated replay (minutes of generation).
SMOKE = ["regularize.replay_ratio=0", "update.general_replay=0"] if E.MAX_STEPS else []


def overrides(data: Path, out: Path, seed: int, model: str | None) -> list[str]:
    extra = [f"model.name={model}"] if model else []
    return [f"data.train={data}", f"data.validation={Path(data).parent / 'validation.jsonl'}",
            f"data.test={Path(data).parent / 'test_old.jsonl'}", f"train.seed={seed}", f"output_dir={out}",
            "name=bench", E.PRECISION, *extra, *SMOKE, *([f"train.max_steps={E.MAX_STEPS}"] if E.MAX_STEPS else [])]


def train_facts(run_dir: Path) -> dict:
    """Training wall seconds of a finished run (a resumed one's earlier part included), its steps, epochs and why it
    stopped (``train_summary.json``): what an update's time is made of."""
    summary = json.loads((Path(run_dir) / "train_summary.json").read_text())
    return {"seconds": summary["wall_seconds"], "steps": summary["steps"], "epochs": summary["epochs"],
            "stopped": summary["stopped"]}


def train_from(recipe_overrides: list[str], init_from: Path | None, lr_scale: float = 1.0) -> dict:
    """Train (or resume) one run; returns :func:`train_facts`."""
    from smalltune import load_recipe
    from smalltune.rundir import RunDir
    from smalltune.train.loop import train

    recipe = load_recipe(E.DEMO / "recipe.yaml", recipe_overrides)
    recipe.train.lr *= lr_scale
    out = Path(recipe.output_dir)
    if not (out / "train_summary.json").exists():
        train(recipe, resume=RunDir(out).started, progress=False, verbose=False,
              init_from=str(init_from) if init_from else None)
    return train_facts(out)


def artifact(run_dir: Path) -> Path:
    """A finished run's trained artifact: ``model/`` (full, partial, hft) or ``adapter/``."""
    return run_dir / "model" if (run_dir / "model").is_dir() else run_dir / "adapter"


def score(run_dir: Path, files: dict[str, Path], caps) -> dict:
    """Key-fact recall per test set, stale answers on changed facts, forgetting against the base model."""
    from smalltune.data import load_examples
    from smalltune.evaluate.context import EvalContext
    from smalltune.evaluate.probes import PROBES
    from smalltune.train import load_trained
    from smalltune.train.splits import measurement_paragraphs

    model, tok, recipe = load_trained(run_dir)
    texts = measurement_paragraphs(run_dir, recipe, caps.reference_paragraphs)
    ctx = EvalContext(model=model, tokenizer=tok, recipe=recipe, run_dir=run_dir, caps=caps, seed=0,
                      reference_texts=texts, progress=False, batch_size=recipe.eval.batch_size)
    row = {}
    for name in ("old", "new", "changed"):
        ctx.test = load_examples(files[f"test_{name}"])
        section = PROBES.get("task").run(ctx)
        row[f"recall_{name}"] = section["key_fact_recall"]["finetuned"]
        if name == "changed":
            stale = [_holds_change(s["finetuned"]) for s in ctx.samples]  # an old value is still in the answer
            row["stale_answer_rate"] = sum(stale) / max(len(stale), 1)
            ctx.test = load_examples(files["test_changed_asked3"])
            PROBES.get("task").run(ctx)
            won = [_new_value_won(s["reference"], s["finetuned"]) for s in ctx.samples]
            row["new_value_rate"] = sum(won) / max(len(won), 1)  # over the three wordings of each question
            row.update(new_value_preference(model, tok, recipe, ctx.test))
    forgetting = PROBES.get("forgetting").run(ctx)
    row["reference_ppl_change"] = forgetting["reference_ppl_relative_change"]["value"]
    row["general_accuracy_change"] = forgetting["general_accuracy"]["delta"]
    return row


def run_arm(arm: str, seed: int, files: dict[str, Path], model: str | None, caps) -> dict:
    work = E.WORK / NAME / f"seed{seed}-data{DATA}"
    folder, v1_over = V1.get(arm, ("v1", []))
    v1 = work / folder
    if arm != "scratch":  # retraining from the base never uses version 1
        train_from([*overrides(files["initial"], v1, seed, model), *v1_over], None)
    facts, gates, published, calls = [], [], [], []
    if arm == "naive":
        prev = v1
        for k in (1, 2):
            out = work / f"naive-{k}"
            facts.append(train_from(overrides(files[f"batch{k}"], out, seed, model), artifact(prev)))
            # A run whose best checkpoint is worse than where it started publishes nothing: the user keeps the
            # previous weights, and so does the arm.
            published.append(artifact(out).is_dir())
            prev = out if published[-1] else prev
    elif arm == "scratch":
        for k in (1, 2):
            out = work / f"scratch-{k}"
            facts.append(train_from(overrides(files[f"all{k}"], out, seed, model), None))
        prev = out
    else:
        from smalltune.rundir import RunDir
        from smalltune.update import update

        prev = v1
        project_over = [f"train.seed={seed}", *UPDATES[arm], *SMOKE,
                        *([f"train.max_steps={E.MAX_STEPS}"] if E.MAX_STEPS else [])]
        for k in (1, 2):
            out = work / f"v1-v{k + 1}{arm.removeprefix('update')}"  # update: v1-v2; update-5e-5: v1-v2-5e-5
            test = files["test_new"] if k == 1 else files["test_changed"]
            t0 = time.perf_counter()
            if not (out / "gate.json").exists():
                result = update(prev, files[f"batch{k}"], test=test, force=True, output_dir=out, caps=caps,
                                overrides=project_over, progress=False, verbose=False,
                                resume=RunDir(out).started)
                gates.append({"passed": result.gate.passed if result.gate else None,
                              "regressions": [c["message"] for c in result.gate.regressions] if result.gate else []})
            calls.append(time.perf_counter() - t0)  # this call only: a resumed update counts its last part
            facts.append(train_facts(out))
            # an update that published nothing (no checkpoint within the forgetting budget, or none better than its
            # parent) leaves the parent served: the next update starts from it, and the arm is scored on it
            published.append(artifact(out).is_dir())
            prev = out if published[-1] else prev
    seconds = [f["seconds"] for f in facts]
    row = {"arm": arm, "seed": seed, "data": DATA, **score(prev, files, caps),
           "seconds_per_update": sum(seconds) / len(seconds),
           "update_seconds": seconds, "update_steps": [f["steps"] for f in facts],
           "update_epochs": [f["epochs"] for f in facts], "update_stopped": [f["stopped"] for f in facts],
           "gates": gates, "final_run": str(prev),
           **({"published": published} if published else {}), **({"update_call_seconds": calls} if calls else {})}
    return row


def _with_preferences(rows: list[dict]) -> list[dict]:
    """Rows with ``new_value_preferred`` from the file :func:`add_preferences` writes where they lack it."""
    found = {(r["arm"], r["seed"], r["data"]): r for r in E.Rows(f"{NAME}-preference").rows}
    keys = ("new_value_preferred", "preference_questions")
    return [{**{k: v for k, v in found.get((r["arm"], r["seed"], r.get("data")), {}).items() if k in keys}, **r}
            for r in rows]


def summarize(rows: "E.Rows", args) -> None:
    merged = _with_preferences(rows.rows)
    agg = E.aggregate(merged, METRICS)
    table = E.markdown_table(
        ["arm", "recall old", "recall new", "recall changed", "new value given", "new value preferred",
         "stale answers", "ref. ppl change", "general acc. change", "s per update"],
        [[arm, E.fmt(m["recall_old"], True), E.fmt(m["recall_new"], True), E.fmt(m["recall_changed"], True),
          E.fmt(m["new_value_rate"], True), E.fmt(m["new_value_preferred"], True),
          E.fmt(m["stale_answer_rate"], True), E.fmt(m["reference_ppl_change"], True),
          E.fmt(m["general_accuracy_change"], True), E.fmt(m["seconds_per_update"], digits=0)] for arm, m in agg.items()])
    E.write_result(NAME, {"command": f"python benchmarks/{NAME}.py --seeds {' '.join(map(str, args.seeds))}",
                          "changes": CHANGES, "aggregate": agg, "rows": merged, "smoke": bool(E.MAX_STEPS)})
    print(table)


def add_preferences(rows: "E.Rows") -> None:
    """``new_value_preferred`` of finished rows that lack it, measured afterwards on their final models while those
    are still on disk, and of each seed's version 1 (no changed fact trained: the floor), into
    ``results/continual_update-preference.jsonl``; rows measured by :func:`score` carry it already."""
    from smalltune.data import load_examples
    from smalltune.train import load_trained

    out = E.Rows(f"{NAME}-preference")
    todo = [(r["arm"], r["seed"], Path(r["final_run"])) for r in rows.rows
            if r.get("data") == DATA and "new_value_preferred" not in r]
    seeds = sorted({r["seed"] for r in rows.rows if r.get("data") == DATA})
    todo += [("version 1", s, E.WORK / NAME / f"seed{s}-data{DATA}" / "v1") for s in seeds]
    questions = load_examples(E.WORK / NAME / f"data{DATA}" / "test_changed_asked3.jsonl")
    for arm, seed, run in todo:
        if out.done(arm, seed) or not (run / "train_summary.json").exists():
            continue
        model, tok, recipe = load_trained(run)
        out.add({"arm": arm, "seed": seed, "data": DATA, "run": str(run),
                 **new_value_preference(model, tok, recipe, questions)})
        print(json.dumps(out.rows[-1]), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--model", help="another model than the demo recipe's (a tiny one for a plumbing smoke test)")
    p.add_argument("--summarize", action="store_true", help="only rebuild the table and JSON from saved rows")
    p.add_argument("--add-preference", action="store_true",
                   help="only measure new_value_preferred of finished rows without it (their final models on disk)")
    args = p.parse_args()
    rows = E.Rows(NAME)
    if args.add_preference:
        return add_preferences(rows)
    if not args.summarize:
        files = split_data(E.WORK / NAME / f"data{DATA}")
        caps = E.eval_caps(test=None)
        for seed in args.seeds:
            for arm in args.arms:
                if not rows.done(arm, seed) and rows.claim(arm, seed):
                    rows.add(run_arm(arm, seed, files, args.model, caps))
                    print(json.dumps({k: v for k, v in rows.rows[-1].items() if not isinstance(v, (list, dict))}),
                          flush=True)
    summarize(rows, args)


if __name__ == "__main__":
    main()
