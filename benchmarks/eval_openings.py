"""Prompts batched by their opening, each opening run once a pass (``prompt_batch.by_opening``, greedy's
``openings``): a cold evaluation before/after.

Not a test: a measurement to run by hand on a quiet machine and record in benchmarks/README.md. An evaluation's
prompts open with one of a few chat openings (the run's system prompt, the template's default one), ~15-25 of a
prompt's ~35 tokens. Sorted by length alone, prompts of different openings shared a chunk and each ran its own;
now prompts of one opening go together (by length within it) and greedy decoding runs each opening once and copies
its keys and values into every chunk that starts with it. Two arms evaluate one trained run cold, in this process,
alternating: ``openings`` (now) and ``length`` (sorted by length, each chunk's common opening run for it: before).
One row per (arm, pair) in ``results/eval_openings.jsonl`` with the machine and commit (resumable), the phase
seconds from eval.json, and a hash of every probe's results (the chunks differ, so under bf16 a few answers may
round differently).

    python benchmarks/eval_openings.py RUN_DIR --pairs 1       # e.g. runs/demo-.../vanilla
"""

from __future__ import annotations

from pathlib import Path

from _evidence import RESULTS, cold_evaluation, cold_evaluation_pairs

OUT = RESULTS / "eval_openings.jsonl"


def one(run: Path, arm: str, pair: int, quick: bool) -> dict:
    from smalltune import generate, greedy, prompt_batch

    original = (generate.by_opening, greedy.model_batch)
    if arm == "length":
        generate.by_opening = lambda rows: sorted(range(len(rows)), key=lambda i: len(rows[i]))
        greedy.model_batch = lambda model, rows, pad_id, share, grow, openings=None: prompt_batch.model_batch(
            model, rows, pad_id, share, grow)
    try:
        return cold_evaluation(run, f"openings-{arm}-{pair}", quick)
    finally:
        generate.by_opening, greedy.model_batch = original


def main() -> None:
    cold_evaluation_pairs(__doc__.splitlines()[0], OUT, ("openings", "length"), one)


if __name__ == "__main__":
    main()
