"""Frozen weights cast once per pass (``train/autocast.py``): a cold evaluation of a LoRA run in bf16, before/after.

Not a test: a measurement to run by hand on a quiet machine and record in benchmarks/README.md. Autocast keeps a
weight's bf16 copy for its context only when the weight requires grad; peft freezes a LoRA model's base (and, for
inference, its adapter), so before ``cast_once`` every decoding step cast every weight again. Two arms evaluate one
trained run (default: the demo's vanilla LoRA arm, trained under bf16 autocast, so evaluated in bf16) cold -- a new
answer-cache folder each time, so the base model's answers are generated too -- in this process, alternating:
``once`` (now) and ``each`` (``cast_once`` replaced by plain ``no_grad``, as before). One row per (arm, pair) in
``results/eval_cast_once.jsonl`` with the machine and commit (resumable), the phase seconds from eval.json, and
whether every probe's metrics equal the other arm's (same casts, so the same numbers are expected).

    python benchmarks/eval_cast_once.py RUN_DIR --pairs 1           # e.g. runs/demo-.../vanilla
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from _evidence import RESULTS, cold_evaluation, cold_evaluation_pairs

OUT = RESULTS / "eval_cast_once.jsonl"


@contextlib.contextmanager
def _each(model):  # the behaviour before: frozen weights cast by autocast at every call
    import torch

    with torch.no_grad():
        yield model


def one(run: Path, arm: str, pair: int, quick: bool) -> dict:
    from smalltune.evaluate import context
    from smalltune.train import autocast, loss

    for module in (context, loss):
        module.cast_once = autocast.cast_once if arm == "once" else _each
    return cold_evaluation(run, f"cast-{arm}-{pair}", quick)


def main() -> None:
    cold_evaluation_pairs(__doc__.splitlines()[0], OUT, ("once", "each"), one)


if __name__ == "__main__":
    main()
