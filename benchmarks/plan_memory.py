"""Measured peak training memory vs the planner's estimate (goal: within 25%).

Runs a few optimizer steps of a model with a method at a fixed batch x sequence length, measures
peak memory, and prints it next to ``smalltune.plan.memory.estimate`` for the same settings.

* CPU: peak resident set size (RSS), sampled every millisecond by a thread, minus the RSS after the
  model, method and optimizer exist, plus the exact bytes of the weights then present. After the first
  step it takes one best-model snapshot of the trainable weights and holds it, as a training run does from
  its first evaluation on (``train/guards/snapshots.py``; the estimate's ``snapshots`` part). The
  process's Python/torch baseline is thus excluded, as the estimate excludes it.
* CUDA: ``torch.cuda.max_memory_allocated`` (weights included), after a reset.

On a CPU the process keeps the memory it frees, as every ``smalltune`` command does
(:func:`smalltune.memory.keep_freed_memory`: freed buffers stay in the heap and are reused, which raises
the peak); ``--glibc-default`` measures with glibc's default of returning big buffers to the system.

It also reports the bytes of the tensors autograd saves for backward (``saved_tensors_hooks``),
which checks the estimate's per-layer activation count independently of the allocator.

    python benchmarks/plan_memory.py --method lora --batch-size 2 --seq-len 128 --steps 3
    python benchmarks/plan_memory.py --device cuda --method full --batch-size 8 --seq-len 512
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from _evidence import apply_cli_memory, memory_as_the_cli


class PeakRSS:
    """Samples the process RSS in a thread; ``peak`` is the highest value seen."""

    def __init__(self, interval: float = 0.001):
        import psutil

        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval, 0, threading.Event()

    def __enter__(self):
        self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def batch(vocab: int, batch_size: int, seq_len: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch_size, seq_len), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, -seq_len // 8:] = 0  # some padding, as real batches have: the attention mask is materialised
    labels = ids.masked_fill(mask == 0, -100)
    return {k: v.to(device) for k, v in {"input_ids": ids, "attention_mask": mask, "labels": labels}.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (gradients are kept "
                    "between them)")
    memory_as_the_cli(ap)
    args = ap.parse_args()
    kept = apply_cli_memory(args)

    import torch

    from smalltune.models import load_model
    from smalltune.plan.memory import CPU_HEAP_OVERHEAD, GIB, estimate, model_shape
    from smalltune.recipe import MethodSection, TrainSection
    from smalltune.train.loop import build_optimizer
    from smalltune.train.loss import causal_lm_loss
    from smalltune.train.methods import METHODS, count_parameters

    torch.manual_seed(0)
    shape = model_shape(args.model)
    cfg = MethodSection(name=args.method, dropout=args.dropout)
    est = estimate(shape, args.method, cfg, args.batch_size, args.seq_len, args.precision, device=args.device)

    model, _tok = load_model(args.model)
    plugin = METHODS.get(args.method)()
    model = plugin.apply(model, cfg)
    model.to(args.device).train()
    optimizer = build_optimizer(model, TrainSection(lr=1e-5))
    trainable, total = count_parameters(model)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    data = batch(shape.vocab, args.batch_size, args.seq_len, args.device)
    dtype = torch.bfloat16 if args.precision == "bf16" else None

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}  # storage -> bytes of every non-parameter tensor autograd keeps for backward

    def keep(t):
        if step.calls == 1 and t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def step():
        step.calls += 1
        with torch.autocast(args.device, dtype=dtype, enabled=dtype is not None), \
                torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            logits = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
            loss = causal_lm_loss(logits, data["labels"])
        loss.backward()
        if step.calls % args.grad_accum == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss.item()

    step.calls = 0

    started = time.perf_counter()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated()
    else:
        import psutil

        with torch.no_grad():  # weights may be memory-mapped from the file: page them in before the baseline
            for p in model.parameters():
                p.sum()
        base = psutil.Process().memory_info().rss
        with PeakRSS() as peak:
            for i in range(args.steps):
                step()
                if i == 0:  # one best-model snapshot in host memory, as a run holds after its first evaluation
                    snapshot = plugin.trainable_state(model)  # noqa: F841 - held for the peak
        measured = peak.peak - base + weight_bytes
    seconds = time.perf_counter() - started
    result = {
        "model": args.model, "method": args.method, "device": args.device, "precision": args.precision,
        "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps, "grad_accum": args.grad_accum,
        "freed_memory_kept": kept,
        "trainable_params": trainable, "estimated_trainable_params": est.trainable_params, "total_params": total,
        "measured_gib": round(measured / GIB, 3), "estimated_gib": round(est.total / GIB, 3),
        "estimate_parts_gib": {k: round(getattr(est, k) / GIB, 3) for k in
                               ("weights", "gradients", "optimizer_states", "activations", "snapshots")},
        "ratio_estimate_to_measured": round(est.total / measured, 3), "seconds": round(seconds, 1),
        # what autograd keeps (first step), next to the estimate's counted activations before overheads
        "saved_tensors_gib": round(sum(saved.values()) / GIB, 3),
        "estimated_counted_activations_gib": round(
            est.activations / (CPU_HEAP_OVERHEAD if args.device == "cpu" else 1.0) / GIB, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
