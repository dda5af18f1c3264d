"""How far apart are two seeds of the same recipe at a tuning rung? (issue 19 item 5, the pruning margin)

A tuning trial continues past a rung (its 1st, 3rd, 9th ... evaluation; ``smalltune.tune.pruning``) only when its
validation loss beats the cutoff of earlier trials. When the bar is the plan's own trial, a trial that "beats" it by
less than two seeds of the plan differ from each other is not shown better, yet it trains on to the next rung: on
seed 0 of "smalltune tune from the plan" one trial beat the plan's first evaluation by 0.27% and cost two thirds of
a planned run before the third evaluation pruned it (benchmarks/README.md, "Item 5 on a Zen 5 EPYC").

This measures that seed-to-seed spread: the recipe ``smalltune plan`` writes for the 100-example demo subset (the
plan trial of every search in ``vanilla_vs_smalltune.py``), one training per seed with ``train.seed`` the only
difference (the data and the validation file are the same), each abandoned after ``EVALUATIONS`` evaluations (no
weights written). Per evaluation: the validation losses over seeds, their standard deviation and the largest
pairwise difference, relative to the mean. ``tune.prune_margin`` cites it.

    .venv/bin/python benchmarks/rung_noise.py --seeds 0 1 2 3 4        # run (resumes per seed)
    .venv/bin/python benchmarks/rung_noise.py --summarize              # table + JSON only
"""

from __future__ import annotations

import itertools
import shutil
import statistics

import _evidence as E
import vanilla_vs_smalltune as V
from smalltune.train.plugins import GuardEvent, Plugin

NAME = "rung_noise"
ARM = V.DEFAULTS  # the planned recipe, unchanged
EVALUATIONS = 3  # rungs 1 and 3 of successive halving at the default rate


class AbandonAfter(Plugin):
    """Ends the run without weights after ``n`` evaluations (as a pruned trial ends)."""

    name = "abandon_after"
    order = 99

    def __init__(self, n: int):
        self.n, self.evals = n, 0

    def check(self, record: dict, step: int) -> GuardEvent | None:
        self.evals += 1
        return GuardEvent(self.name, "abandon", step, f"{self.n} evaluations measured") if self.evals >= self.n else None


def run_arm(arm: str, seed: int, train_file) -> dict:
    from smalltune import load_recipe, train

    out = E.WORK / NAME / f"s{seed}"
    common = E.data_overrides(train_file, seed, out) + ["data.max_length=192", f"data.system_prompt={V.SYSTEM}"]
    recipe = load_recipe(V.planned_recipe(train_file), common)
    shutil.rmtree(out, ignore_errors=True)  # a killed seed starts over: an abandoned run keeps nothing to resume
    train(recipe, progress=False, plugins=[AbandonAfter(EVALUATIONS)])
    evals = E.eval_records(out)
    return {"arm": arm, "seed": seed, "steps": [r["step"] for r in evals],
            "eval_loss": [r["eval_loss"] for r in evals], "forgetting": [r.get("forgetting") for r in evals]}


def summarize(rows: "E.Rows", args) -> None:
    arm_rows = [r for r in rows.rows if r["arm"] == ARM]
    if not arm_rows:
        print("no rows yet")
        return
    per_eval = []
    for i in range(min(len(r["eval_loss"]) for r in arm_rows)):
        losses = [r["eval_loss"][i] for r in arm_rows]
        mean = statistics.mean(losses)
        std = statistics.stdev(losses) if len(losses) > 1 else 0.0
        widest = max((abs(a - b) for a, b in itertools.combinations(losses, 2)), default=0.0)
        per_eval.append({"evaluation": i + 1, "step": arm_rows[0]["steps"][i], "losses": losses, "mean": mean,
                         "std": std, "relative_std": std / mean, "widest_pair": widest, "relative_widest": widest / mean})
    table = E.markdown_table(
        ["evaluation (step)", "seeds", "validation loss mean", "std (relative)", "widest pair (relative)"],
        [[f"{e['evaluation']} ({e['step']})", str(len(e["losses"])), f"{e['mean']:.4f}",
          f"{e['std']:.4f} ({e['relative_std']:.2%})", f"{e['widest_pair']:.4f} ({e['relative_widest']:.2%})"]
         for e in per_eval])
    print(table)
    print(E.write_result(NAME, {"arm": ARM, "per_evaluation": per_eval, "rows": arm_rows,
                                "command": E.command(NAME, rows, args)}))


if __name__ == "__main__":
    E.experiment_main(__doc__, NAME, [ARM], run_arm, summarize)
