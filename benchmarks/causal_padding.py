"""Right-padded batches on SDPA's causal kernel (``train/attention.causal_unless_padded_left``), before/after.

Not a test: a measurement to run by hand on a quiet machine. With padding in a batch, transformers passes SDPA an
explicit mask and the CPU flash kernel computes every query against every key; a right-padded batch (every
training and loss pass here) may use ``is_causal`` instead, which skips the upper triangle, with the same outputs
at every real position. Two arms, alternating per round: ``mask`` (transformers' ``sdpa_mask``, as before) and
``causal`` (now). Measured as training runs them on a CPU under bf16 autocast with attention in fp32 (the demo
recipe's ``auto`` choice on CPUs with a fast bf16 path): the forgetting guard's reference pass, the validation
pass, and full fine-tuning steps (forward and backward, no optimizer: the arms differ only in attention) over the
demo's first training batches, length-grouped as training batches them. Result:
``results/causal_padding-<precision>.json`` with the machine and commit.

    python benchmarks/causal_padding.py --rounds 4                     # bf16 autocast
    python benchmarks/causal_padding.py --rounds 4 --precision fp32    # plain fp32
"""

from __future__ import annotations

import statistics
import time

import _evidence as E

STEPS = 3  # training batches timed per round


def main() -> None:
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    from smalltune.data.batching import batch_indices, collate
    from smalltune.train.attention import NAME, causal_unless_padded_left
    from smalltune.train.loss import batch_logits, causal_lm_loss

    args, ev = E.demo_evaluation_cli(__doc__, rounds=4, precision=True)
    model, t = ev.model, ev.recipe.train
    order = batch_indices([len(x) for x in ev.train], t.batch_size, t.seed, True)  # as training batches them
    batches = [collate([ev.train[i] for i in idx], ev.tok.pad_token_id) for idx in order[:STEPS]]

    def steps():
        losses = []
        for batch in batches:
            with ev.autocast():
                loss = causal_lm_loss(*batch_logits(model, batch, True))
            loss.backward()
            model.zero_grad(set_to_none=True)
            losses.append(loss.item())
        return losses

    masks = {"mask": sdpa_mask, "causal": causal_unless_padded_left}
    parts = {"guard pass": lambda: ev.guard_pass()["eval_loss"],
             "validation pass": lambda: ev.validation_pass()["eval_loss"], f"{STEPS} full fine-tuning steps": steps}
    numbers, seconds = {}, {arm: {part: [] for part in parts} for arm in masks}
    for r in range(args.rounds + 1):  # round 0 warms up and records each arm's numbers
        for arm in (list(masks) if r % 2 == 0 else list(masks)[::-1]):
            AttentionMaskInterface.register(NAME, masks[arm])
            for part, fn in parts.items():
                t0 = time.perf_counter()
                out = fn()
                if r == 0:
                    numbers.setdefault(part, {})[arm] = out
                else:
                    seconds[arm][part].append(round(time.perf_counter() - t0, 4))
    AttentionMaskInterface.register(NAME, causal_unless_padded_left)
    median = {arm: {part: statistics.median(s) for part, s in per.items()} for arm, per in seconds.items()}
    ratio = {part: round(median["causal"][part] / median["mask"][part], 4) for part in parts}
    out = {"commit": E.commit(), "rounds": args.rounds, "precision": args.precision, "seconds": seconds, "median": median,
           "causal_vs_mask_median": ratio, "numbers": numbers,
           "command": f"python benchmarks/causal_padding.py --rounds {args.rounds} --precision {args.precision}"}
    print(E.write_result(f"causal_padding-{args.precision}", out))
    print({"causal_vs_mask_median": ratio, "median": median, "numbers": numbers})


if __name__ == "__main__":
    main()
