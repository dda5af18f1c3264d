"""Issue 19: what writing a best-model snapshot to disk at every new best costs a training, against keeping it in
host memory until a --resume checkpoint needs it (``train/guards/snapshots.py``).

Not a test: a measurement to run by hand on a quiet machine and record in benchmarks/README.md. Two arms train the
demo recipe (what `smalltune plan` writes; a full fine-tune of the built-in model, 540 MB a snapshot) in this
process, alternating so drift hits both alike: ``memory`` (the default: one snapshot file in the whole run, best/ at
the end, when no --resume checkpoint falls in it) and ``disk`` (``HOST_SHARE = 0``: every snapshot is a file at once,
the behaviour before). One row per (arm, pair) goes to ``results/snapshots_memory.jsonl`` with the machine and
commit (an interrupted measurement resumes: rows of this commit on this CPU are kept): the loop's seconds, the
seconds spent keeping snapshots (``keep_best``, timed as in guards_overhead.py), the steps and chosen step, and a
hash of the chosen weights, which must be the same in both arms (where the snapshot lives changes no number).

    python benchmarks/snapshots_memory.py --pairs 2               # the whole demo training, ~4 x 3.5 min
    python benchmarks/snapshots_memory.py --pairs 1 --max-steps 20
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil

from _evidence import RESULTS, ROOT, WORK, alternate_pairs
from guards_overhead import install_timers

RECIPE = ROOT / "examples" / "dental" / "recipe.yaml"
OUT = RESULTS / "snapshots_memory.jsonl"


def one_run(arm: str, pair: int, max_steps: int | None, spent: dict) -> dict:
    from smalltune import load_recipe, train
    from smalltune.train.guards import snapshots

    run = WORK / "snapshots-memory" / f"{arm}-{pair}"
    shutil.rmtree(run, ignore_errors=True)
    snapshots.HOST_SHARE = 0.25 if arm == "memory" else 0.0
    overrides = [f"output_dir={run}"] + ([f"train.max_steps={max_steps}"] if max_steps else [])
    before = dict(spent)
    result = train(load_recipe(RECIPE, overrides), progress=False)
    # the published artifact holds the chosen weights (best/ goes once it is written; before stop 41 it stayed)
    weights = b"".join(f.read_bytes() for f in sorted((run / "model").glob("*.safetensors")))
    return {"loop_seconds": result.wall_seconds,
            "keep_best_seconds": round(spent["keep_best"] - before["keep_best"], 2),
            "base_validation_seconds": round(spent["base_validation"] - before["base_validation"], 2),
            "steps": result.steps, "evaluations": (run / "metrics.jsonl").read_text().count('"type": "eval"'),
            "best_step": result.best_step, "best_sha256": hashlib.sha256(weights).hexdigest()[:16]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help="cap each training (default: the recipe's whole run)")
    args = p.parse_args()
    spent = install_timers()
    os.environ.setdefault("SMALLTUNE_ANSWER_CACHE", str(WORK / "snapshots-memory" / "base-outputs"))
    alternate_pairs(OUT, ("memory", "disk"), args.pairs, lambda arm, pair: one_run(arm, pair, args.max_steps, spent),
                    {"max_steps": args.max_steps})


if __name__ == "__main__":
    main()
