"""Over-memorization: long training on small data, and which checkpoint each selection rule picks
(issue 9, experiment 4; "over-memorization", arXiv 2508.04117).

LoRA (the demo's r=16, alpha=32) trains 20 epochs on 100 examples at two learning rates, evaluated
once per epoch, early stopping off, every checkpoint kept. Per checkpoint: validation token accuracy
and perplexity (from the run's metrics log) and test-set perplexity and accuracy (scored here on the
72 held-out questions). Three selection rules then pick a checkpoint from the validation numbers only:

* ``validation loss``    lowest validation loss (the usual rule);
* ``accuracy only``      highest validation token accuracy (what over-memorization exploits: accuracy
  keeps rising or holds while perplexity explodes);
* ``accuracy under cap`` highest accuracy among checkpoints whose validation perplexity is within
  ``guards.ppl_factor`` (1.5) of the run's lowest: smalltune's ``guards.selection: accuracy``.

The run's own choice (``guards.selection: auto``) is recorded too. Each picked checkpoint is evaluated
on the held-out set: key-fact recall, answer perplexity, and robustness (recall on rephrased and
perturbed questions).

    .venv/bin/python benchmarks/over_memorization.py --seeds 0 1 2
    .venv/bin/python benchmarks/over_memorization.py --summarize
"""

from __future__ import annotations

import shutil

import _evidence as E

ARMS = {"lora lr2e-4": ["train.lr=2e-4"], "lora lr1e-3": ["train.lr=1e-3"]}
COMMON = ["train.epochs=20", "eval.per_epoch=1", "early_stopping.enabled=false", "train.keep_checkpoints=100",
          "guards.selection=auto"]
NAME = "over_memorization"
RULES = ("validation loss", "accuracy only", "accuracy under cap", "run's own (auto)")


def pick(evals: list[dict], ppl_factor: float) -> dict:
    """Step chosen by each rule from the validation records (ties: the earliest)."""
    low = min(r["eval_ppl"] for r in evals)
    capped = [r for r in evals if r["eval_ppl"] <= ppl_factor * low]
    best = lambda rows, key, sign: min(rows, key=lambda r: (sign * r[key], r["step"]))["step"]  # noqa: E731
    return {"validation loss": best(evals, "eval_loss", 1), "accuracy only": best(evals, "eval_token_acc", -1),
            "accuracy under cap": best(capped, "eval_token_acc", -1)}


class RunCheckpoints:
    """A run's base model with its method applied, loaded once; checkpoints are swapped into it."""

    def __init__(self, run_dir):
        from smalltune import load_recipe
        from smalltune.models import load_from_recipe
        from smalltune.train.methods import METHODS

        self.run_dir = run_dir
        self.recipe = load_recipe(run_dir / "recipe.yaml")
        model, self.tok = load_from_recipe(self.recipe)
        self.method = METHODS.get(self.recipe.method.name, "method.name")()
        self.model = self.method.apply(model, self.recipe.method, self.recipe)

    def load(self, step: int) -> None:
        from smalltune.rundir import RunDir
        from smalltune.train.checkpoint import load_checkpoint

        load_checkpoint(RunDir(self.run_dir).checkpoint(step), self.method, self.model)

    def test_metrics(self, steps: list[int]) -> dict[int, dict]:
        """Test-set loss, perplexity and token accuracy of each checkpoint."""
        from smalltune import load_examples
        from smalltune.data.tokenize import tokenize_examples
        from smalltune.train.loss import dataset_metrics

        d = self.recipe.data
        items, _ = tokenize_examples(self.tok, load_examples(d.test), d.max_length, d.system_prompt)
        out = {}
        for step in steps:
            self.load(step)
            m = dataset_metrics(self.model, items, self.recipe.eval.batch_size, "cpu", self.tok.pad_token_id)
            out[step] = {"test_loss": m["eval_loss"], "test_ppl": m["eval_ppl"], "test_token_acc": m["eval_token_acc"]}
        return out

    def as_run(self, step: int):
        """A run directory whose artifact is checkpoint ``step`` (what ``smalltune evaluate`` reads)."""
        artifact = self.method.artifact
        dst = self.run_dir.parent / f"{self.run_dir.name}@{step}"
        if not (dst / artifact).exists():
            self.load(step)
            tmp = dst / f".{artifact}.tmp"
            self.method.save(self.model, tmp)
            self.tok.save_pretrained(tmp)
            shutil.copy(self.run_dir / "recipe.yaml", dst / "recipe.yaml")
            tmp.rename(dst / artifact)
        return dst


