"""The KV cache kept in autocast's precision (``kv_cache._as_attended``): a cold evaluation in bf16, before/after.

Not a test: a measurement to run by hand on a quiet machine and record in benchmarks/README.md. Under bf16
autocast the keys leave the rotary embedding in fp32, and attention casts the whole cached window of keys to bf16
at every decoding step, in every layer; the cache now keeps keys and values in bf16 as they enter (the same
rounding, once), and the next token is taken over fp32 logits (argmax over bf16 ones runs unvectorised). Two arms
evaluate one trained run cold, in this process, alternating: ``kept`` (now) and ``cast`` (keys kept as they come,
argmax over the bf16 logits: as before). One row per (arm, pair) in ``results/eval_kv_bf16.jsonl`` with the machine
and commit (resumable), the phase seconds from eval.json, and a hash of every probe's results (the same numbers
are expected from both arms).

    python benchmarks/eval_kv_bf16.py RUN_DIR --pairs 1       # e.g. runs/demo-.../vanilla (a run trained in bf16)
"""

from __future__ import annotations

from pathlib import Path

from _evidence import RESULTS, cold_evaluation, cold_evaluation_pairs

OUT = RESULTS / "eval_kv_bf16.jsonl"


def one(run: Path, arm: str, pair: int, quick: bool) -> dict:
    from smalltune import greedy, kv_cache

    original = {"_as_attended": kv_cache._as_attended, "_next_tokens": greedy._next_tokens}
    if arm == "cast":
        kv_cache._as_attended = lambda states: states
        greedy._next_tokens = lambda logits: logits[:, -1].argmax(-1)
    try:
        return cold_evaluation(run, f"kv-{arm}-{pair}", quick)
    finally:
        kv_cache._as_attended, greedy._next_tokens = original["_as_attended"], original["_next_tokens"]


def main() -> None:
    cold_evaluation_pairs(__doc__.splitlines()[0], OUT, ("kept", "cast"), one)


if __name__ == "__main__":
    main()
