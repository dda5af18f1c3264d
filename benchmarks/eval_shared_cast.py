"""One autocast context per training evaluation (issue 19 item 4): the validation pass and the forgetting guard's
reference pass, each in its own context (before) or both inside one (``train/loop.py`` since 2026-12-06).

Not a test: a measurement to run by hand on a quiet machine. Autocast keeps a weight's bf16 cast until its
outermost context exits; every pass of ``train/loss.py`` opens its own, so an evaluation cast every weight once for
the validation pass and again for the guard's pass. The loop now opens one context around both. This times just
those two passes, as a full fine-tuning evaluation of the demo recipe runs them (the built-in model in training
mode, every weight trainable, bf16 autocast with attention in fp32; the demo's validation file; the guard's own
reference windows), alternating ``separate`` and ``shared`` for ``--rounds`` rounds, and checks that both give the
same numbers (the same casts). Result: ``results/eval_shared_cast.json`` with the machine and commit.

    python benchmarks/eval_shared_cast.py --rounds 8
"""

from __future__ import annotations

import statistics

import _evidence as E

def main() -> None:
    from smalltune.train.autocast import cast_once

    args, ev = E.demo_evaluation_cli(__doc__, rounds=8)

    def passes() -> tuple[float, float]:  # the evaluation: validation metrics, then the guard's perplexity
        return ev.validation_pass()["eval_loss"], ev.guard_pass()["eval_ppl"]

    def shared() -> tuple[float, float]:
        with ev.autocast(), cast_once(ev.model):
            return passes()

    arms = {"separate": passes, "shared": shared}
    numbers = {name: f() for name, f in arms.items()}  # warm-up, and the numbers each gives
    seconds = E.alternate_rounds(arms, args.rounds)
    summary = {name: {"best": min(s), "median": statistics.median(s)} for name, s in seconds.items()}
    out = {"commit": E.commit(), "rounds": args.rounds, "validation_items": len(ev.validation),
           "reference_items": len(ev.reference),
           "same_numbers": numbers["separate"] == numbers["shared"], "numbers": numbers, "seconds": seconds,
           "summary": summary,
           "shared_vs_separate_median": round(summary["shared"]["median"] / summary["separate"]["median"], 4),
           "shared_vs_separate_best": round(summary["shared"]["best"] / summary["separate"]["best"], 4),
           "command": f"python benchmarks/eval_shared_cast.py --rounds {args.rounds}"}
    print(E.write_result("eval_shared_cast", out))
    print({k: out[k] for k in ("same_numbers", "summary", "shared_vs_separate_median", "shared_vs_separate_best")})


if __name__ == "__main__":
    main()
