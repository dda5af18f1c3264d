"""Does generated data help? Original data vs original + paraphrases vs original + synthetic pairs (issue 16).

Three arms train the demo recipe (``smalltune plan``'s v3: full fine-tuning at 1e-4, 3 epochs, linear decay,
early stopping, least-forgetting selection) on the fixed 100-example demo subset (``_evidence.py``):

* ``original``: the subset as it is;
* ``+ paraphrase``: the subset plus ``smalltune augment --method paraphrase --per-example 2`` of it
  (variants too close to a validation or test prompt are dropped by the leakage filter);
* ``+ synth``: the subset plus ``smalltune synth examples/dental/facts.md`` (answers in the voice of
  the recipe's system prompt, grounded in the fact sheet's passages).

Generation runs once per arm with the generator named by ``--generator`` (default: the built-in
135M model; pass a larger local model folder to see what a better generator changes) and is cached;
its acceptance counts per reason are part of the result. Each (arm, seed) then trains and is
evaluated base vs fine-tuned: held-out key-fact recall on the 72 test questions (task), quality on
their listed rephrasings and perturbations (robustness), verbatim/near-verbatim answers to training
prompts (memorization), general-text perplexity change and general-QA accuracy change (forgetting).
The augmented arms have more examples, so they also take more steps per epoch: the step counts are
in the rows, and a gain that only tracks steps is not a gain of the data.

    .venv/bin/python benchmarks/augmentation.py --seeds 0 1 2              # run (resumes)
    .venv/bin/python benchmarks/augmentation.py --seeds 0 1 2 --generator /path/to/larger-model
    .venv/bin/python benchmarks/augmentation.py --summarize                # table only
    SMALLTUNE_BENCH_MAX_STEPS=2 .venv/bin/python benchmarks/augmentation.py --seeds 0 --train-size 8   # plumbing smoke
"""

from __future__ import annotations

import json
from pathlib import Path

import _evidence as E

ARMS = {"original": None, "+ paraphrase": "paraphrase", "+ synth": "synth"}
METRICS = ["key_fact_recall", "rephrased_quality", "perturbed_quality", "robustness_drop", "memorized_rate",
           "verbatim_rate", "reference_ppl_change", "general_accuracy_change", "train_examples", "steps",
           "train_seconds"]
NAME = "augmentation"
SYSTEM = "You are the receptionist at Brightside Dental."
GENERATOR = "smollm2-135m-instruct"  # --generator MODEL: a built-in name, model folder or hub id


def generated_file(kind: str, train_file: Path, generator: str) -> tuple[Path, dict]:
    """The arm's training file (original + accepted generated examples) and the generation counts, cached."""
    from smalltune.augment import augment, synth

    tag = Path(generator).name or generator
    folder = E.WORK / NAME / "data" / f"{train_file.stem}-{tag}"
    path = folder / f"train+{kind}.jsonl"
    counts = folder / f"{kind}.counts.json"
    if path.exists() and counts.exists():
        return path, json.loads(counts.read_text())
    held = {"validation": str(E.DEMO / "validation.jsonl"), "test": str(E.DEMO / "test.jsonl")}
    tokens = 16 if E.MAX_STEPS else None  # smoke: short generations
    if kind == "paraphrase":
        result = augment(train_file, "paraphrase", model=generator, per_example=2, output=folder / "paraphrase.jsonl",
                         progress=False, **held, **({"max_new_tokens": tokens} if tokens else {}))
    else:
        docs = [E.DEMO / "facts.md"]
        result = synth(docs, model=generator, per_passage=2, output=folder / "synth.jsonl", system_prompt=SYSTEM,
                       run_audit=False, progress=False, **held, **({"max_new_tokens": tokens} if tokens else {}))
    summary = {k: result.summary[k] for k in ("generator", "candidates", "accepted", "acceptance_rate", "rejected")}
    E.atomic_text(path, train_file.read_text().rstrip("\n") + "\n"
                  + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records))
    E.atomic_text(counts, json.dumps(summary, indent=1))
    return path, summary


# Seed 0 ran when the demo recipe was the v3 plan; the demo recipe is v4 since (5 epochs, accuracy selection, a
# forgetting stop). These keys put v3 back, so every seed trains the same recipe.
V3_DEMO = ["train.epochs=3", "train.warmup_ratio=0.1", "eval.every_steps=8", "guards.selection=auto",
           "guards.forgetting_action=warn"]


def run_arm(arm: str, seed: int, train_file) -> dict:
    kind = ARMS[arm]
    data, generation = (train_file, None) if kind is None else generated_file(kind, train_file, GENERATOR)
    out = E.WORK / NAME / f"{arm.replace('+ ', 'plus_')}-s{seed}"
    summary = E.train_run(E.DEMO / "recipe.yaml", E.data_overrides(data, seed, out) + V3_DEMO)
    numbers = E.evaluate_run(out, E.eval_caps(), probes=("task", "memorization", "forgetting", "robustness"))
    return {"arm": arm, "seed": seed, **numbers, "train_examples": sum(1 for _ in open(data)),
            "steps": summary["steps"], "train_seconds": summary["wall_seconds"], "generation": generation}


def summarize(rows: "E.Rows", args) -> None:
    agg = E.aggregate(rows.rows, METRICS)
    pct = {"key_fact_recall", "rephrased_quality", "perturbed_quality", "robustness_drop", "memorized_rate",
           "verbatim_rate", "reference_ppl_change", "general_accuracy_change"}
    table = E.markdown_table(["arm", *METRICS], [[arm, *(E.fmt(a[m], pct=m in pct, digits=1 if m in pct else 0)
                                                        for m in METRICS)] for arm, a in agg.items()])
    generation = {r["arm"]: r["generation"] for r in rows.rows if r.get("generation")}
    gen_table = E.markdown_table(["arm", "generator", "candidates", "accepted", "rejected by reason"],
                                 [[arm, g["generator"], str(g["candidates"]), f"{g['accepted']} ({g['acceptance_rate']:.0%})",
                                   ", ".join(f"{k} {v}" for k, v in g["rejected"].items())]
                                  for arm, g in generation.items()])
    command = E.command("augmentation", rows, args)
    E.write_result(NAME, {"command": command + (f" --generator {GENERATOR}" if NAME != "augmentation" else ""),
                          "seeds": sorted({r["seed"] for r in rows.rows}), "train_size": args.train_size,
                          "generator": GENERATOR, "summary": agg, "generation": generation,
                          "table": table, "generation_table": gen_table, "rows": rows.rows})
    print(table)
    print()
    print(gen_table)


def main() -> None:
    import sys

    global GENERATOR, NAME
    if "--generator" in sys.argv:  # the shared command line has no such option: take it off before it parses
        i = sys.argv.index("--generator")
        GENERATOR = sys.argv[i + 1]
        del sys.argv[i: i + 2]
        NAME = f"augmentation-{Path(GENERATOR).name}"  # its own rows and result file
    E.experiment_main(__doc__, NAME, ARMS, run_arm, summarize)


if __name__ == "__main__":
    main()
