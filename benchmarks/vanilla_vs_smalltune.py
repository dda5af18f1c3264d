"""Vanilla fine-tuning vs smalltune's planned recipe with guards (issue 9, experiment 1).

Vanilla = what people run: full fine-tuning at lr 2e-5 and 1e-4, LoRA (r=8, alpha=16, dropout 0.05,
every linear layer) at lr 2e-4, each for 3 and 10 epochs, with transformers.Trainer's defaults
(linear decay, no warmup, no weight decay) and no validation-based stopping: the final weights are
evaluated. smalltune = the recipe ``smalltune plan`` writes for the same data, unchanged (since v4: full
fine-tuning at 1e-4 for up to 5 epochs, the best validation accuracy under a 10% general-text perplexity budget
that stops the run; earlier defaults and candidates are kept as measured). Shared: the
built-in model, the demo's system prompt, batch 8, max length 192, the data (``_evidence.py``).

Measured per run, fine-tuned vs base on the same inputs (``smalltune.evaluate``): held-out key-fact
recall on the 72 rephrased test questions (task learning), relative change of general-text
perplexity (Wikipedia paragraphs) and of accuracy on general questions (forgetting), the share of
training prompts answered verbatim or near-verbatim (memorization), and training wall time.

    .venv/bin/python benchmarks/vanilla_vs_smalltune.py --seeds 0 1 2          # run (resumes)
    .venv/bin/python benchmarks/vanilla_vs_smalltune.py --summarize            # table + plot only
"""

from __future__ import annotations

import time

import _evidence as E

ARMS = {
    "full lr2e-5 3ep": ["method.name=full", "train.lr=2e-5", "train.epochs=3"],
    "full lr2e-5 10ep": ["method.name=full", "train.lr=2e-5", "train.epochs=10"],
    "full lr1e-4 3ep": ["method.name=full", "train.lr=1e-4", "train.epochs=3"],
    "full lr1e-4 10ep": ["method.name=full", "train.lr=1e-4", "train.epochs=10"],
    "lora lr2e-4 3ep": ["method.name=lora", "train.lr=2e-4", "train.epochs=3"],
    "lora lr2e-4 10ep": ["method.name=lora", "train.lr=2e-4", "train.epochs=10"],
}
SMALLTUNE = "smalltune plan + guards"  # v1 defaults (seed 0 only, before issue 14): kept as measured, not rerun
V2 = "smalltune plan v2"  # LoRA 1e-3, 5-epoch cosine, self-replay 0.2, budget stops (seed 0): kept as measured
DEFAULTS = "smalltune plan v4"  # the recipe `smalltune plan` writes since v4 ("1c"): v3 + 5 epochs, accuracy selection, budget stop
V3 = "smalltune plan v3"  # full 1e-4 under 1B, 3 epochs, linear, no replay, loss selection, budget warns (3 seeds)
# The v3 plan of the 100-example subset, from the v4 plan (4 warmup steps of 39): V3 and the candidates measured on it
V3_FROM_V4 = ["train.epochs=3", "train.warmup_ratio=0.1026", "guards.selection=auto", "guards.forgetting_action=warn"]
# Candidates tried for v3 on seed 0, each the v2 plan with the overrides shown: kept as measured, not rerun
# (their base recipe is now v3).
CANDIDATES = {
    "plan + full lr1e-4": ["method.name=full", "train.lr=1e-4"],
    "plan + hft lr1e-4": ["method.name=hft", "train.lr=1e-4"],
    # the schedule of the best vanilla arm (3 epochs, linear decay, no warmup); forgetting guard warns only,
    # selection still keeps checkpoints within the budget
    "plan + full lr1e-4 3ep linear": ["method.name=full", "train.lr=1e-4", "train.epochs=3", "train.scheduler=linear",
                                      "train.warmup_ratio=0", "guards.forgetting_action=warn"],
    "plan + full lr1e-4 3ep linear, reference replay": [
        "method.name=full", "train.lr=1e-4", "train.epochs=3", "train.scheduler=linear", "train.warmup_ratio=0",
        "guards.forgetting_action=warn", "regularize.replay_source=reference"],
    "plan + hft lr1e-4 3ep linear": ["method.name=hft", "train.lr=1e-4", "train.epochs=3", "train.scheduler=linear",
                                     "train.warmup_ratio=0", "guards.forgetting_action=warn"],
    "plan + full lr1e-4 3ep linear, ewc 1e4": ["method.name=full", "train.lr=1e-4", "train.epochs=3",
                                               "train.scheduler=linear", "train.warmup_ratio=0",
                                               "guards.forgetting_action=warn", "regularize.ewc_lambda=1e4"],
}
# Replay tried on top of v3 (seed 0): the v3 plan (no replay) with the overrides shown. The greedy row
# was measured before self-replay sampled (commit 51bd09f); rerunning it now gives the sampled variant.
V3_CANDIDATES = {"plan v3 + sampled self-replay 0.2": ["regularize.replay_ratio=0.2", "regularize.replay_source=self"],
                 "plan v3 + 4 epochs": ["train.epochs=4"],  # the recall gap to full 1e-4 3ep (0.5 points)
                 # experiment 4: token accuracy under the perplexity cap picked 26.6% recall where the lowest
                 # loss picked 14.6%; train past the loss minimum (no early stop) and let the budget bound forgetting
                 "plan v3 + 5 epochs, accuracy selection": ["train.epochs=5", "guards.selection=accuracy",
                                                            "early_stopping.enabled=false"],
                 # with the budget as a constraint (`warn` above does not restrict selection: it chose +14.9%): the
                 # run stops past +10% and keeps the best accuracy within it; early stopping stays the plan's
                 "plan v3 + 5 epochs, accuracy selection, budget stop": [
                     "train.epochs=5", "guards.selection=accuracy", "guards.forgetting_action=stop"]}
