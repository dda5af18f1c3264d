"""Learning vs forgetting per epoch for each method and anti-forgetting technique (issue 9, experiment 3).

Every arm trains 4 epochs on 100 demo examples at a learning rate where forgetting shows (LoRA r=16
at lr 1e-3 as in the demo recipe; full fine-tuning and HFT at 1e-4), evaluated once per epoch with
early stopping off. At each evaluation three numbers are logged:

* task: validation loss on the demo's validation file;
* forgetting, text: perplexity of fixed general reference text (Wikipedia paragraphs never used for
  training or replay), relative to the base model -- the forgetting guard in ``warn`` mode;
* forgetting, knowledge: accuracy on 24 general questions (12 capitals, 12 trivia) answered greedily
  without the system prompt -- measured by a probe added to the run's guards for this benchmark.

Arms: LoRA, full, HFT (arXiv 2404.18466), and LoRA with each regulariser: EWC (arXiv 1612.00796,
lambda 1e4), SAM (arXiv 2010.01412, rho 0.05), replay of general text (20%), NEFTune (arXiv
2310.05914, alpha 5). The plot puts every (arm, epoch) on the validation-loss vs perplexity-change
plane and draws the Pareto front (lower is better on both axes).

    .venv/bin/python benchmarks/learning_vs_forgetting.py --seeds 0 1 2
    .venv/bin/python benchmarks/learning_vs_forgetting.py --summarize
"""

from __future__ import annotations

import statistics

import _evidence as E

LORA = ["method.name=lora", "method.r=16", "method.alpha=32", "train.lr=1e-3"]
ARMS = {
    "lora": LORA,
    "full": ["method.name=full", "train.lr=1e-4"],
    "hft": ["method.name=hft", "train.lr=1e-4"],
    "lora + ewc": LORA + ["regularize.ewc_lambda=1e4"],
    "lora + sam": LORA + ["regularize.sam_rho=0.05"],
    "lora + replay": LORA + ["regularize.replay_ratio=0.2"],
    "lora + neftune": LORA + ["regularize.neftune_alpha=5"],
}
COMMON = ["train.epochs=4", "eval.per_epoch=1", "early_stopping.enabled=false", "guards.forgetting_budget=100",
          "guards.forgetting_action=warn", "train.keep_checkpoints=1"]
NAME = "learning_vs_forgetting"
PROBE_QUESTIONS = 24


