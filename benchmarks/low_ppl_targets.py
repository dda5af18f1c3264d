"""Low-perplexity training targets against forgetting (issue 9, experiment 2).

Ground-truth answers vs Selective Token Masking (STM, arXiv 2501.14315: tokens whose base-model
perplexity exceeds tau leave the loss; tau = 1.5, 2.5, 25) vs a random-mask control that leaves out
as many tokens as STM at tau = 2.5, chosen at random (does *which* tokens are masked matter, or only
how many?) vs self-distilled targets (arXiv 2402.13669: the base model rewrites each answer in its
own words, keeping the key facts). Every arm: LoRA r=16 at lr 1e-3 (the demo recipe, where forgetting
shows), 3 epochs on 100 demo examples, no validation-based stopping (final weights), so only the
targets differ.

Measured: held-out key-fact recall and ROUGE-L (task quality), test-answer perplexity, general-text
perplexity change and general-question accuracy change (forgetting), the mean base-model
perplexity of the tokens actually trained on (exp of their mean loss), and the share of answer
tokens masked.

    .venv/bin/python benchmarks/low_ppl_targets.py --seeds 0 1 2
    .venv/bin/python benchmarks/low_ppl_targets.py --summarize
"""

from __future__ import annotations

import dataclasses
import math
import random

import _evidence as E

CONTROL_TAU = 2.5
ARMS = {
    "ground truth": [],
    "stm tau=1.5": ["targets.stm_threshold=1.5"],
    "stm tau=2.5": ["targets.stm_threshold=2.5"],
    "stm tau=25": ["targets.stm_threshold=25"],
    f"random mask (count of tau={CONTROL_TAU})": [f"targets.stm_threshold={CONTROL_TAU}"],
    "self-distilled": ["targets.self_distill=true"],
}
COMMON = ["method.name=lora", "method.r=16", "method.alpha=32", "train.lr=1e-3", "train.epochs=3"] + E.VANILLA
NAME = "low_ppl_targets"
METRICS = ["key_fact_recall", "rouge_l", "test_ppl", "reference_ppl_change", "general_accuracy_change",
           "target_ppl", "masked_share", "train_seconds"]


def random_mask_control(seed: int):
    """A context manager swapping STM for a mask of the same size at random positions (benchmark only)."""
    import contextlib

    from smalltune.data.tokenize import IGNORE
    from smalltune.train.targets import stm

    real = stm.selective_token_mask

    def same_count_at_random(model, items, threshold, device, pad_id, batch_size=8):
        _, info = real(model, items, threshold, device, pad_id, batch_size)
        slots = [(i, j) for i, it in enumerate(items) for j, lab in enumerate(it.labels) if lab != IGNORE]
        drop = set(random.Random(seed).sample(slots, info["stm_masked_tokens"]))
        kept = []
        for i, it in enumerate(items):
            labels = [IGNORE if (i, j) in drop else lab for j, lab in enumerate(it.labels)]
            new = dataclasses.replace(it, labels=labels)
            if new.n_trainable:
                kept.append(new)
        return kept, {**info, "control": "random positions, same count as STM"}

    @contextlib.contextmanager
    def swapped():
        stm.selective_token_mask = same_count_at_random
        try:
            yield
        finally:
            stm.selective_token_mask = real

    return swapped()


def trained_targets(run_dir) -> dict:
    """Base-model perplexity of the answer tokens the run trained on, and the share masked."""
    from smalltune import load_recipe
    from smalltune.data.tokenize import IGNORE
    from smalltune.models import load_from_recipe
    from smalltune.train.data import prepare_data
    from smalltune.train.targets.stm import target_perplexities

    recipe = load_recipe(run_dir / "recipe.yaml")
    model, tok = load_from_recipe(recipe)
    data = prepare_data(recipe, tok, model, run_dir, "cpu")  # self-distilled rewrites come from the run's cache
    ppl = target_perplexities(model, data.train, "cpu", tok.pad_token_id, recipe.eval.batch_size)
    logs = [math.log(p) for row in ppl for p in row if p is not None]
    masked = data.transforms.get("stm_masked_share", 0.0)
    labelled = sum(1 for it in data.train for lab in it.labels if lab != IGNORE)
    return {"target_ppl": math.exp(sum(logs) / len(logs)), "masked_share": masked, "trained_tokens": labelled}


def run_arm(arm: str, seed: int, train_file) -> dict:
    import contextlib

    out = E.WORK / NAME / f"{arm.split(' (')[0].replace(' ', '_').replace('=', '')}-s{seed}"
    overrides = E.data_overrides(train_file, seed, out) + COMMON + ARMS[arm]
    control = random_mask_control(seed) if arm.startswith("random") else contextlib.nullcontext()
    with control:
        summary = E.train_run(E.DEMO / "recipe.yaml", overrides)
        targets = trained_targets(out)
    numbers = E.evaluate_run(out, E.eval_caps(probes=32))  # as its measured rows
    return {"arm": arm, "seed": seed, **numbers, **targets, "train_seconds": summary["wall_seconds"],
            "transforms": summary["data"].get("transforms")}


def summarize(rows: "E.Rows", args) -> None:
    agg = E.aggregate(rows.rows, METRICS)
    table = E.markdown_table(
        ["targets", "key-fact recall", "ROUGE-L", "test ppl", "reference ppl change", "general QA change",
         "target ppl (base)", "masked"],
        [[arm, E.fmt(a["key_fact_recall"], pct=True, digits=1), E.fmt(a["rouge_l"], digits=3), E.fmt(a["test_ppl"]),
          E.fmt(a["reference_ppl_change"], pct=True, digits=1), E.fmt(a["general_accuracy_change"], pct=True, digits=1),
          E.fmt(a["target_ppl"]), E.fmt(a["masked_share"], pct=True, digits=0)] for arm, a in agg.items()])
    E.write_result(NAME, {"command": E.command(NAME, rows, args), "seeds": sorted({r["seed"] for r in rows.rows}),
                          "train_size": args.train_size, "arms": ARMS, "common": COMMON,
                          "summary": agg, "table": table, "rows": rows.rows})
    plot(agg)
    print(table)


def plot(agg: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(agg)
    for ax, (key, label) in zip(axes, [("key_fact_recall", "held-out key-fact recall (%)"),
                                       ("reference_ppl_change", "general-text perplexity change (%)")]):
        vals = [100 * (agg[n][key]["mean"] if agg[n][key] else 0) for n in names]
        errs = [100 * ((agg[n][key] or {}).get("std") or 0) for n in names]
        ax.barh(names, vals, xerr=errs, color=[f"C{i}" for i in range(len(names))])
        ax.set_xlabel(label)
        ax.invert_yaxis()
    axes[1].set_yticklabels([])
    fig.suptitle("Training targets: task quality and forgetting")
    fig.tight_layout()
    fig.savefig(E.RESULTS / f"{NAME}.png", dpi=110)


def main() -> None:
    E.experiment_main(__doc__, NAME, ARMS, run_arm, summarize)


if __name__ == "__main__":
    main()
