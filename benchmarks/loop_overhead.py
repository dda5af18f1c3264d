"""Issue 19 item 1: what a training step costs beyond its arithmetic: the loop's own per-step work.

``step_profile.py`` times bare steps (data, forward, backward, optimizer). This runs the real loop,
``smalltune.train`` (train/loop.py), on the demo recipe as planned (guards on, the recipe's precision) and splits each
optimizer step's wall time into: forward and backward (``PlainStep``), gradient clipping (``clip_grad_norm_``), the
optimizer's step and ``zero_grad``, the guards' per-step work (``check_step`` and ``metrics``), the step's record
(one line of metrics.jsonl, flushed and fsynced), the progress bar, and the rest (data loading, accelerate's
``accumulate``, the scheduler, the loop's own Python). Timed by wrapping those functions with ``perf_counter``, not by
a profiler, whose per-call cost would inflate exactly the Python being measured. A step's wall time runs from one
training record to the next; no validation pass falls inside the timed steps (``eval.every_steps`` is set past them).

    .venv/bin/python benchmarks/loop_overhead.py --steps 24            # the demo recipe as planned
    .venv/bin/python benchmarks/loop_overhead.py --steps 24 --precision fp32
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager

from _evidence import DEMO, WORK, apply_cli_memory, memory_as_the_cli, timer, write_result

PARTS = ("forward+backward", "clip", "optimizer", "guards", "record", "bar")
SPENT: dict[str, float] = defaultdict(float)  # seconds per part since the process started
MARKS: list[tuple[float, dict]] = []  # (time, SPENT so far) at the start of each training record


@contextmanager
def instrumented():
    """Every part of :data:`PARTS` timed for the duration; a training record marks a step's end."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from tqdm.std import tqdm

    from smalltune.rundir import RunDir
    from smalltune.train.plugins import PluginSet
    from smalltune.train.regularize.sam import PlainStep

    patched = [(PlainStep, "__call__", "forward+backward"), (Accelerator, "clip_grad_norm_", "clip"),
               (AcceleratedOptimizer, "step", "optimizer"), (AcceleratedOptimizer, "zero_grad", "optimizer"),
               (PluginSet, "check_step", "guards"), (PluginSet, "metrics", "guards"),
               (tqdm, "update", "bar"), (tqdm, "set_postfix_str", "bar")]
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in [*patched, (RunDir, "log", "record")]]
    for owner, name, part in patched:
        setattr(owner, name, timer(SPENT, part, getattr(owner, name)))
    log = timer(SPENT, "record", RunDir.log)

    def marked(self, record):
        if (record.get("type") if isinstance(record, dict) else None) == "train":
            MARKS.append((time.perf_counter(), dict(SPENT)))
        return log(self, record)

    RunDir.log = marked
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def per_step(skip: int) -> list[dict]:
    """Each timed step's wall time and parts (the first ``skip`` steps left out: the heap grows in them)."""
    steps = []
    for (t0, before), (t1, after) in list(zip(MARKS, MARKS[1:]))[skip:]:
        row = {part: after.get(part, 0.0) - before.get(part, 0.0) for part in PARTS}
        row["wall"] = t1 - t0
        row["rest"] = row["wall"] - sum(row[p] for p in PARTS)
        steps.append(row)
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24, help="optimizer steps to run (the first --skip not counted)")
    ap.add_argument("--skip", type=int, default=4)
    ap.add_argument("--precision", default=None, help="train.precision (default: the recipe's)")
    memory_as_the_cli(ap)
    args = ap.parse_args()
    kept = apply_cli_memory(args)
    from smalltune import load_recipe
    from smalltune.train.loop import train

    out = WORK / "loop-overhead"
    shutil.rmtree(out, ignore_errors=True)
    overrides = [f"output_dir={out}", f"train.max_steps={args.steps + 1}", f"eval.every_steps={args.steps + 1}"]
    if args.precision:
        overrides.append(f"train.precision={args.precision}")
    recipe = load_recipe(DEMO / "recipe.yaml", overrides)
    with instrumented():
        result = train(recipe, progress=True)
    steps = per_step(args.skip)
    median = {k: round(statistics.median(s[k] for s in steps), 4) for k in ("wall", *PARTS, "rest")}
    mean = {k: round(statistics.fmean(s[k] for s in steps), 4) for k in ("wall", *PARTS, "rest")}
    share = {k: round(mean[k] / mean["wall"], 4) for k in (*PARTS, "rest")}
    from smalltune.train.precision import recorded_precision

    payload = {"command": "benchmarks/loop_overhead.py " + " ".join(
                   f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False)),
               "freed_memory_kept": kept, "precision": recorded_precision(out).get("precision"),
               "steps_timed": len(steps), "median_seconds": median, "mean_seconds": mean, "share_of_mean_step": share,
               "steps": [{k: round(v, 4) for k, v in s.items()} for s in steps], "stopped": result.stopped}
    name = f"loop_overhead-{payload['precision']}"
    print(f"{len(steps)} steps, {payload['precision']}; mean seconds per step (share):")
    for k in ("wall", *PARTS, "rest"):
        print(f"  {k:18s} {mean[k]:8.4f}  {'' if k == 'wall' else f'{share[k]:6.1%}'}  median {median[k]:.4f}")
    print(write_result(name, payload))


if __name__ == "__main__":
    main()