V3_GREEDY = "plan v3 + greedy self-replay 0.2"  # kept as measured
TUNED = "smalltune tune"  # `smalltune tune` on the same data, then its chosen trial: random first trials (1e)
TUNED_FROM_PLAN = "smalltune tune from the plan"  # the first trial is the plan's settings, pruning against it (1f)
TUNED_ARMS = {TUNED: ["tune.start_from_recipe=false"], TUNED_FROM_PLAN: []}
TUNE_TRIALS = 6
METRICS = ["key_fact_recall", "reference_ppl_change", "general_accuracy_change", "memorized_rate", "verbatim_rate",
           "test_ppl", "train_seconds", "epochs_run"]
NAME = "vanilla_vs_smalltune"
SYSTEM = "You are the receptionist at Brightside Dental."


def planned_recipe(train_file) -> "E.Path":
    """``smalltune plan``'s recipe for the subset (written once; shared by every seed)."""
    import smalltune

    path = E.WORK / NAME / f"plan-v4-{train_file.stem}.yaml"
    if not path.exists():
        smalltune.plan(str(train_file), validation=str(E.DEMO / "validation.jsonl"), test=str(E.DEMO / "test.jsonl"),
                       output=str(path))
    return path


def tuned_run(train_file, common: list[str], out, arm: str) -> tuple[dict, dict]:
    """Run (or resume) the search; the chosen trial's summary and the search's cost."""
    from smalltune import load_recipe
    from smalltune.tune import tune

    recipe = load_recipe(planned_recipe(train_file), common + [f"tune.trials={TUNE_TRIALS}"] + TUNED_ARMS[arm])
    t0 = time.perf_counter()
    result = tune(recipe, resume=(out / "tune.db").exists(), progress=False)
    if result.chosen is None:
        raise SystemExit(f"tuning chose nothing: {result.why}")
    summary = E.json.loads((E.Path(result.run_dir) / "train_summary.json").read_text())
    cost = {"tune_trials": len(result.trials), "tune_pruned": sum(r.state == "pruned" for r in result.trials),
            "tune_seconds": round(time.perf_counter() - t0, 1), "tune_chosen": result.why}
    return summary, cost


