"""Which training steps are slow, and why: time, page faults and resident memory per step (issue 19).

Not a test: a measurement to run by hand. The demo recipe's full fine-tuning (built by smalltune's own ``setup``,
as ``step_profile.py`` builds it) takes its first ``--batches`` length-grouped batches twice, in this process with
freed memory kept as every ``smalltune`` command keeps it (``--glibc-default``: glibc's default). Each step prints
its seconds, the minor page faults it took (``getrusage``) and the process's resident memory after it; the summary
splits the steps into those that faulted in more than ``--fault-mb`` of new memory and the rest. On a VM, a page
touched for the first time is paid to the host as well as to the guest kernel, so a step that grows the heap costs
more than its arithmetic.

``--hugetlb`` runs the same in a child process with glibc's ``glibc.malloc.hugetlb=1`` tunable (2 MB transparent
huge pages for the heap; tunables are read when a process starts).

    .venv/bin/python benchmarks/heap_growth.py --batches 20
    .venv/bin/python benchmarks/heap_growth.py --batches 20 --hugetlb
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _evidence import DEMO, apply_cli_memory, memory_as_the_cli, write_result

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_mb() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE >> 20


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=20, help="distinct batches, each taken twice")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--fault-mb", type=float, default=64.0, help="a step that faults in more new memory is 'growing'")
    p.add_argument("--hugetlb", action="store_true", help="glibc.malloc.hugetlb=1 (re-runs this in a child)")
    memory_as_the_cli(p)
    args = p.parse_args()
    if args.hugetlb and "glibc.malloc.hugetlb" not in os.environ.get("GLIBC_TUNABLES", ""):
        env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
        sys.exit(subprocess.run([sys.executable, *sys.argv], env=env).returncode)
    kept = apply_cli_memory(args)

    import torch

    from smalltune import load_recipe
    from smalltune.train.loss import batch_logits, causal_lm_loss
    from smalltune.train.setup import Base
    from step_profile import build

    torch.manual_seed(0)
    parts = build(Base.load(load_recipe(DEMO / "recipe.yaml")), [f"train.precision={args.precision}"])
    model, opt = parts.model, parts.optimizer
    model.train()
    batches = [b for _, b in zip(range(args.batches), parts.loader)]
    rows = []
    for i in [*range(len(batches)), *range(len(batches))]:
        batch, before, started = batches[i], faults(), time.perf_counter()
        with parts.accelerator.autocast():
            loss = causal_lm_loss(*batch_logits(model, batch, True))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seconds = round(time.perf_counter() - started, 3)
        rows.append({"batch": i, "shape": list(batch["input_ids"].shape), "seconds": seconds,
                     "fault_mb": round((faults() - before) * PAGE / 2**20, 1), "resident_mb": resident_mb()})
        print(rows[-1], flush=True)
    timed = rows[1:]  # the first step maps everything once
    growing = [r for r in timed if r["fault_mb"] > args.fault_mb]
    steady = [r for r in timed if r["fault_mb"] <= args.fault_mb]
    summary = {
        "freed_memory_kept": kept, "hugetlb": args.hugetlb, "precision": args.precision,
        "first_step": rows[0], "steps": len(timed), "growing_steps": len(growing),
        "growing_median_s": round(statistics.median(r["seconds"] for r in growing), 3) if growing else None,
        "steady_median_s": round(statistics.median(r["seconds"] for r in steady), 3) if steady else None,
        "fault_mb_after_first": round(sum(r["fault_mb"] for r in timed)),
        "resident_mb_after_first_step": rows[0]["resident_mb"], "resident_mb_end": rows[-1]["resident_mb"],
        "seconds_after_first": round(sum(r["seconds"] for r in timed), 2),
    }
    tag = "-hugetlb" * args.hugetlb + "-glibc-default" * (not kept)  # one result file per setting, none overwritten
    write_result(f"heap_growth{tag}", {"command": " ".join(["python benchmarks/heap_growth.py", *sys.argv[1:]]),
                                       "summary": summary, "steps": rows})
    print(summary)


if __name__ == "__main__":
    main()
