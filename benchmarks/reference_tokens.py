"""How many reference tokens does the forgetting guard need? (issue 19 item 4, "Guards <= 10%")

The forgetting guard scores ``guards.reference_tokens`` (2048) tokens of general text at every
evaluation: the guards' main cost. Its numbers (``forgetting``, ``within_forgetting_budget``)
decide the warn/stop step and feed checkpoint selection (least forgetting within
``early_stopping.min_delta`` of the lowest validation loss; with ``forgetting_action: stop`` only
evaluations within the budget). Would 512 or 1024 tokens take the same decisions?

One training per seed of the recipe ``smalltune plan`` writes for the 100-example demo subset
(``vanilla_vs_smalltune.planned_recipe``, the data overrides of its "smalltune plan v3" arm), with
one extra plugin, :class:`ReferencePool`: on the base weights and at every evaluation it scores
the guard's own measurement windows up to 8192 tokens (``reference_items`` over the guard's
paragraphs, so the guard's 2048-token windows are its first ones) and keeps each window's summed
loss and token count in ``<run>/reference_pool.json``. Scoring runs no dropout and draws no random
numbers, so the training is the one the recipe gives without the plugin.

Offline, per budget N in ``BUDGETS``: the windows the guard would take with
``guards.reference_tokens=N`` (whole windows until N tokens), their perplexity, the rise over the
base's on the same windows, then the real selector (``build_selector`` of the run's recipe) replayed
over the run's evaluation records (metrics.jsonl) with ``forgetting`` and
``within_forgetting_budget`` recomputed for N. Compared with the 8192-token pool (itself an
estimate, the best one here): chosen step, first evaluation over the budget (the warn or stop
step), flags that differ, the largest forgetting difference. Scoring time per N: the pool is scored
in chunks that end at each budget's last window, so budget N's time is the summed time of its chunks
in the same run (a ratio between budgets, not an absolute claim).

The run itself trains with ``forgetting_action: warn`` (what the plan writes anyway): a stop would
end it at the 2048-token decision and leave later evaluations unmeasured for the other budgets; the
replay applies the recipe's own action.

    .venv/bin/python benchmarks/reference_tokens.py --seeds 0 1 2       # run (resumes)
    .venv/bin/python benchmarks/reference_tokens.py --summarize         # table + JSON only
    SMALLTUNE_BENCH_MAX_STEPS=2 .venv/bin/python benchmarks/reference_tokens.py --seeds 0 --model PATH  # plumbing smoke
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import _evidence as E
import vanilla_vs_smalltune as V
from smalltune.train.plugins import Plugin

NAME = "reference_tokens"
ARM = V.DEFAULTS  # the planned recipe, unchanged
BUDGETS = (256, 512, 1024, 2048, 4096, 8192)  # ascending: each budget's windows extend the previous one's
POOL_FILE = "reference_pool.json"
TRAIN_ONLY = ["guards.forgetting_action=warn"]  # see the docstring: the replay applies the recipe's action
# Smoke test: one evaluation per step, so the replay sees more than the final evaluation.
SMOKE = [f"train.max_steps={E.MAX_STEPS}", "eval.every_steps=1"] if E.MAX_STEPS else []


class ReferencePool(Plugin):
    """Per-window reference loss of the base and of every evaluation, written to ``reference_pool.json``."""

    name = "reference_pool"
    order = 10  # with the forgetting guard: every plugin measures before any checks

    def __init__(self):
        self.base: dict | None = None
        self.evaluations: list[dict] = []  # state: a resumed run keeps the evaluations before its checkpoint
        self._items, self._windows, self._pending, self._path, self._main = [], [], None, None, True

    def setup(self, env) -> dict:
        from smalltune.train.guards.forgetting import reference_items
        from smalltune.train.splits import GUARD_PARAGRAPHS

        texts = env.reference.take_measure("measure_reference_tokens_benchmark", GUARD_PARAGRAPHS)  # the guard's
        self._items = reference_items(env.tokenizer, texts, BUDGETS[-1])
        self._windows = [len(reference_items(env.tokenizer, texts, n)) for n in BUDGETS]  # the guard's rule per N
        self._path = Path(env.run_path) / POOL_FILE
        self._main = env.accelerator is None or env.accelerator.is_main_process
        model = env.unwrap(env.model)
        with model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext():
            self.base = self._score(env)  # a resumed run's checkpoint state replaces it with the same numbers
        return {}  # nothing in metrics.jsonl; the file is written after each evaluation (setup runs before a resume)

    def measure(self, env) -> dict:
        self._pending = self._score(env)
        return {}

    def check(self, record: dict, step: int):
        self.evaluations.append({"step": step, **self._pending})
        self._write()
        return None

    def close(self) -> None:
        self._write()  # a run resumed at its last checkpoint may evaluate no more

    def _score(self, env) -> dict:
        """Summed loss and tokens per window; cumulative scoring seconds at the end of each budget's windows."""
        from smalltune.train.loss import item_token_stats

        nll, tokens, seconds, start, spent = [], [], [], 0, 0.0
        for end in self._windows:
            t0 = time.perf_counter()
            stats = item_token_stats(env.model, self._items[start:end], env.batch_size, env.device,
                                     env.tokenizer.pad_token_id, env.autocast)
            spent += time.perf_counter() - t0
            nll += [s[0] for s in stats]
            tokens += [s[1] for s in stats]
            seconds.append(round(spent, 4))
            start = end
        return {"nll": nll, "tokens": tokens, "seconds": seconds}

    def _write(self) -> None:
        from smalltune.rundir import atomic_write_json

        if self._main:
            atomic_write_json(self._path, {"budgets": list(BUDGETS), "windows": self._windows, "base": self.base,
                                           "evaluations": self.evaluations})


