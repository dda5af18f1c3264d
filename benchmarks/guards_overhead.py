"""Wall-time cost of the training guards: guards on vs off on the demo recipe with the built-in model.

Not a test: a measurement to run by hand and record in benchmarks/README.md. Runs alternate
off/on so a busy machine's drift hits both sides alike. "On" is what the planner would set:
every guard plus a forgetting budget of 0.05 (reference-text perplexity at each evaluation,
the only guard with a real cost); "off" is ``guards.enabled=false`` (early stopping, part of
the foundation, stays on in both).

Two numbers come out:

* ``runs_overhead``: total wall time of the ``train()`` calls, on / off - 1, at the cadence the
  runs used. With the recipe's default cadence (every 20 steps for the demo) and
  ``--max-steps 20`` this is one full evaluation period per run (the base measurement, paid
  once per real run, is then over-counted). On a slow or busy CPU use fewer steps and a denser
  ``--every``: the ratio is then an upper bound (more evaluations per step than by default).
* ``projected_overhead_default_cadence``: the guards' own measured seconds per evaluation (plus
  the base measurement spread over ``--evaluations``, what a whole demo run does: 9 where it trains
  under bf16 autocast (an evaluation every 10 steps, the budget stops it at step 90), 7 in fp32
  (stopped at 70)) over what one period of the recipe's cadence (``eval.every_steps``) costs
  without them (that many steps at the measured step time + one validation pass), all timed in
  the same runs. The runs share one new folder for the base model's outputs on disk
  (``eval.cache_base_answers``): the first "on" run measures the base perplexity, as a first run
  on a machine does, and later ones read it, as every later run on the same base does. So two
  projections: ``projected_overhead_default_cadence`` (a first run: the first on-run's base
  measurement) and ``projected_overhead_later_runs`` (the other on-runs' reads from disk).

    .venv/bin/python benchmarks/guards_overhead.py --max-steps 20 --pairs 2          # idle machine
    .venv/bin/python benchmarks/guards_overhead.py --max-steps 2 --every 2 --pairs 1  # busy machine

The process keeps the memory it frees, as the ``smalltune`` command does (``--glibc-default``: glibc's default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _evidence import apply_cli_memory, memory_as_the_cli, timer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "dental" / "recipe.yaml"  # what `smalltune plan` writes for the demo


def install_timers() -> dict:
    """Time the guards' own measurements, the validation pass and checkpoint selection (benchmark only)."""
    from smalltune.train import loop
    from smalltune.train.guards import ForgettingBudget

    spent = {"setup": 0.0, "measure": 0.0, "validation": 0.0, "base_validation": 0.0, "keep_best": 0.0}
    ForgettingBudget.setup = timer(spent, "setup", ForgettingBudget.setup)
    # the untrained model's validation pass, paid once per run by both sides (or read from disk): not an evaluation's
    loop._untrained_metrics = timer(spent, "base_validation", loop._untrained_metrics)
    ForgettingBudget.measure = timer(spent, "measure", ForgettingBudget.measure)
    loop.dataset_metrics = timer(spent, "validation", loop.dataset_metrics)  # the loop's validation pass
    loop.keep_best = timer(spent, "keep_best", loop.keep_best)
    return spent


def one_run(on: bool, max_steps: int, every: int | None, out: Path, spent: dict) -> dict:
    from smalltune import load_recipe, train

    overrides = [f"train.max_steps={max_steps}", f"output_dir={out}"] + ([f"eval.every_steps={every}"] if every else [])
    overrides += ["guards.forgetting_budget=0.05"] if on else ["guards.enabled=false"]
    recipe = load_recipe(RECIPE, overrides)
    before = dict(spent)
    t0 = time.perf_counter()
    result = train(recipe, progress=False)
    total = time.perf_counter() - t0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_elapsed = [r["elapsed"] for r in records if r["type"] == "train"]
    d = {k: round(spent[k] - before[k], 2) for k in spent}
    evals = sum(1 for r in records if r["type"] == "eval")
    return {"guards": "on" if on else "off", "call_seconds": round(total, 2), "loop_seconds": result.wall_seconds,
            "steps": result.steps, "evaluations": evals,
            # the loop's time less its evaluation work (periodic checkpoint writes stay in: a slight over-estimate)
            "step_seconds": round((result.wall_seconds - d["validation"] - d["keep_best"] - d["measure"])
                                  / max(len(train_elapsed), 1), 2),
            "validation_seconds": round(d["validation"] - d["base_validation"], 2),
            "base_validation_seconds": d["base_validation"], "keep_best_seconds": d["keep_best"],
            "guard_setup_seconds": d["setup"], "guard_measure_seconds": d["measure"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--every", type=int, default=None, help="eval.every_steps; default = the recipe's cadence")
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--first", choices=("off", "on"), default="off", help="which side runs first in the first pair")
    p.add_argument("--evaluations", type=int, default=9, help="evaluations in a whole demo run (the base measurement "
                   "is paid once per run); 9 in the demo's training under bf16 (stopped at step 90), 7 in fp32 (at 70)")
    memory_as_the_cli(p)
    args = p.parse_args()
    kept = apply_cli_memory(args)
    spent = install_timers()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SMALLTUNE_ANSWER_CACHE"] = str(Path(tmp) / "base-outputs")  # the first run measures the base
        for i in range(args.pairs):
            for on in (False, True) if (i % 2 == 0) == (args.first == "off") else (True, False):
                rows.append(one_run(on, args.max_steps, args.every, Path(tmp) / f"run-{len(rows)}", spent))
                print(json.dumps(rows[-1]), flush=True)
    mean = lambda key, side: statistics.mean(r[key] for r in rows if r["guards"] == side)  # noqa: E731
    per_eval = lambda key, side: statistics.mean(r[key] / max(r["evaluations"], 1) for r in rows if r["guards"] == side)  # noqa: E731
    # Projection to a whole demo run: what the guards add per evaluation period of the recipe's cadence (the
    # base measurement spread over the run's evaluations), over what that period costs without them.
    from smalltune import load_recipe

    cadence = args.every or load_recipe(RECIPE).eval.every_steps
    step_s = statistics.mean(r["step_seconds"] for r in rows)
    period_off = cadence * step_s + per_eval("validation_seconds", "off") + per_eval("keep_best_seconds", "off")
    setups = [r["guard_setup_seconds"] for r in rows if r["guards"] == "on"]  # the first measured, the rest read

    def added(setup_s: float) -> float:
        return (per_eval("guard_measure_seconds", "on") + setup_s / args.evaluations
                + per_eval("keep_best_seconds", "on") - per_eval("keep_best_seconds", "off"))

    later = statistics.mean(setups[1:]) if len(setups) > 1 else None
    print(json.dumps({"freed_memory_kept": kept, "runs_mean_off_s": round(mean("call_seconds", "off"), 2),
                      "runs_mean_on_s": round(mean("call_seconds", "on"), 2),
                      "runs_overhead": round(mean("call_seconds", "on") / mean("call_seconds", "off") - 1, 4),
                      "cadence_steps": cadence, "evaluations": args.evaluations, "step_s": round(step_s, 2),
                      "validation_s_per_eval": round(per_eval("validation_seconds", "off"), 2),
                      "guard_s_per_eval": round(per_eval("guard_measure_seconds", "on"), 2),
                      "guard_setup_s_first": round(setups[0], 2),
                      "guard_setup_s_later": None if later is None else round(later, 2),
                      "projected_overhead_default_cadence": round(added(setups[0]) / period_off, 4),
                      "projected_overhead_later_runs": None if later is None else round(added(later) / period_off, 4)}))


if __name__ == "__main__":
    main()
