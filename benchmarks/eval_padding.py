"""Padding in evaluation passes (issue 19 item 4): fixed-size length-sorted batches vs batches that end before
padding passes 10% of their tokens (``data.batching.eval_batches``, ``EVAL_MAX_PADDING``).

Two passes every planned run repeats at each evaluation, on the demo model (SmolLM2-135M-Instruct, fp32): the
forgetting guard's 2048 reference tokens (14 windows of 88-215 tokens: one batch of 16 was 46% padding) and the
demo's validation set (56 examples). ``dataset_metrics`` times each pass both ways, alternating, the order
flipping each round; the losses of the two ways must agree (they score the same tokens).

    .venv/bin/python benchmarks/eval_padding.py --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import time

from _evidence import DEMO, write_result


def items(recipe, tok):
    from smalltune.data import load_examples
    from smalltune.data.tokenize import tokenize_examples
    from smalltune.train.guards.forgetting import reference_items
    from smalltune.train.splits import GUARD_PARAGRAPHS, reference_roles

    val, _ = tokenize_examples(tok, load_examples(DEMO / "validation.jsonl"), recipe.data.max_length,
                               recipe.data.system_prompt)
    reference = reference_items(tok, reference_roles(recipe).measure[:GUARD_PARAGRAPHS], recipe.guards.reference_tokens)
    return {"reference (guard)": reference, "validation": val}


def alternate(passes: dict, ways: dict, rounds: int, run) -> tuple[dict, dict]:
    """Time ``run(way, items)`` for every pass and way, the ways' order flipped each round so a drifting load hits
    them alike. Returns (seconds per (pass, way) in rounds, the last value ``run`` returned per (pass, way))."""
    runs = {(p, w): [] for p in passes for w in ways}
    values = {}
    for r in range(rounds):
        for p, its in passes.items():
            for w in (list(ways) if r % 2 == 0 else list(reversed(ways))):
                t0 = time.perf_counter()
                values[(p, w)] = run(ways[w], its)
                runs[(p, w)].append(time.perf_counter() - t0)
                print(p, "/", w, round(runs[(p, w)][-1], 3), flush=True)
    return runs, values


def compare_ways(passes: dict, ways: dict, runs: dict, totals: dict) -> dict:
    """Per pass: best seconds of each way, its speed-up over the first way (the "before"), and the largest difference
    of the summed losses from the first way's (they must agree); printed as it goes."""
    summary = {}
    before = next(iter(ways))
    for p in passes:
        best = {w: min(runs[(p, w)]) for w in ways}
        summary[p] = {"tokens": sum(len(i) for i in passes[p]), "best_seconds": best,
                      "speedup_vs_before": {w: round(best[before] / best[w], 3) for w in ways},
                      "largest_loss_sum_difference": max(abs(totals[(p, w)] - totals[(p, before)]) for w in ways)}
        print(p, summary[p], flush=True)
    return summary


def bf16_pass_benchmark(doc: str):
    """(--rounds, recipe, model, tokenizer, passes, a bf16 autocast factory) for a benchmark of evaluation passes
    under bf16 autocast on the demo model; ``doc``'s first line describes it on the command line."""
    import torch

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    rounds = ap.parse_args().rounds
    return (rounds, *demo_model_and_passes(), functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16))


def demo_model_and_passes():
    """(recipe, model, tokenizer, passes) for the demo recipe's model, fp32, with :func:`items`'s two passes."""
    from smalltune import load_recipe
    from smalltune.models import load_model

    recipe = load_recipe(DEMO / "recipe.yaml")
    model, tok = load_model(recipe.model.name)
    return recipe, model, tok, items(recipe, tok)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import torch

    from smalltune.train import loss
    from smalltune.data.batching import EVAL_MAX_PADDING, eval_batches

    recipe, model, tok, passes = demo_model_and_passes()
    model.eval()
    ways = {"fixed batches": functools.partial(eval_batches, max_padding=None),
            f"padding <= {EVAL_MAX_PADDING:.0%}": eval_batches}

    def run(batches, its):
        loss.eval_batches = batches
        return loss.dataset_metrics(model, its, recipe.eval.batch_size, "cpu", tok.pad_token_id)["eval_loss"]

    runs, values = alternate(passes, ways, args.rounds, run)
    loss.eval_batches = eval_batches
    summary = {}
    fixed, bounded = list(ways)
    for p, its in passes.items():
        padded = {w: sum(len(b) * max(len(its[i]) for i in b) for b in ways[w](its, recipe.eval.batch_size))
                  for w in ways}
        best = {w: min(runs[(p, w)]) for w in ways}
        summary[p] = {"items": len(its), "tokens": sum(len(i) for i in its), "padded_positions": padded,
                      "best_seconds": best, "speedup": round(best[fixed] / best[bounded], 3),
                      "loss_difference": abs(values[(p, fixed)] - values[(p, bounded)])}
        print(p, summary[p], flush=True)
    write_result("eval_padding", {"command": f"python benchmarks/eval_padding.py --rounds {args.rounds}",
                                  "threads": torch.get_num_threads(), "batch_size": recipe.eval.batch_size,
                                  "runs": {f"{p} / {w}": v for (p, w), v in runs.items()}, "summary": summary})


if __name__ == "__main__":
    main()
