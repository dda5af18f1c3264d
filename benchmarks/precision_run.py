"""fp32 vs bf16 autocast over whole demo runs, the bf16 weights scored in fp32 too (issue 19 item 3).

``train.precision: auto`` takes bf16 autocast on a CPU where one decoder layer runs clearly faster in it
(``smalltune.train.precision``). This experiment checks the other half of the goal, that a bf16 run
learns like an fp32 one: each (precision, seed) trains the demo recipe (``examples/dental/recipe.yaml``,
as ``smalltune plan`` writes it: full fine-tuning, evaluation every 10 steps, the +10% forgetting budget
that stops the run) and records

* the run as it went: step losses, each evaluation's validation loss, token accuracy and guard forgetting
  (all measured in the run's own precision), where it stopped and which step it kept, step seconds;
* its kept weights scored again **in fp32 and under bf16 autocast**, on the validation set, the test
  questions' answers (72, never trained or used for selection) and general reference text (the guard's
  2048 tokens and 8192 tokens of the measurement paragraphs, against the base model scored the same way).
  The difference between the two scorings of one model is the scoring's own share of a bf16 gap.

"Within noise" is read against the fp32 runs of different seeds: a bf16 run that differs from the fp32
run of its seed by less than the fp32 runs differ between seeds learns like fp32.

    .venv/bin/python benchmarks/precision_run.py --seeds 0 1 --train-size 323    # the whole demo file (resumes)
    .venv/bin/python benchmarks/precision_run.py --summarize --train-size 323
    SMALLTUNE_BENCH_MAX_STEPS=2 SMALLTUNE_BENCH_RESULTS=/tmp/smoke SMALLTUNE_BENCH_WORK=/tmp/smoke \
        .venv/bin/python benchmarks/precision_run.py --seeds 0 --train-size 8       # plumbing smoke

Timing: both arms of a seed run one after the other in one process; their step seconds are a ratio only
when the machine's load did not change between them (run it alone, or read the ratio with its load note).
"""

from __future__ import annotations

import json
import statistics
from functools import cache
from pathlib import Path

import _evidence as E

ARMS = {"fp32": "train.precision=fp32", "bf16": "train.precision=bf16"}
NAME = "precision_run"
REFERENCE_TOKENS = (2048, 8192)  # the guard's default sample, and a 4x larger one (benchmarks/README "Fewer reference tokens")
METRICS = ["steps", "best_step", "step_seconds", "train_seconds", "val_loss_fp32", "val_loss_bf16", "val_acc_fp32",
           "test_loss_fp32", "test_acc_fp32", "forgetting_2048_fp32", "forgetting_2048_bf16", "forgetting_8192_fp32"]


def autocast(precision: str):
    import torch

    return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else None


@cache
def scoring_sets(recipe_file: str) -> dict:
    """Tokenised validation, test and reference windows of the demo, shared by every run of the process."""
    from smalltune import load_examples, load_recipe
    from smalltune.data.tokenize import tokenize_examples
    from smalltune.models import load_from_recipe
    from smalltune.train.guards.forgetting import reference_items
    from smalltune.train.splits import GUARD_PARAGRAPHS, reference_roles

    recipe = load_recipe(recipe_file)
    _, tok = load_from_recipe(recipe)
    sets = {name: tokenize_examples(tok, load_examples(E.DEMO / f"{name}.jsonl"), recipe.data.max_length,
                                    recipe.data.system_prompt)[0] for name in ("validation", "test")}
    measure = reference_roles(recipe).measure  # the measurement paragraphs: never trained on
    for n in REFERENCE_TOKENS:  # the guard reads the first GUARD_PARAGRAPHS; the larger sample reads on
        sets[f"reference_{n}"] = reference_items(tok, measure[: GUARD_PARAGRAPHS if n <= 2048 else None], n)
    return {"items": sets, "pad": tok.pad_token_id}


def score(model, sets: dict, precision: str) -> dict:
    from smalltune.train.loss import dataset_metrics

    return {name: dataset_metrics(model, items, 16, "cpu", sets["pad"], autocast(precision))
            for name, items in sets["items"].items()}


@cache
def base_scores(recipe_file: str, precision: str) -> dict:
    from smalltune import load_recipe
    from smalltune.models import load_from_recipe

    model, _ = load_from_recipe(load_recipe(recipe_file))
    return score(model.eval(), scoring_sets(recipe_file), precision)


def step_seconds(train_rows: list[dict]) -> float:
    """Median seconds between consecutive steps: the steps that span an evaluation are the outliers it drops."""
    gaps = [b["elapsed"] - a["elapsed"] for a, b in zip(train_rows, train_rows[1:])]
    return statistics.median(gaps) if gaps else float("nan")


