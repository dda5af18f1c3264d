"""Where a training step's time goes (issue 19 item 1): data, forward, backward, optimizer, per method.

The demo recipe's data (323 examples, batch 8, length-grouped) and model (SmolLM2-135M-Instruct, fp32),
built by smalltune's own ``setup`` (same optimizer, loader and method code as ``smalltune train``); each
step is timed in phases with the loss of ``train.loss`` -- logits only where a label follows
(``scored_positions``), or for every position (the way before 2026-12-02) -- for full fine-tuning and
the demo's vanilla LoRA (r=8, dropout 0.05, every linear layer), the same LoRA with torch's own dropout (peft's
``nn.Dropout``, before ``methods/dropout.py``) and without dropout. The
variants alternate over the same batches, the order flipping each round, so machine load hits all alike.

    .venv/bin/python benchmarks/step_profile.py --steps 6 --rounds 2
"""

from __future__ import annotations

import argparse
import time

from _evidence import DEMO, write_result

VARIANTS = {  # name: (recipe overrides, logits only where a label follows)
    "full": ([], True),
    "full, logits everywhere": ([], False),
    "lora r=8 dropout 0.05": (["method.name=lora", "method.r=8", "method.alpha=16", "method.dropout=0.05",
                               "train.lr=2e-4"], True),
    "lora r=8 no dropout": (["method.name=lora", "method.r=8", "method.alpha=16", "method.dropout=0",
                             "train.lr=2e-4"], True),
    "lora r=8 dropout 0.05, torch's": (["method.name=lora", "method.r=8", "method.alpha=16", "method.dropout=0.05",
                                        "train.lr=2e-4"], True),
}
TORCH_DROPOUT = {"lora r=8 dropout 0.05, torch's"}  # peft's nn.Dropout put back (smalltune's BitsDropout before)


def torch_dropout(model) -> None:
    """Put ``nn.Dropout`` back where smalltune's LoRA put ``BitsDropout`` (the way before 2026-12-02)."""
    from torch import nn

    from smalltune.train.methods.dropout import BitsDropout

    for module in model.modules():
        for name, d in list(getattr(module, "lora_dropout", {}).items()):
            if isinstance(d, BitsDropout):
                module.lora_dropout[name] = nn.Dropout(d.p)


def build(base, overrides):
    from smalltune import load_recipe
    from smalltune.train.data import prepare_data
    from smalltune.train.setup import setup

    recipe = load_recipe(DEMO / "recipe.yaml", ["guards.enabled=false", *overrides])
    model, tok = base.fresh()
    return setup(recipe, model, tok, prepare_data(recipe, tok, model))


def timed_steps(parts, keep: bool, steps: int) -> dict:
    from smalltune.train.loss import batch_logits, causal_lm_loss

    model, opt = parts.model, parts.optimizer
    model.train()
    it = iter(parts.loader)
    out = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0, "tokens": 0}
    for i in range(steps + 1):  # the first step warms up allocations and is not counted
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        loss = causal_lm_loss(*batch_logits(model, batch, keep))
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if i:
            for k, dt in zip(("data", "forward", "backward", "optimizer"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                out[k] += dt
            out["tokens"] += int(batch["attention_mask"].sum())
    return {k: round(v / steps, 3) if k != "tokens" else v for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import torch

    from smalltune import load_recipe
    from smalltune.train.setup import Base

    base = Base.load(load_recipe(DEMO / "recipe.yaml"))
    runs: dict[str, list[dict]] = {k: [] for k in VARIANTS}
    for r in range(args.rounds):
        for name in (list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))):
            overrides, keep = VARIANTS[name]
            torch.manual_seed(0)
            parts = build(base, overrides)
            if name in TORCH_DROPOUT:
                torch_dropout(parts.model)
            runs[name].append(timed_steps(parts, keep, args.steps))
            print(name, runs[name][-1], flush=True)
    summary = {}
    for name, rows in runs.items():
        best = min(rows, key=lambda x: x["forward"] + x["backward"] + x["optimizer"] + x["data"])
        total = best["forward"] + best["backward"] + best["optimizer"] + best["data"]
        summary[name] = {**best, "step": round(total, 3), "tokens_per_s": round(best["tokens"] / args.steps / total, 1)}
    write_result("step_profile", {"command": f"python benchmarks/step_profile.py --steps {args.steps} --rounds {args.rounds}",
                                  "threads": torch.get_num_threads(), "runs": runs, "summary": summary})
    for name, s in summary.items():
        print(f"{name:32s} step {s['step']:.2f} s = data {s['data']:.3f} + forward {s['forward']:.2f} + backward "
              f"{s['backward']:.2f} + optimizer {s['optimizer']:.2f}; {s['tokens_per_s']} tokens/s")


if __name__ == "__main__":
    main()