def run_arm(arm: str, seed: int, train_file) -> dict:
    out = E.WORK / NAME / f"{arm.replace(' ', '_')}-s{seed}"
    # the plan does not know the demo's system prompt; vanilla arms get the planned max length
    common = E.data_overrides(train_file, seed, out) + ["data.max_length=192", f"data.system_prompt={SYSTEM}"]
    cost: dict = {}
    if arm in TUNED_ARMS:
        summary, cost = tuned_run(train_file, common, out, arm)
        out = E.Path(summary["run_dir"])
    elif arm == DEFAULTS:
        summary = E.train_run(planned_recipe(train_file), common)
    elif arm == V3 or arm in V3_CANDIDATES:
        summary = E.train_run(planned_recipe(train_file), common + V3_FROM_V4 + V3_CANDIDATES.get(arm, []))
    else:
        lora = ["method.r=8", "method.alpha=16", "method.dropout=0.05"] if "lora" in arm else []
        summary = E.train_run(E.DEMO / "recipe.yaml", common + E.VANILLA + ARMS[arm] + lora)
    t0 = time.perf_counter()
    numbers = E.evaluate_run(out, E.eval_caps(probes=32))  # 32 general questions: the rows since issue 9 compare
    return {"arm": arm, "seed": seed, **numbers, "train_seconds": summary["wall_seconds"], "epochs_run": summary["epochs"],
            "steps": summary["steps"], "stopped": summary["stopped"], "selection": summary.get("selection"),
            "eval_seconds": round(time.perf_counter() - t0, 1), **cost}



def summarize(rows: "E.Rows", args) -> None:
    agg = E.aggregate(rows.rows, METRICS)
    table = E.markdown_table(
        ["arm", "key-fact recall", "reference ppl change", "general QA change", "memorized", "test ppl", "train s", "epochs"],
        [[arm, E.fmt(a["key_fact_recall"], pct=True, digits=1), E.fmt(a["reference_ppl_change"], pct=True, digits=1),
          E.fmt(a["general_accuracy_change"], pct=True, digits=1), E.fmt(a["memorized_rate"], pct=True, digits=1),
          E.fmt(a["test_ppl"]), E.fmt(a["train_seconds"], digits=0), E.fmt(a["epochs_run"], digits=1)]
         for arm, a in agg.items()])
    E.write_result(NAME, {"command": E.command(NAME, rows, args), "seeds": sorted({r["seed"] for r in rows.rows}),
                          "train_size": args.train_size, "arms": {**ARMS, SMALLTUNE: "smalltune plan's recipe before issue 14 (seed 0)",
                                   V2: "smalltune plan's recipe of issue 14's first defaults (seed 0)",
                                   **{arm: f"v2 plan + {' '.join(o)} (seed 0)" for arm, o in CANDIDATES.items()},
                                   V3: "smalltune plan's recipe of 1c's v3 defaults",
                                   DEFAULTS: "smalltune plan's recipe since v4, unchanged (3 seeds measured as "
                                             "'plan v3 + 5 epochs, accuracy selection, budget stop': the same but "
                                             "6.7 instead of 6 warmup steps)",
                                   **{arm: f"v3 plan + {' '.join(o)} (seed 0)" for arm, o in V3_CANDIDATES.items()},
                                   V3_GREEDY: "v3 plan + 20% replay of the base model's greedy answers (seed 0)",
                                   TUNED: f"smalltune tune, {TUNE_TRIALS} trials from random starts, its chosen trial",
                                   TUNED_FROM_PLAN: f"smalltune tune, {TUNE_TRIALS} trials, the first the plan's "
                                   "settings, its chosen trial"},
                          "vanilla_defaults": E.VANILLA, "summary": agg, "table": table, "rows": rows.rows})
    plot(agg)
    print(table)


def plot(agg: dict) -> None:
    """Learning (key-fact recall) against forgetting (reference perplexity change), one point per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, a in agg.items():
        if not a["key_fact_recall"] or not a["reference_ppl_change"]:
            continue
        x, y = a["reference_ppl_change"], a["key_fact_recall"]
        ax.errorbar(100 * x["mean"], 100 * y["mean"], xerr=100 * (x["std"] or 0), yerr=100 * (y["std"] or 0),
                    fmt="*" if arm.startswith("smalltune") else "o", ms=12 if arm.startswith("smalltune") else 7, capsize=3, label=arm)
        if a["memorized_rate"]:
            ax.annotate(f"{a['memorized_rate']['mean']:.0%} memorized", (100 * x["mean"], 100 * y["mean"]),
                        textcoords="offset points", xytext=(6, -10), fontsize=7, color="grey")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("general-text perplexity change vs base (%)  → more forgetting")
    ax.set_ylabel("held-out key-fact recall (%)")
    ax.set_title("Learning vs forgetting: vanilla settings and smalltune")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(E.RESULTS / f"{NAME}.png", dpi=110)


def main() -> None:
    E.experiment_main(__doc__, NAME, [*ARMS, DEFAULTS, V3, *TUNED_ARMS, *V3_CANDIDATES], run_arm, summarize)


if __name__ == "__main__":
    main()