def add_probe_accuracy_guard() -> None:
    """Measure general-question accuracy at every evaluation, as a guard of the run (benchmark only)."""
    from smalltune.data.reference import capital_pairs, general_qa
    from smalltune.data.tokenize import render
    from smalltune.evaluate.metrics import contains_answer
    from smalltune.generate import GenerationSettings, generate_text
    from smalltune.train import loop
    from smalltune.train.guards import Guard

    import random

    rng = random.Random(0)
    questions = ([(f"What is the capital of {c}?", a) for c, a in rng.sample(capital_pairs(), PROBE_QUESTIONS // 2)]
                 + rng.sample(general_qa(), PROBE_QUESTIONS // 2))

    class ProbeAccuracy(Guard):
        name = "probe_accuracy"

        def accuracy(self, ctx) -> float:
            model = ctx.unwrap(ctx.model)
            was = model.training
            model.eval()
            prompts = [render(ctx.tokenizer, [{"role": "user", "content": q}], add_generation_prompt=True) for q, _ in questions]
            answers = generate_text(model, ctx.tokenizer, prompts, GenerationSettings(max_new_tokens=24, batch_size=24))
            model.train(was)
            return statistics.mean(float(contains_answer(a, ref)) for a, (_, ref) in zip(answers, questions))

        def setup(self, ctx) -> None:
            self.base = self.accuracy(ctx)

        def measure(self, ctx) -> dict:
            acc = self.accuracy(ctx)
            return {"probe_accuracy": acc, "probe_accuracy_change": acc - self.base}

    build = loop.build_guards

    def with_probe(recipe):
        guards = build(recipe)
        guards.insert(0, ProbeAccuracy())
        return guards

    loop.build_guards = with_probe


def run_arm(arm: str, seed: int, train_file) -> dict:
    out = E.WORK / NAME / f"{arm.replace(' ', '_').replace('+', 'plus')}-s{seed}"
    summary = E.train_run(E.DEMO / "recipe.yaml", E.data_overrides(train_file, seed, out) + COMMON + ARMS[arm])
    base_ppl = summary["guards"].get("forgetting_budget", {}).get("base_ppl")
    curve = [{"epoch": r["epoch"], "eval_loss": r["eval_loss"], "ref_ppl": r.get("ref_ppl"), "ref_ppl_change": r.get("forgetting"),
              "probe_accuracy": r.get("probe_accuracy"), "probe_accuracy_change": r.get("probe_accuracy_change")}
             for r in E.eval_records(out)]
    return {"arm": arm, "seed": seed, "curve": curve, "base_ref_ppl": base_ppl, "train_seconds": summary["wall_seconds"],
            "trainable_params": summary["trainable_params"]}


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points no other point beats on both axes (both lower-is-better), sorted by x."""
    return sorted(p for p in points if not any(q[0] <= p[0] and q[1] <= p[1] and q[:2] != p[:2] for q in points))


def summarize(rows: "E.Rows", args) -> None:
    flat = [{"arm": f"{r['arm']} · epoch {round(c['epoch'])}", "seed": r["seed"], **c} for r in rows.rows for c in r["curve"]]
    metrics = ["eval_loss", "ref_ppl_change", "probe_accuracy_change"]
    agg = E.aggregate(flat, metrics)
    points = [(a["ref_ppl_change"]["mean"], a["eval_loss"]["mean"], k) for k, a in agg.items()
              if a["ref_ppl_change"] and a["eval_loss"]]
    front = pareto(points)
    table = E.markdown_table(["arm · epoch", "validation loss", "reference ppl change", "general QA change", "Pareto"],
                             [[k, E.fmt(a["eval_loss"], digits=3), E.fmt(a["ref_ppl_change"], pct=True, digits=1),
                               E.fmt(a["probe_accuracy_change"], pct=True, digits=1),
                               "✓" if any(p[2] == k for p in front) else ""] for k, a in agg.items()])
    times = E.aggregate(rows.rows, ["train_seconds"])
    E.write_result(NAME, {"command": E.command(NAME, rows, args), "seeds": sorted({r["seed"] for r in rows.rows}),
                          "train_size": args.train_size, "arms": ARMS, "common": COMMON,
                          "summary": agg, "pareto_front": [p[2] for p in front], "train_seconds": times,
                          "table": table, "rows": rows.rows})
    plot(agg, front)
    print(table)


def plot(agg: dict, front) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    arms = list(dict.fromkeys(k.split(" · ")[0] for k in agg))
    for i, arm in enumerate(arms):
        pts = [(a["ref_ppl_change"]["mean"] * 100, a["eval_loss"]["mean"]) for k, a in agg.items()
               if k.split(" · ")[0] == arm and a["ref_ppl_change"] and a["eval_loss"]]
        if pts:
            ax.plot(*zip(*pts), "o-", color=f"C{i}", label=arm, ms=4)
            ax.annotate("1", pts[0], fontsize=7, color=f"C{i}")
            ax.annotate(str(len(pts)), pts[-1], fontsize=7, color=f"C{i}")
    ax.plot([p[0] * 100 for p in front], [p[1] for p in front], "k:", lw=1.5, label="Pareto front")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("general-text perplexity change vs base (%)  → more forgetting")
    ax.set_ylabel("validation loss on the task  → worse learning")
    ax.set_title("Learning vs forgetting per epoch (numbers: epoch)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(E.RESULTS / f"{NAME}.png", dpi=110)


def main() -> None:
    E.experiment_main(__doc__, NAME, ARMS, run_arm, summarize, setup=add_probe_accuracy_guard)


if __name__ == "__main__":
    main()
