"""Evaluation losses a few positions at a time vs one fp32 copy of a batch's logits (issue 19 item 4).

An evaluation pass turns each batch's logits (positions x the 49k vocabulary, bf16 under autocast) into per-position
losses. Before, ``token_losses`` made one fp32 copy of the whole batch's logits and ran one ``cross_entropy`` over it:
for the forgetting guard's 2,061 reference positions that is ~400 MB written, and as much again for the softmax,
at every evaluation. Now, without a gradient, it takes ``EVAL_LOSS_ROWS`` positions at a time. Ways, alternating
with the order flipped each round, best of ``--rounds``, over the passes every planned run repeats at each
evaluation (the demo validation set, the guard's reference text), whole passes (forward included), on the demo
model under bf16 autocast as `precision: auto` runs it on a CPU with fast bf16 (full fine-tuning weights):

* ``whole batch (before)``: the earlier ``token_losses``, kept here;
* ``128 positions (now)``, and 32 and 512 for the choice of the size.

The summed losses of the ways must be equal.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_loss_rows.py --rounds 3
"""

from __future__ import annotations

from _evidence import write_result
from eval_padding import alternate, bf16_pass_benchmark, compare_ways


def whole_batch(logits, labels):
    """``token_losses`` before 2026-12-03: one fp32 copy of the batch's logits, one cross-entropy over it."""
    import torch.nn.functional as F

    from smalltune.data.tokenize import IGNORE

    flat = logits[:, :-1].float()
    target = labels[:, 1:]
    return F.cross_entropy(flat.reshape(-1, flat.size(-1)), target.reshape(-1), ignore_index=IGNORE,
                           reduction="none").view(target.shape)


def main() -> None:
    from smalltune.train import loss

    rounds, recipe, model, tok, passes, autocast = bf16_pass_benchmark(__doc__)
    chunked, default_rows = loss.token_losses, loss.EVAL_LOSS_ROWS
    ways = {"whole batch (before)": (whole_batch, None), "128 positions (now)": (chunked, 128),
            "32 positions": (chunked, 32), "512 positions": (chunked, 512)}

    def run(way, its):
        fn, rows = way
        loss.token_losses = fn
        loss.EVAL_LOSS_ROWS = rows or default_rows
        try:
            stats = loss.item_token_stats(model, its, recipe.eval.batch_size, "cpu", tok.pad_token_id, autocast,
                                          accuracy=False)
        finally:
            loss.token_losses, loss.EVAL_LOSS_ROWS = chunked, default_rows
        return sum(s[0] for s in stats)

    runs, totals = alternate(passes, ways, rounds, run)
    summary = compare_ways(passes, ways, runs, totals)
    write_result("eval_loss_rows", {"command": f"OMP_NUM_THREADS=1 python benchmarks/eval_loss_rows.py --rounds {rounds}",
                                    "batch_size": recipe.eval.batch_size, "precision": "bf16 autocast",
                                    "runs": {f"{p} / {w}": v for (p, w), v in runs.items()}, "summary": summary})


if __name__ == "__main__":
    main()
