"""``train.compile`` on and off: whole-run wall time and training tokens/s, with a cold and a warm compiler cache.

One short run of ``speed_vs_trl.py``'s smalltune side (the demo data, its hyperparameters, 12 steps by default) per
configuration, each in a process of its own so nothing compiled stays in memory between them: eager, compiled with an
empty inductor cache (``TORCHINDUCTOR_CACHE_DIR`` pointed at a new folder), compiled again with that cache filled, and
eager again (load drift shows as the gap between the two eager runs). ``wall_s`` is the whole call (model loading, the
base model's validation pass, the steps, the final evaluation); ``tokens_per_s`` leaves out the first step, as
speed_vs_trl does; ``first_step_s`` is the time to the end of the first step, where most of the compiling happens
(the evaluation graph is compiled before it, in the base validation pass, and counts in ``wall_s`` only).

    .venv/bin/python benchmarks/compile_speed.py --methods lora full --steps 12   # appends to results/compile_speed.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _evidence import RESULTS, machine

RUNS = [("eager", False, "own"), ("compiled, cold cache", True, "fresh"), ("compiled, warm cache", True, "shared"),
        ("eager", False, "own")]


def child(method: str, steps: int, compiled: bool) -> None:
    """One run in this process; prints its result as the last line."""
    import speed_vs_trl

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        r = speed_vs_trl.run_smalltune(method, steps, Path(out) / "run", "fp32", compiled)
    print(json.dumps({"wall_s": round(time.perf_counter() - t0, 1), "tokens_per_s": round(r["tokens_per_s"], 1),
                      "first_step_s": r["first_step_s"], "validation_loss": r["validation_loss"]}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--child", nargs=3, metavar=("METHOD", "STEPS", "COMPILED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2] == "1")
    where = machine()
    out = RESULTS / "compile_speed.jsonl"
    with tempfile.TemporaryDirectory(prefix="inductor-") as caches:
        for method in args.methods:
            shared = Path(caches) / f"{method}-shared"
            for i, (label, compiled, cache) in enumerate(RUNS):
                folder = shared if cache != "own" else Path(caches) / f"{method}-{i}"
                if cache == "fresh" and folder.exists():
                    raise SystemExit(f"{folder}: the cold-cache run needs an empty cache folder")
                env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(folder))
                done = subprocess.run([sys.executable, __file__, "--child", method, str(args.steps), str(int(compiled))],
                                      env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{method} {label}: the run failed\n{done.stderr[-2000:]}")
                row = {"method": method, "run": label, "order": i, "steps": args.steps,
                       **json.loads(done.stdout.strip().splitlines()[-1]), "date": time.strftime("%Y-%m-%d"),
                       "cpu": where["cpu"], "threads": where["torch_threads"],
                       "command": f"python benchmarks/compile_speed.py --methods {' '.join(args.methods)} --steps {args.steps}"}
                with out.open("a") as f:  # one row per run: a stopped benchmark keeps what it measured
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
