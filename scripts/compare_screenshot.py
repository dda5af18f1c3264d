#!/usr/bin/env python3
"""Make docs/compare.png from measured results: the seven arms of benchmarks/vanilla_vs_smalltune.py.

    python scripts/compare_screenshot.py [--out docs/compare.png]

The benchmark does not keep its run directories (they are large), but it records each arm's measured
numbers in benchmarks/results/vanilla_vs_smalltune.jsonl. This script turns the seed-0 rows back into
run directories (the arm's resolved recipe; train_summary.json and eval.json holding the measured
numbers, with the CIs the benchmark kept), runs `smalltune compare` on them and renders the page in
headless Chromium with scripts/check_compare.py. Nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "vanilla_vs_smalltune.jsonl"


def metric(base, tuned, ci=None, n=None) -> dict:
    delta = tuned - base if base is not None and tuned is not None else None
    return {"base": base, "finetuned": tuned, "delta": delta, "ci": ci or [None, None], "n": n}


def write_run(path: Path, row: dict, recipe) -> None:
    path.mkdir(parents=True)
    recipe.name, recipe.output_dir = row["arm"], str(path)
    recipe.save(path / "recipe.yaml")
    (path / "train_summary.json").write_text(json.dumps({
        "stopped": row["stopped"], "steps": row["steps"], "epochs": row["epochs_run"], "selection": row["selection"],
        "wall_seconds": row["train_seconds"]}))
    probes = {
        "task": {"key_fact_recall": metric(row["key_fact_recall_base"], row["key_fact_recall"]),
                 "rouge_l": metric(None, row["rouge_l"])},
        "forgetting": {"reference_ppl_relative_change": {"value": row["reference_ppl_change"],
                                                         "ci": row.get("reference_ppl_change_ci"), "n": None},
                       "general_accuracy": metric(row["general_accuracy_base"], row["general_accuracy"])},
        "memorization": {"memorized_rate": metric(None, row["memorized_rate"])},
    }
    (path / "eval.json").write_text(json.dumps({"provenance": {}, "settings": {"source": str(RESULTS.relative_to(ROOT))},
                                                "probes": probes, "verdicts": [], "samples": []}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "compare.png"), help="screenshot path (default docs/compare.png)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smalltune-compare-"))
    os.environ["SMALLTUNE_BENCH_WORK"] = str(work / "bench")  # where the benchmark helpers put the data subset
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _evidence as E  # noqa: E402
    import vanilla_vs_smalltune as V  # noqa: E402

    from smalltune import load_recipe
    from smalltune.use.compare import compare

    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    train_file = E.demo_subset(100)
    runs = []
    for row in (r for r in rows if r["seed"] == 0):
        out = work / "runs" / row["arm"].replace(" ", "_").replace("+", "and")
        common = E.data_overrides(train_file, 0, out) + ["data.max_length=192", f"data.system_prompt={V.SYSTEM}"]
        if row["arm"] == V.SMALLTUNE:
            recipe = load_recipe(V.planned_recipe(train_file), common)
        else:
            lora = ["method.r=8", "method.alpha=16", "method.dropout=0.05"] if "lora" in row["arm"] else []
            recipe = load_recipe(E.DEMO / "recipe.yaml", common + E.VANILLA + V.ARMS[row["arm"]] + lora)
        write_run(out, row, recipe)
        runs.append(out)
    page = compare(runs, output=work / "compare.html")
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_compare.py"), str(page), "--screenshot",
                            args.out, "--height", "1250"])
    print(page)
    return check.returncode


if __name__ == "__main__":
    sys.exit(main())