# --- the offline replay ----------------------------------------------------------------------------

def ppl(scored: dict, windows: int) -> float:
    return math.exp(sum(scored["nll"][:windows]) / max(sum(scored["tokens"][:windows]), 1))


def replay(recipe, records: list[dict], forgetting: dict) -> dict:
    """The run's decisions had the guard measured ``forgetting`` (step -> relative rise)."""
    from smalltune.train.guards import build_selector

    g = recipe.guards
    selector, over = build_selector(recipe), None
    for r in records:
        rise = forgetting[r["step"]]
        within = rise <= g.forgetting_budget
        selector.update({**r, "forgetting": rise, "within_forgetting_budget": within}, r["step"])
        if not within and over is None:
            over = r["step"]
            if g.forgetting_action == "stop":
                break  # the run would have ended at this evaluation
    return {"chosen_step": selector.best_step, "rule": selector.rule, "first_over_budget": over,
            "flags": {r["step"]: forgetting[r["step"]] <= g.forgetting_budget for r in records}}


def analyse(run_dir: Path, recipe, trained_recipe) -> dict:
    """Per budget: the replayed decisions against the full pool's; plus checks that the replay is the run's."""
    pool = json.loads((run_dir / POOL_FILE).read_text())
    measured = {m["step"]: m for m in pool["evaluations"]}
    records = [r for r in E.eval_records(run_dir) if r["step"] in measured]  # a resumed run redid some evaluations
    steps = [r["step"] for r in records]
    if recipe.guards.forgetting_budget is None:
        raise SystemExit("the recipe sets no guards.forgetting_budget: nothing to decide")
    per = {}
    for i, (n, windows) in enumerate(zip(pool["budgets"], pool["windows"])):
        base = ppl(pool["base"], windows)
        rise = {s: ppl(measured[s], windows) / base - 1 for s in steps}
        per[n] = {"windows": windows, "tokens": sum(pool["base"]["tokens"][:windows]), "base_ppl": base,
                  "forgetting": rise, **replay(recipe, records, rise),
                  "seconds_per_eval": sum(m["seconds"][i] for m in pool["evaluations"]) / len(pool["evaluations"])}
    full, guard = per[pool["budgets"][-1]], per.get(recipe.guards.reference_tokens)  # the pool; the guard as set
    for n, p in per.items():
        p.update(same_choice=p["chosen_step"] == full["chosen_step"],
                 same_choice_as_guard=guard is not None and p["chosen_step"] == guard["chosen_step"],
                 same_over_budget=p["first_over_budget"] == full["first_over_budget"],
                 flags_differ=sum(p["flags"][s] != full["flags"][s] for s in p["flags"]),
                 max_forgetting_diff=max((abs(p["forgetting"][s] - full["forgetting"][s]) for s in steps), default=0.0))
    logged = {r["step"]: r["forgetting"] for r in records if "forgetting" in r}
    summary = json.loads((run_dir / "train_summary.json").read_text())
    return {
        "evaluations": len(records), "run_chosen_step": summary["best_step"],
        # the replay machinery: the run's logged numbers, replayed under the settings it trained with
        "replay_reproduces_run": replay(trained_recipe, records, logged)["chosen_step"] == summary["best_step"]
        if len(logged) == len(records) else None,
        # the pool reproduces the guard: its windows at guards.reference_tokens against the logged rise
        "guard_forgetting_diff": max(abs(guard["forgetting"][s] - f) for s, f in logged.items())
        if guard and logged else None,
        # how close the pool's forgetting came to the budget: a flag can only flip within the estimates' error
        "pool_margin": min((abs(f - recipe.guards.forgetting_budget) for f in full["forgetting"].values()),
                           default=None),
        "budgets": {str(n): {k: v for k, v in p.items() if k not in ("forgetting", "flags")} for n, p in per.items()},
        "forgetting": {str(n): p["forgetting"] for n, p in per.items()},
    }


# --- one seed ----------------------------------------------------------------------------------------

