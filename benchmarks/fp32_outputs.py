"""accelerate's fp32 copy of the outputs in loss passes (issue 19 item 4): training's evaluation passes with the
prepared model's forward (before) or its own under the pass's autocast (``train/autocast.own_autocast_forward``).

Not a test: a measurement to run by hand on a quiet machine. Under mixed precision ``Accelerator.prepare`` wraps the
model's forward in autocast and ``convert_outputs_to_fp32``, so a loss pass received an fp32 copy of all its logits
(49k floats per position) before ``train/loss.token_losses`` upcast them again a slice at a time. Two arms,
alternating for ``--rounds`` rounds: ``wrapped`` (accelerate's forward inside the pass, as before) and ``own``
(now), over the forgetting guard's reference pass and the validation pass of a full fine-tuning evaluation of the
demo recipe (``_evidence.DemoEvaluation``: bf16 autocast, attention in fp32, the model prepared by accelerate), and
checks both give the same numbers. Result: ``results/fp32_outputs.json`` with the machine and commit.

    python benchmarks/fp32_outputs.py --rounds 8
"""

from __future__ import annotations

import contextlib
import statistics

import _evidence as E


def main() -> None:
    from smalltune.train import loss

    args, ev = E.demo_evaluation_cli(__doc__, rounds=8)
    forwards = {"wrapped": contextlib.nullcontext, "own": loss.own_autocast_forward}
    parts = {"guard pass": lambda: ev.guard_pass()["eval_ppl"], "validation pass": lambda: ev.validation_pass()}

    def arm(name: str, part: str):
        loss.own_autocast_forward = forwards[name]
        try:
            return parts[part]()
        finally:
            loss.own_autocast_forward = forwards["own"]

    numbers = {part: {name: arm(name, part) for name in forwards} for part in parts}  # warm-up, and the numbers
    seconds = {part: E.alternate_rounds({name: (lambda n=name, q=part: arm(n, q)) for name in forwards}, args.rounds)
               for part in parts}
    median = {part: {name: statistics.median(s) for name, s in per.items()} for part, per in seconds.items()}
    out = {"commit": E.commit(), "rounds": args.rounds, "reference_items": len(ev.reference),
           "validation_items": len(ev.validation),
           "same_numbers": all(n["wrapped"] == n["own"] for n in numbers.values()), "numbers": numbers,
           "seconds": seconds, "median": median,
           "own_vs_wrapped_median": {part: round(m["own"] / m["wrapped"], 4) for part, m in median.items()},
           "command": f"python benchmarks/fp32_outputs.py --rounds {args.rounds}"}
    print(E.write_result("fp32_outputs", out))
    print({k: out[k] for k in ("same_numbers", "median", "own_vs_wrapped_median")})


if __name__ == "__main__":
    main()
