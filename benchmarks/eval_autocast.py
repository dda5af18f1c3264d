"""One autocast context per evaluation pass vs one per batch (issue 19 item 4), and the forgetting guard's pass
without the next-token accuracy it never reads.

Under ``torch.autocast`` a weight that requires grad is cast to bf16 once per context and then reused; leaving the
context drops the copies. The passes every planned run repeats at each evaluation (the validation set and the
forgetting guard's 2048 reference tokens) used to enter the context batch by batch, so every batch cast every weight
again. Ways, alternating with the order flipped each round, best of ``--rounds``, on the demo model (SmolLM2-135M,
full fine-tuning: every weight requires grad) under bf16 autocast:

* ``per batch (before)``: the earlier ``item_token_stats``, kept here;
* ``per pass``: ``item_token_stats`` now;
* ``per pass, no accuracy``: what the forgetting guard runs now (``accuracy=False``: no argmax over the vocabulary).

The summed losses of the ways must agree (same bf16 matmuls, same batches).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_autocast.py --rounds 3
"""

from __future__ import annotations

import contextlib
import functools

from _evidence import write_result
from eval_padding import alternate, bf16_pass_benchmark, compare_ways


def per_batch(model, items, batch_size, device, pad_id, autocast=None, accuracy=True):
    """``item_token_stats`` as it was before 2026-12-03: the autocast context entered for each batch's forward."""
    import torch

    from smalltune.data.batching import collate, eval_batches
    from smalltune.data.tokenize import IGNORE
    from smalltune.train.loss import batch_logits, keeps_logits, token_losses

    out = [None] * len(items)
    keep = keeps_logits(model)
    with torch.no_grad():
        for idx in eval_batches(items, batch_size):
            batch = {k: v.to(device) for k, v in collate([items[i] for i in idx], pad_id).items()}
            with autocast() if autocast else contextlib.nullcontext():
                logits, labels = batch_logits(model, batch, keep)
            mask = labels[:, 1:] != IGNORE
            losses = token_losses(logits, labels) * mask
            correct = (logits[:, :-1].argmax(-1) == labels[:, 1:]) & mask
            for row, i in enumerate(idx):
                out[i] = (float(losses[row].sum()), int(mask[row].sum()), int(correct[row].sum()))
    return out


def main() -> None:
    from smalltune.train.loss import item_token_stats

    rounds, recipe, model, tok, passes, autocast = bf16_pass_benchmark(__doc__)
    ways = {"per batch (before)": per_batch, "per pass": item_token_stats,
            "per pass, no accuracy": functools.partial(item_token_stats, accuracy=False)}

    def run(way, its):
        model.train()  # as in the training loop; the pass switches to eval mode and back
        return sum(s[0] for s in way(model, its, recipe.eval.batch_size, "cpu", tok.pad_token_id, autocast))

    runs, totals = alternate(passes, ways, rounds, run)
    summary = compare_ways(passes, ways, runs, totals)
    write_result("eval_autocast", {"command": f"OMP_NUM_THREADS=1 python benchmarks/eval_autocast.py --rounds {rounds}",
                                   "batch_size": recipe.eval.batch_size,
                                   "runs": {f"{p} / {w}": v for (p, w), v in runs.items()}, "summary": summary})


if __name__ == "__main__":
    main()
