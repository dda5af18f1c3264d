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

import argparse
import statistics
import time

import _evidence as E

RECIPE = E.DEMO / "recipe.yaml"


def main() -> None:
    import torch

    from smalltune import load_recipe
    from smalltune.data.tokenize import tokenize_examples
    from smalltune.models import load_model
    from smalltune.train.attention import fp32_attention
    from smalltune.train.autocast import cast_once
    from smalltune.train.guards.forgetting import reference_items
    from smalltune.train.loss import dataset_metrics
    from smalltune.train.splits import GUARD_PARAGRAPHS, load_splits, reference_roles

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args()
    recipe = load_recipe(RECIPE)
    model, tok = load_model(recipe.model.name)
    model.train()  # as during training: full fine-tuning, every weight requires grad
    fp32_attention(model)  # as training sets it up on a CPU (train/attention.py)
    d = recipe.data
    val, _ = tokenize_examples(tok, load_splits(recipe).validation, d.max_length, d.system_prompt)
    texts = reference_roles(recipe).take_measure("measure_forgetting_guard", GUARD_PARAGRAPHS)
    ref = reference_items(tok, texts, recipe.guards.reference_tokens)
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731  what accelerate enters under bf16
    size = recipe.eval.batch_size

    def passes() -> tuple[float, float]:  # the evaluation: validation metrics, then the guard's perplexity
        v = dataset_metrics(model, val, size, "cpu", tok.pad_token_id, bf16)
        r = dataset_metrics(model, ref, size, "cpu", tok.pad_token_id, bf16, accuracy=False)
        return v["eval_loss"], r["eval_ppl"]

    def shared() -> tuple[float, float]:
        with bf16(), cast_once(model):
            return passes()

    arms = {"separate": passes, "shared": shared}
    numbers = {name: f() for name, f in arms.items()}  # warm-up, and the numbers each gives
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.rounds):
        for name in (list(arms) if r % 2 == 0 else list(arms)[::-1]):  # alternate which runs first
            t0 = time.perf_counter()
            arms[name]()
            seconds[name].append(round(time.perf_counter() - t0, 4))
    summary = {name: {"best": min(s), "median": statistics.median(s)} for name, s in seconds.items()}
    out = {"commit": E.commit(), "rounds": args.rounds, "validation_items": len(val), "reference_items": len(ref),
           "same_numbers": numbers["separate"] == numbers["shared"], "numbers": numbers, "seconds": seconds,
           "summary": summary,
           "shared_vs_separate_median": round(summary["shared"]["median"] / summary["separate"]["median"], 4),
           "shared_vs_separate_best": round(summary["shared"]["best"] / summary["separate"]["best"], 4),
           "command": f"python benchmarks/eval_shared_cast.py --rounds {args.rounds}"}
    print(E.write_result("eval_shared_cast", out))
    print({k: out[k] for k in ("same_numbers", "summary", "shared_vs_separate_median", "shared_vs_separate_best")})


if __name__ == "__main__":
    main()