def run_arm(arm: str, seed: int, train_file) -> dict:
    out = E.WORK / NAME / f"{arm.replace(' ', '_')}-s{seed}"
    summary = E.train_run(E.DEMO / "recipe.yaml", E.data_overrides(train_file, seed, out) + COMMON + ARMS[arm])
    evals = E.eval_records(out)
    checkpoints = RunCheckpoints(out)
    test = checkpoints.test_metrics([r["step"] for r in evals])
    curve = [{"step": r["step"], "epoch": r["epoch"], "eval_loss": r["eval_loss"], "eval_ppl": r["eval_ppl"],
              "eval_token_acc": r["eval_token_acc"], "over_memorization": r.get("over_memorization"), **test[r["step"]]}
             for r in evals]
    picks = {**pick(evals, checkpoints.recipe.guards.ppl_factor), "run's own (auto)": summary["best_step"]}
    heldout, caps = {}, E.eval_caps(memorization=0, probes=0, reference=0)
    for step in sorted(set(picks.values())):
        heldout[str(step)] = E.evaluate_run(checkpoints.as_run(step), caps, probes=("task", "robustness"))
    return {"arm": arm, "seed": seed, "curve": curve, "picks": picks, "heldout": heldout,
            "selection": summary["selection"], "train_seconds": summary["wall_seconds"]}


def summarize(rows: "E.Rows", args) -> None:
    flat = []
    for r in rows.rows:
        for rule, step in r["picks"].items():
            h = r["heldout"][str(step)]
            epoch = next(c["epoch"] for c in r["curve"] if c["step"] == step)
            flat.append({"arm": f"{r['arm']} · {rule}", "seed": r["seed"], "epoch": epoch, **h})
    metrics = ["epoch", "key_fact_recall", "test_ppl", "rephrased_quality", "perturbed_quality"]
    agg = E.aggregate(flat, metrics)
    table = E.markdown_table(["arm · selection rule", "epoch picked", "key-fact recall", "test ppl", "recall, rephrased",
                              "recall, perturbed (mean)"],
                             [[k, E.fmt(a["epoch"], digits=1), E.fmt(a["key_fact_recall"], pct=True, digits=1),
                               E.fmt(a["test_ppl"]), E.fmt(a["rephrased_quality"], pct=True, digits=1),
                               E.fmt(a["perturbed_quality"], pct=True, digits=1)] for k, a in agg.items()])
    E.write_result(NAME, {"command": E.command(NAME, rows, args), "seeds": sorted({r["seed"] for r in rows.rows}),
                          "train_size": args.train_size, "arms": ARMS, "common": COMMON,
                          "summary": agg, "table": table, "rows": rows.rows})
    plot(rows.rows)
    print(table)


def plot(rows: list[dict]) -> None:
    """Per epoch: validation accuracy and validation / test perplexity, one panel per learning rate (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(r["arm"] for r in rows))
    fig, axes = plt.subplots(1, len(arms), figsize=(6 * len(arms), 4), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        r = next(x for x in rows if x["arm"] == arm)
        ep = [c["epoch"] for c in r["curve"]]
        ax.plot(ep, [c["eval_ppl"] for c in r["curve"]], "C0-", label="validation ppl")
        ax.plot(ep, [c["test_ppl"] for c in r["curve"]], "C0--", label="test ppl")
        ax.set_xlabel("epoch")
        ax.set_ylabel("perplexity")
        ax2 = ax.twinx()
        ax2.plot(ep, [c["eval_token_acc"] for c in r["curve"]], "C1-", label="validation token accuracy")
        ax2.set_ylabel("token accuracy", color="C1")
        for rule, step, mark in zip(r["picks"], r["picks"].values(), "ovs^"):
            c = next(c for c in r["curve"] if c["step"] == step)
            ax2.plot(c["epoch"], c["eval_token_acc"], mark, ms=9, mfc="none", mec="k", label=f"pick: {rule}")
        ax.set_title(f"{arm} (seed {r['seed']})")
    h1, l1 = axes[0][0].get_legend_handles_labels()
    h2, l2 = fig.axes[-1].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower center", ncol=4)
    fig.savefig(E.RESULTS / f"{NAME}.png", dpi=110)


def main() -> None:
    E.experiment_main(__doc__, NAME, ARMS, run_arm, summarize)


if __name__ == "__main__":
    main()
