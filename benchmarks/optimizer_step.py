"""AdamW step time on the built-in model: PyTorch's default CPU implementation vs ``fused=True`` (issue 19).

PyTorch runs AdamW on CPU tensors as a Python loop over the parameters unless asked for ``foreach`` or
``fused``; smalltune's ``build_optimizer`` asks for ``fused`` (one kernel over every tensor). This measures
one optimizer step for full fine-tuning of SmolLM2-135M-Instruct (272 tensors, 134.5M parameters, random
gradients of the real shapes), the three implementations alternating, best of ``--reps`` per round, with
the same weight decay groups as ``build_optimizer``; and the largest weight difference from the default
after three steps from the same start (the update must be the same up to float rounding).

    .venv/bin/python benchmarks/optimizer_step.py --rounds 3 --reps 5
"""

from __future__ import annotations

import argparse
import time

import torch

from _evidence import write_result

VARIANTS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def optimizer(params, **kw) -> torch.optim.Optimizer:
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.05},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-4, **kw)


def copies(model) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for p in model.parameters():
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = torch.randn(q.shape, generator=gen) * 1e-3
        out.append(q)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    from smalltune.models import load_model

    model, _ = load_model("smollm2-135m-instruct")
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for r in range(args.rounds):
        for name in (VARIANTS if r % 2 == 0 else reversed(VARIANTS)):
            params = copies(model)
            opt = optimizer(params, **VARIANTS[name])
            opt.step()  # state allocated outside the timing
            best = float("inf")
            for _ in range(args.reps):
                t0 = time.perf_counter()
                opt.step()
                best = min(best, time.perf_counter() - t0)
            times[name].append(round(best, 4))
    finals = {}
    for name, kw in VARIANTS.items():
        params = copies(model)
        opt = optimizer(params, **kw)
        for _ in range(3):
            opt.step()
        finals[name] = [p.detach() for p in params]
    diff = {name: max(float((a - b).abs().max()) for a, b in zip(finals[name], finals["default"])) for name in VARIANTS}
    summary = {name: {"seconds": min(t), "runs": t, "speedup_over_default": round(min(times["default"]) / min(t), 2),
                      "max_weight_diff_after_3_steps": diff[name]} for name, t in times.items()}
    write_result("optimizer_step", {"command": f"python benchmarks/optimizer_step.py --rounds {args.rounds} --reps {args.reps}",
                                    "parameters": sum(p.numel() for p in model.parameters()),
                                    "tensors": len(list(model.parameters())), "summary": summary})
    for name, s in summary.items():
        print(f"{name:8s} {s['seconds']:.3f} s/step  {s['speedup_over_default']:.2f}x  max diff {s['max_weight_diff_after_3_steps']:.1e}")


if __name__ == "__main__":
    main()
