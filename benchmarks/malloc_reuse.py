"""Freed memory kept by the process (``smalltune.memory.keep_freed_memory``) against glibc's default, which maps every
large tensor anew: full fine-tuning steps, the forgetting guard's pass and the validation pass of the demo recipe.

Not a test: a measurement to run by hand on a quiet machine. glibc's settings are per process, so each arm runs in
its own child process (``--child ARM``), the arms alternating for ``--pairs`` pairs: the built-in model prepared as
training prepares it (``_evidence.DemoEvaluation``: bf16 autocast, attention in fp32), ``STEPS`` training steps
(forward, backward, fused AdamW) over the demo's first length-grouped batches, then the guard's pass and the
validation pass twice each; the first step is a warm-up and not counted. Each child reports its seconds, its losses
(the arms must compute the same numbers) and its peak resident memory. Rows: ``results/malloc_reuse.jsonl`` (an
interrupted measurement resumes: rows of this commit, CPU and mode are kept); summary:
``results/malloc_reuse.json`` with the machine and commit.

    python benchmarks/malloc_reuse.py --pairs 5
    python benchmarks/malloc_reuse.py --whole --pairs 2    # the demo recipe's whole training per arm

``--whole`` trains the demo recipe (what `smalltune plan` writes) start to end in each child instead, as `smalltune
train` runs it: rows ``results/malloc_reuse-whole.jsonl`` with the loop's seconds, the stop, the chosen step and
the peak resident memory; summary ``results/malloc_reuse-whole.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import _evidence as E

STEPS = 12
ARMS = ("default", "kept")


def steps() -> dict:
    import torch

    from smalltune.data.batching import batch_indices, collate
    from smalltune.train.loss import batch_logits, causal_lm_loss

    ev = E.DemoEvaluation("bf16")
    model, t = ev.model, ev.recipe.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    order = batch_indices([len(x) for x in ev.train], t.batch_size, t.seed, True)  # as training batches them
    seconds, losses = [], []
    for idx in order[:STEPS]:
        batch = collate([ev.train[i] for i in idx], ev.tok.pad_token_id)
        t0 = time.perf_counter()
        loss = causal_lm_loss(*batch_logits(model, batch, True))  # under the prepared model's own autocast
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - t0)
        losses.append(loss.item())
    passes = {"guard pass": ev.guard_pass, "validation pass": ev.validation_pass}
    timed, numbers = {}, {}
    for name, fn in passes.items():
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            numbers[name] = fn()["eval_loss"]
            runs.append(time.perf_counter() - t0)
        timed[name] = round(min(runs), 3)
    return {"steps_seconds": round(sum(seconds[1:]), 2), "step_median": round(statistics.median(seconds[1:]), 3),
            **timed, "losses": losses, "numbers": numbers}


def whole() -> dict:
    import tempfile

    from smalltune import load_recipe, train

    with tempfile.TemporaryDirectory() as tmp:
        result = train(load_recipe(E.ROOT / "examples" / "dental" / "recipe.yaml", [f"output_dir={tmp}/run"]),
                       progress=False, verbose=False)
    return {"loop_seconds": result.wall_seconds, "steps": result.steps, "stopped": result.stopped,
            "best_step": result.best_step, "numbers": {"best_metrics": result.best_metrics}}


def child(arm: str, measure) -> dict:
    """One arm in this process: glibc's setting first, then ``measure()``, and the process's peak memory."""
    from smalltune.memory import keep_freed_memory

    applied = keep_freed_memory() if arm == "kept" else False
    return {"applied": applied, **measure(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--child", choices=ARMS)
    p.add_argument("--whole", action="store_true", help="the demo recipe's whole training per arm")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, whole if args.whole else steps)))
        return
    name = "malloc_reuse-whole" if args.whole else "malloc_reuse"

    def measure(arm: str, pair: int) -> dict:
        done = subprocess.run([sys.executable, __file__, "--child", arm] + ["--whole"] * args.whole,
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    rows = E.alternate_pairs(E.RESULTS / f"{name}.jsonl", ARMS, args.pairs, measure, {"whole": args.whole})
    parts = ("loop_seconds", "peak_rss_mb") if args.whole else ("steps_seconds", "guard pass", "validation pass",
                                                                 "peak_rss_mb")
    ratio = {part: [round(k[part] / d[part], 3) for d, k in
                    zip((r for r in rows if r["arm"] == "default"), (r for r in rows if r["arm"] == "kept"))]
             for part in parts}
    out = {"commit": E.commit(), "pairs": args.pairs, "whole": args.whole, "steps": None if args.whole else STEPS,
           "rows": rows,
           "kept_vs_default_per_pair": ratio,
           "kept_vs_default_median": {part: statistics.median(r) for part, r in ratio.items()},
           "same_numbers": len({json.dumps([r.get("losses"), r["numbers"]]) for r in rows}) == 1,
           "command": f"python benchmarks/malloc_reuse.py{' --whole' * args.whole} --pairs {args.pairs}"}
    print(E.write_result(name, out))
    print({k: out[k] for k in ("kept_vs_default_per_pair", "kept_vs_default_median", "same_numbers")})


if __name__ == "__main__":
    main()
