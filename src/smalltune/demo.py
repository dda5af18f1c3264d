"""`smalltune demo`: the whole pipeline (audit -> train -> evaluate -> report) on the dental-clinic demo.

The demo trains the built-in model on CPU in minutes, evaluates base and fine-tuned model on the
same held-out questions (worded differently from anything in training), prints the answers side
by side and ends with the path of the report page.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SmalltuneError
from .recipe import Recipe, load_recipe

# --quick: a real adapter on a capped budget (≤ 4 minutes on a 2-core CPU from a warm model cache).
QUICK_OVERRIDES = ["train.max_steps=24", "eval.every_steps=8"]


def demo_data_dir() -> Path:
    """The demo data folder: $SMALLTUNE_DEMO_DATA, else examples/dental in this checkout."""
    env = os.environ.get("SMALLTUNE_DEMO_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "examples" / "dental")
    for c in candidates:
        if (c / "recipe.yaml").exists():
            return c
    raise SmalltuneError("demo data not found: run from a smalltune checkout or set SMALLTUNE_DEMO_DATA "
                         "to a folder with recipe.yaml (see examples/dental)")


def demo_recipe(quick: bool = False, output_dir: str | None = None, overrides: list[str] = ()) -> Recipe:
    extra = list(QUICK_OVERRIDES if quick else []) + list(overrides)
    if output_dir:
        extra.append(f"output_dir={output_dir}")
    return load_recipe(demo_data_dir() / "recipe.yaml", extra)


def answer_pair(question, reference, base, finetuned, key_facts, category=None):
    """One base-vs-fine-tuned answer pair, as the report shows it (same type, same fact matching)."""
    from .schema import Sample

    return Sample(id="", category=category or "", question=question, reference=reference, base=base,
                  finetuned=finetuned, key_facts=list(key_facts))


def compare_answers(run_dir: str | Path, n: int = 6) -> list:
    """Base and fine-tuned answers to the first ``n`` test questions (one per category first)."""
    import torch

    from .data import load_examples
    from .generate import GenerationSettings, generate
    from .train import load_trained

    model, tok, recipe = load_trained(run_dir)
    if not recipe.data.test:
        raise SmalltuneError("the demo recipe has no data.test file to ask questions from")
    picked = round_robin_by_category(load_examples(recipe.data.test), n)
    convs = [ex.prompt(recipe.data.system_prompt) for ex in picked]
    settings = GenerationSettings(max_new_tokens=80)
    tuned = generate(model, tok, convs, settings)
    with model.disable_adapter() if hasattr(model, "disable_adapter") else torch.no_grad():
        base = generate(model, tok, convs, settings)
    return [answer_pair(ex.prompt_text, ex.target, b, f, list(ex.meta.get("key_facts", [])))
            for ex, b, f in zip(picked, base, tuned)]


def round_robin_by_category(examples: list, n: int) -> list:
    """Up to ``n`` examples, taking one per category in turn so every topic shows."""
    by_cat: dict = {}
    for ex in examples:
        by_cat.setdefault(ex.category, []).append(ex)
    queues = list(by_cat.values())
    picked: list = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return picked


def comparisons_from_eval(run_dir: str | Path, n: int = 6) -> list:
    """The first ``n`` answer pairs the evaluation stored in eval.json (one per category first)."""
    from .rundir import RunDir
    from .schema import read_eval

    path = RunDir(Path(run_dir)).eval
    return round_robin_by_category(read_eval(path).samples if path.exists() else [], n)


# The vanilla arm: what a user copies from a fine-tuning tutorial -- LoRA r=8 (alpha 16, dropout 0.05) on
# every linear layer at lr 2e-4 for 3 epochs with transformers.Trainer's defaults (linear decay, no warmup,
# no weight decay), the final weights, no validation-based stopping or selection, no guards: experiment 1's
# "lora lr2e-4 3ep" arm (benchmarks/README.md: 6.9% key-fact recall where smalltune's v4 plan reached 20.8%).
VANILLA_OVERRIDES = ["method.name=lora", "method.r=8", "method.alpha=16", "method.dropout=0.05", "train.lr=2e-4",
                     "train.epochs=3", "train.scheduler=linear", "train.warmup_ratio=0", "train.weight_decay=0",
                     "guards.enabled=false", "early_stopping.enabled=false", "early_stopping.min_delta=0",
                     "regularize.replay_ratio=0", "eval.every_steps=100000"]  # one evaluation: the final weights


def run_demo(quick: bool = False, output_dir: str | None = None, questions: int = 6, overrides: list[str] = (),
             vanilla: bool = True):
    """Run the pipeline on the demo data with smalltune's recipe (and a vanilla arm on the same data), print
    base vs fine-tuned answers, and put both runs on one learning-vs-forgetting page.

    Returns (report path of smalltune's run, comparisons); the page is ``<output>/compare.html``.
    """
    import datetime as _dt

    from . import console
    from .pipeline import run

    root = Path(output_dir or f"runs/demo-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    recipe = demo_recipe(quick, str(root / "smalltune"), overrides)
    report_path = run(recipe, quick=True)  # the demo always evaluates with the quick caps (issue: demo <= 15 min)
    comparisons = comparisons_from_eval(report_path.parent, questions)
    if not comparisons:  # the evaluation had no task probe: ask the questions here
        comparisons = compare_answers(report_path.parent, questions)
    console.comparison_table(comparisons)
    if vanilla:
        console.info("vanilla arm: a tutorial's LoRA (r=8, lr 2e-4, 3 epochs, final weights, no guards)")
        run(demo_recipe(quick, str(root / "vanilla"), [*VANILLA_OVERRIDES, *overrides]), quick=True)
        from .use import compare

        page = compare([root / "smalltune", root / "vanilla"], output=root / "compare.html")
        console.info(f"learning vs forgetting, smalltune vs vanilla: {page}")
    return report_path, comparisons
