"""Where a training step's time goes (issue 19 item 1): data, forward, backward, optimizer, per variant.

The demo recipe's data (323 examples, batch 8, length-grouped) and model (SmolLM2-135M-Instruct), built by
smalltune's own ``setup`` (same optimizer, loader and method code as ``smalltune train``); each step is timed in
phases. Variants: full fine-tuning and ``speed_vs_trl.py``'s LoRA (r=16, alpha 32, dropout 0.1, every linear
layer), each in fp32 and under bf16 autocast, as smalltune runs them now and as it ran them before 2026-12-05
(LoRA through peft's own forward, not ``methods/lora_fused.py``; attention in bf16 under autocast, not
``train/attention.py``'s fp32). The variants alternate over the same batches, the order flipping each round, so
machine load hits all alike.

    .venv/bin/python benchmarks/step_profile.py --steps 6 --rounds 2
"""

from __future__ import annotations

import argparse
import time

from _evidence import DEMO, write_result

LORA = ["method.name=lora", "method.r=16", "method.alpha=32", "method.dropout=0.1", "method.target_modules=all-linear",
        "train.lr=2e-4"]
VARIANTS = {  # name: (recipe overrides, what to undo: "peft forward", "bf16 attention")
    "full fp32": (["train.precision=fp32"], ()),
    "full bf16": (["train.precision=bf16"], ()),
    "full bf16, bf16 attention (before)": (["train.precision=bf16"], ("bf16 attention",)),
    "lora fp32": (LORA + ["train.precision=fp32"], ()),
    "lora fp32, peft's forward (before)": (LORA + ["train.precision=fp32"], ("peft forward",)),
    "lora bf16": (LORA + ["train.precision=bf16"], ()),
    "lora bf16, peft's forward, bf16 attention (before)": (LORA + ["train.precision=bf16"],
                                                           ("peft forward", "bf16 attention")),
}


def undo(model, what) -> None:
    """Put back the way before 2026-12-05: peft's own LoRA forward, transformers' SDPA attention under autocast."""
    if "peft forward" in what:
        for module in model.modules():
            module.__dict__.pop("forward", None)  # methods/lora_fused.py routes each layer by an instance forward
    if "bf16 attention" in what:
        (model.get_base_model() if hasattr(model, "get_base_model") else model).set_attn_implementation("sdpa")


def build(base, overrides):
    from smalltune import load_recipe
    from smalltune.train.data import prepare_data
    from smalltune.train.setup import setup

    recipe = load_recipe(DEMO / "recipe.yaml", ["guards.enabled=false", *overrides])
    model, tok = base.fresh()
    return setup(recipe, model, tok, prepare_data(recipe, tok, model))


def timed_steps(parts, steps: int) -> dict:
    from smalltune.train.loss import batch_logits, causal_lm_loss

    model, opt = parts.model, parts.optimizer
    model.train()
    it = iter(parts.loader)
    out = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0, "tokens": 0}
    for i in range(steps + 1):  # the first step warms up allocations and is not counted
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        with parts.accelerator.autocast():
            loss = causal_lm_loss(*batch_logits(model, batch, True))
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
            overrides, what = VARIANTS[name]
            torch.manual_seed(0)
            parts = build(base, overrides)
            undo(parts.unwrapped, what)
            runs[name].append(timed_steps(parts, args.steps))
            print(name, runs[name][-1], flush=True)
    summary = {}
    for name, rows in runs.items():
        best = min(rows, key=lambda x: x["forward"] + x["backward"] + x["optimizer"] + x["data"])
        total = best["forward"] + best["backward"] + best["optimizer"] + best["data"]
        summary[name] = {**best, "step": round(total, 3), "tokens_per_s": round(best["tokens"] / args.steps / total, 1)}
    command = f"python benchmarks/step_profile.py --steps {args.steps} --rounds {args.rounds}"
    write_result("step_profile", {"command": command, "threads": torch.get_num_threads(), "runs": runs,
                                  "summary": summary})
    for name, s in summary.items():
        print(f"{name:52s} step {s['step']:.2f} s = data {s['data']:.3f} + forward {s['forward']:.2f} + backward "
              f"{s['backward']:.2f} + optimizer {s['optimizer']:.2f}; {s['tokens_per_s']} tokens/s")


if __name__ == "__main__":
    main()
