"""Issue 19 item 6: is a first full `smalltune evaluate` no slower than the training it evaluates?

Not a test: a measurement to run by hand on a quiet machine and record in benchmarks/README.md. For each training
precision arm (``auto``: what the demo recipe does; ``fp32``) it trains the demo recipe, then evaluates the run cold
(a new answer-cache folder, so the base model's answers and losses are computed as on a first run) in each asked
evaluation precision (``auto`` = the training's, the default; ``fp32``), then warm (``--warm``: the same evaluation
again with that folder, the base model's outputs read from disk as every later evaluation of a run on the same data
and base model reads them). Each is its own ``smalltune`` process, timed
whole, as a user runs them; one row per (training arm, evaluation precision) goes to
``results/eval_vs_train.jsonl`` with the machine and commit, so an interrupted measurement resumes where it stopped
(rows of this commit on this CPU are kept) and another machine's rows sit beside this one's.

    python benchmarks/eval_vs_train.py                                   # auto and fp32 training, auto evaluation
    python benchmarks/eval_vs_train.py --train auto --eval auto fp32     # the default run, evaluated both ways
    python benchmarks/eval_vs_train.py --method lora --train auto        # the demo's vanilla arm (a tutorial's LoRA)
    python benchmarks/eval_vs_train.py --warm                            # each evaluation cold, then warm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _evidence import RESULTS, ROOT, WORK, commit, machine

RECIPE = ROOT / "examples" / "dental" / "recipe.yaml"
OUT = RESULTS / "eval_vs_train.jsonl"
SMALLTUNE = [sys.executable, "-m", "smalltune"]


def timed(cmd: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{done.stderr[-2000:]}")
    return round(time.perf_counter() - started, 2)


def train(arm: str, method: str) -> tuple[Path, dict]:
    """A fresh run of the demo recipe (``full``: as it is; ``lora``: with the demo's vanilla-arm overrides) in
    ``arm``'s precision: its folder and what its training recorded."""
    from smalltune.demo import VANILLA_OVERRIDES

    run = WORK / "eval-vs-train" / f"{method}-{arm}"
    shutil.rmtree(run, ignore_errors=True)
    overrides = VANILLA_OVERRIDES if method == "lora" else []
    seconds = timed([*SMALLTUNE, "train", "--no-progress", str(RECIPE), f"output_dir={run}", f"train.precision={arm}",
                     *overrides])
    from smalltune.train.precision import recorded_precision

    summary = json.loads((run / "train_summary.json").read_text())
    precision = recorded_precision(run)
    return run, {"train_seconds": seconds, "steps": summary["steps"], "stopped": summary["stopped"],
                 "train_precision": precision.get("precision"), "precision_reason": precision.get("reason")}


def evaluate(run: Path, precision: str, warm: bool) -> dict:
    """A cold full evaluation of ``run`` in ``precision`` (and with ``warm`` the same again, reading the base model's
    outputs the cold one left on disk): process seconds and where eval.json says the time went."""
    cache = WORK / "eval-vs-train" / f"answers-{run.name}-{precision}"
    shutil.rmtree(cache, ignore_errors=True)
    row = {}
    for kind in ("cold", "warm") if warm else ("cold",):
        seconds = timed([*SMALLTUNE, "evaluate", str(run), "--no-progress", "--precision", precision],
                        {"SMALLTUNE_ANSWER_CACHE": str(cache)})
        settings = json.loads((run / "eval.json").read_text())["settings"]
        prefix = "" if kind == "cold" else "warm_"
        row |= {f"{prefix}eval_seconds": seconds, "eval_precision": settings["generation"]["precision"],
                "places": settings["generation"]["batch_size"],
                f"{prefix}phase_seconds": settings["phase_seconds"]}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", nargs="+", default=["auto", "fp32"], choices=["auto", "fp32", "bf16"])
    p.add_argument("--eval", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16"], dest="evals")
    p.add_argument("--method", default="full", choices=["full", "lora"])
    p.add_argument("--warm", action="store_true", help="after each cold evaluation, time it again warm")
    args = p.parse_args()
    where, at = machine(), commit()
    rows = [json.loads(line) for line in OUT.read_text().splitlines()] if OUT.exists() else []
    done = {(r["arm"], r["eval"]) for r in rows if r["commit"] == at and r["machine"]["cpu"] == where["cpu"]
            and r.get("method", "full") == args.method and (not args.warm or "warm_eval_seconds" in r)}
    for arm in args.train:
        wanted = [e for e in args.evals if (arm, e) not in done]
        if not wanted:
            continue
        run, trained = train(arm, args.method)
        measured = set()  # precisions this run was evaluated in: fp32 asked after an auto that resolved to fp32 is a repeat
        for precision in wanted:
            if precision in measured:
                continue
            row = {"arm": arm, "method": args.method, "eval": precision, "commit": at, "machine": where, **trained,
                   **evaluate(run, precision, args.warm)}
            measured.add(row["eval_precision"])
            for prefix in ("", "warm_"):  # the cold evaluation's ratio, and the warm one's where it was timed
                if f"{prefix}eval_seconds" in row:
                    row[f"{prefix}eval_over_train"] = round(row[f"{prefix}eval_seconds"] / row["train_seconds"], 3)
            OUT.parent.mkdir(parents=True, exist_ok=True)
            with OUT.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k not in ("machine", "phase_seconds", "warm_phase_seconds")}),
                  flush=True)


if __name__ == "__main__":
    main()