def run_arm(arm: str, seed: int, train_file: Path) -> dict:
    from smalltune.train import load_trained

    out = E.WORK / NAME / f"{arm}-s{seed}"
    summary = E.train_run(E.DEMO / "recipe.yaml", E.data_overrides(train_file, seed, out) + [ARMS[arm]])
    rows = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    train_rows = [r for r in rows if r["type"] == "train"]
    start = next(r for r in rows if r.get("event") == "start")
    model, _, _ = load_trained(out)
    recipe_file = str(out / "recipe.yaml")
    scored = {p: score(model, scoring_sets(recipe_file), p) for p in ("fp32", "bf16")}
    base = {p: base_scores(recipe_file, p) for p in ("fp32", "bf16")}
    row = {"arm": arm, "seed": seed, "precision": start["precision"], "steps": summary["steps"],
           "stopped": summary["stopped"], "best_step": summary["best_step"], "train_seconds": summary["wall_seconds"],
           "step_seconds": round(step_seconds(train_rows), 3),
           "losses": [round(r["loss"], 4) for r in train_rows],
           "evals": [{k: r.get(k) for k in ("step", "eval_loss", "eval_token_acc", "forgetting")}
                     for r in E.eval_records(out)]}
    for p in ("fp32", "bf16"):
        s, b = scored[p], base[p]
        row |= {f"val_loss_{p}": s["validation"]["eval_loss"], f"val_acc_{p}": s["validation"]["eval_token_acc"],
                f"test_loss_{p}": s["test"]["eval_loss"], f"test_acc_{p}": s["test"]["eval_token_acc"],
                **{f"forgetting_{n}_{p}": s[f"reference_{n}"]["eval_ppl"] / b[f"reference_{n}"]["eval_ppl"] - 1
                   for n in REFERENCE_TOKENS}}
    return row


def paired(rows: list[dict], metric: str, a: str, b: str) -> list[float]:
    """Per seed: metric of arm ``a`` minus arm ``b`` (seeds where both ran)."""
    by = {(r["arm"], r["seed"]): r for r in rows}
    return [by[a, s][metric] - by[b, s][metric] for s in sorted({r["seed"] for r in rows}) if (a, s) in by and (b, s) in by]


def seed_spread(rows: list[dict], metric: str, arm: str = "fp32") -> float | None:
    """The largest difference of ``metric`` between seeds of ``arm``: the noise a precision gap is read against."""
    vals = [r[metric] for r in rows if r["arm"] == arm]
    return max(vals) - min(vals) if len(vals) > 1 else None


def curve_gap(rows: list[dict], a: tuple[str, int], b: tuple[str, int]) -> float | None:
    """Mean absolute difference of two runs' step losses over the steps both ran."""
    by = {(r["arm"], r["seed"]): r["losses"] for r in rows}
    if a not in by or b not in by:
        return None
    n = min(len(by[a]), len(by[b]))
    return statistics.mean(abs(x - y) for x, y in zip(by[a][:n], by[b][:n])) if n else None


def summarize(rows: E.Rows, args) -> None:
    rs = rows.rows
    if not rs:
        print("no rows yet")
        return
    agg = E.aggregate(rs, METRICS)
    header = ["precision", "seeds", "steps (kept)", "step s", "val loss fp32 / bf16-scored", "val acc", "test loss",
              "forgetting 2048 fp32 / bf16-scored", "forgetting 8192"]
    table = [[arm, str(a["steps"]["n"]), f"{E.fmt(a['steps'], digits=0)} ({E.fmt(a['best_step'], digits=0)})",
              E.fmt(a["step_seconds"]), f"{E.fmt(a['val_loss_fp32'], digits=3)} / {E.fmt(a['val_loss_bf16'], digits=3)}",
              E.fmt(a["val_acc_fp32"], pct=True, digits=1), E.fmt(a["test_loss_fp32"], digits=3),
              f"{E.fmt(a['forgetting_2048_fp32'], pct=True, digits=1)} / {E.fmt(a['forgetting_2048_bf16'], pct=True, digits=1)}",
              E.fmt(a["forgetting_8192_fp32"], pct=True, digits=1)] for arm, a in agg.items()]
    seeds = sorted({r["seed"] for r in rs})
    compare = {m: {"bf16_minus_fp32_per_seed": paired(rs, m, "bf16", "fp32"), "fp32_seed_spread": seed_spread(rs, m)}
               for m in ("val_loss_fp32", "test_loss_fp32", "val_acc_fp32", "forgetting_8192_fp32", "step_seconds")}
    curves = {"bf16_vs_fp32_same_seed": {s: curve_gap(rs, ("bf16", s), ("fp32", s)) for s in seeds},
              "fp32_seed_vs_seed": {f"{a}-{b}": curve_gap(rs, ("fp32", a), ("fp32", b)) for a, b in zip(seeds, seeds[1:])}}
    scoring = {"val_loss bf16-scored minus fp32-scored": {r["arm"] + f"-s{r['seed']}": r["val_loss_bf16"] - r["val_loss_fp32"]
                                                         for r in rs}}
    print(E.markdown_table(header, table))
    print(json.dumps({"compare": compare, "curves": curves, "scoring": scoring}, indent=1))
    E.write_result(NAME, {"command": E.command(NAME, rows, args), "arms": ARMS, "summary": agg, "compare": compare,
                          "curves": curves, "scoring": scoring, "smoke": bool(E.MAX_STEPS)})


if __name__ == "__main__":
    E.experiment_main(__doc__, NAME, ARMS, run_arm, summarize)