def run_seed(seed: int, train_file: Path, model: str | None) -> dict:
    from smalltune import load_recipe, train

    out = E.WORK / NAME / f"s{seed}"
    # the overrides of vanilla_vs_smalltune's planned arm: the same runs
    overrides = E.data_overrides(train_file, seed, out) + ["data.max_length=192", f"data.system_prompt={V.SYSTEM}"]
    overrides += ([f"model.name={model}"] if model else []) + SMOKE
    plan = V.planned_recipe(train_file)
    recipe, trained = load_recipe(plan, overrides), load_recipe(plan, overrides + TRAIN_ONLY)
    if not (out / "train_summary.json").exists():
        t0 = time.perf_counter()
        train(trained, resume=(out / "checkpoints").exists(), progress=False, plugins=[ReferencePool()])
        print(f"seed {seed}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    g = recipe.guards
    return {"arm": ARM, "seed": seed, "run_dir": str(out), "model": recipe.model.name,
            "settings": {"forgetting_budget": g.forgetting_budget, "forgetting_action": g.forgetting_action,
                         "reference_tokens": g.reference_tokens, "selection": g.selection,
                         "min_delta": recipe.early_stopping.min_delta, "eval_every_steps": recipe.eval.every_steps},
            "smoke": bool(E.MAX_STEPS), **analyse(out, recipe, trained)}


# --- summary -----------------------------------------------------------------------------------------

def summarize(rows: "E.Rows", seeds: list[int], train_size: int) -> None:
    mine = [r for r in rows.rows if r["arm"] == ARM]
    if not mine:
        print("no rows yet")
        return
    reference = str(mine[0]["settings"]["reference_tokens"])
    per = {}
    for n in map(str, BUDGETS):
        cells = [r["budgets"][n] for r in mine]
        time_ratio = [r["budgets"][n]["seconds_per_eval"] / r["budgets"][reference]["seconds_per_eval"]
                      for r in mine if reference in r["budgets"] and r["budgets"][reference]["seconds_per_eval"]]
        per[n] = {"tokens": E.mean_std(c["tokens"] for c in cells), "windows": E.mean_std(c["windows"] for c in cells),
                  "same_choice": sum(c["same_choice"] for c in cells),
                  "same_choice_as_guard": sum(c["same_choice_as_guard"] for c in cells),
                  "same_over_budget": sum(c["same_over_budget"] for c in cells),
                  "flags_differ": sum(c["flags_differ"] for c in cells), "seeds": len(cells),
                  "evaluations": sum(r["evaluations"] for r in mine),
                  "max_forgetting_diff": max(c["max_forgetting_diff"] for c in cells),
                  "seconds_per_eval": E.mean_std(c["seconds_per_eval"] for c in cells),
                  "time_vs_reference": E.mean_std(time_ratio)}
    table = E.markdown_table(
        ["budget N", "tokens scored", "chosen step = 8192's", f"chosen step = {reference}'s",
         "first over budget = 8192's", "flags differing", "max abs forgetting diff", f"scoring time vs {reference}"],
        [[n, E.fmt(a["tokens"], digits=0), f"{a['same_choice']}/{a['seeds']}",
          f"{a['same_choice_as_guard']}/{a['seeds']}", f"{a['same_over_budget']}/{a['seeds']}",
          f"{a['flags_differ']}/{a['evaluations']}", f"{100 * a['max_forgetting_diff']:.2f} points",
          E.fmt(a["time_vs_reference"])] for n, a in per.items()])
    command = f"python benchmarks/{NAME}.py --seeds {' '.join(map(str, seeds))} --train-size {train_size}"
    E.write_result(NAME, {"command": command,
                          "seeds": seeds, "train_size": train_size, "budgets": list(BUDGETS), "arm": ARM,
                          "training_overrides": TRAIN_ONLY, "smoke": any(r["smoke"] for r in mine),
                          "checks": {r["seed"]: {k: r[k] for k in ("replay_reproduces_run", "guard_forgetting_diff",
                                                                   "pool_margin")} for r in mine},
                          "summary": per, "table": table, "rows": rows.rows})
    print(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-size", type=int, default=100, help="demo training examples used (stratified subset)")
    p.add_argument("--model", help="another model than the plan's (a tiny one for a plumbing smoke test)")
    p.add_argument("--summarize", action="store_true", help="only rebuild the table and JSON from saved rows")
    args = p.parse_args()
    rows = E.Rows(NAME)
    if not args.summarize:
        train_file = E.demo_subset(args.train_size)
        for seed in args.seeds:
            if not rows.done(ARM, seed) and rows.claim(ARM, seed):
                rows.add(run_seed(seed, train_file, args.model))
                print(json.dumps({k: v for k, v in rows.rows[-1].items() if not isinstance(v, (list, dict))}), flush=True)
    summarize(rows, sorted({r["seed"] for r in rows.rows}), args.train_size)


if __name__ == "__main__":
    main()
