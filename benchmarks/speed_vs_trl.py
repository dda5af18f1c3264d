"""Training speed: ``smalltune train`` against a plain TRL ``SFTTrainer`` + peft run (issue 9, experiment 5).

Same model (the built-in SmolLM2-135M-Instruct), same data (the demo's training file with its
system prompt, loss on the answers only), same hyperparameters (batch 8, max length 256, fp32,
AdamW, cosine schedule with 10% warmup, weight decay 0.01, clipping at 1.0; LoRA r=16, alpha=32,
dropout 0.1 on every linear layer at lr 2e-4, full fine-tuning at lr 2e-5). Runs alternate
smalltune/TRL (the order flips every round) so a drifting machine load hits both sides alike.

Throughput is training tokens per second: non-padding tokens of the batches (prompt and answer)
over the wall time from the end of the first optimizer step to the end of the last, so model
loading, data preparation, the first step's warm-up and any evaluation are left out on both
sides. TRL keeps two of its defaults changed to match smalltune: ``gradient_checkpointing=False``
(TRL turns it on by default, which trades ~30% speed for memory) and fp32 instead of TRL's
default bf16 (the CPUs first measured had no fast bf16 path for training; see the README's performance
notes). ``--precision bf16`` runs both sides under bf16 autocast with fp32 weights instead (smalltune's
``train.precision=bf16``, TRL's ``bf16=True``): what ``auto`` picks on a CPU with a fast bf16 path, and
TRL's default; shares of peak are then also given against the bf16 matmul peak.
``--compile`` turns on smalltune's ``train.compile`` (each decoder layer compiled by ``torch.compile``); TRL keeps
its default ``torch_compile=False``. The first compiled run of a process pays the compilation (minutes when
inductor's on-disk cache is cold), which the throughput leaves out like any first step; ``first_step_s`` records it.
TRL batches examples in data order (no length grouping), smalltune groups by length; padding a
tool does not avoid counts against it, since only real tokens are counted.

Achieved FLOP/s use the usual estimate of training compute per token: 6N for full fine-tuning
(forward 2N, backward 4N; "Scaling Laws for Neural Language Models", arXiv 2001.08361) and 4N for
LoRA (the frozen weights need no weight gradients), N = parameters used in matmuls per token
(every parameter except the input embedding; the tied output projection counts once). The peak is
measured here, in the same session: a 2048x2048 matmul in fp32 and bf16.

    .venv/bin/pip install "trl>=0.20"     # the bench extra (not part of `make install`)
    .venv/bin/python benchmarks/speed_vs_trl.py --steps 12 --rounds 2
    .venv/bin/python benchmarks/speed_vs_trl.py --steps 12 --rounds 2 --precision bf16   # results/speed_vs_trl-bf16.json
    .venv/bin/python benchmarks/speed_vs_trl.py --steps 12 --rounds 2 --compile   # results/speed_vs_trl-compile.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _evidence import DEMO, RESULTS, atomic_text, machine
SETTINGS = {"batch_size": 8, "max_length": 256, "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0,
            "seed": 42, "lora": {"r": 16, "alpha": 32, "dropout": 0.1, "lr": 2e-4}, "full": {"lr": 2e-5}}
SYSTEM = "You are the receptionist at Brightside Dental."


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Measured FLOP/s of an n x n matmul on this machine (best of reps)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def throughput(points: list[tuple[float, int]]) -> float:
    """Tokens/s between the first and the last (elapsed seconds, cumulative tokens) point."""
    (t0, n0), (t1, n1) = points[0], points[-1]
    return (n1 - n0) / (t1 - t0)


def run_smalltune(method: str, steps: int, out: Path, precision: str, compiled: bool = False) -> dict:
    from smalltune import load_recipe, train

    s = SETTINGS
    overrides = [f"output_dir={out}", f"train.max_steps={steps}", f"method.name={method}",
                 f"train.lr={s[method]['lr']}", f"train.warmup_ratio={s['warmup_ratio']}", "train.scheduler=cosine",
                 f"train.precision={precision}", "guards.enabled=false", "early_stopping.enabled=false",
                 f"eval.every_steps={steps}", "train.keep_checkpoints=1", f"train.compile={str(compiled).lower()}"]
    if method == "lora":  # the demo recipe is full fine-tuning now: the adapter's settings must be given, not inherited
        lo = s["lora"]
        overrides += [f"method.r={lo['r']}", f"method.alpha={lo['alpha']}", f"method.dropout={lo['dropout']}",
                      "method.target_modules=all-linear"]
    recipe = load_recipe(DEMO / "recipe.yaml", overrides)
    train(recipe, progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    points = [(r["elapsed"], r["tokens"]) for r in rows if r["type"] == "train"]
    losses = [round(r["loss"], 4) for r in rows if r["type"] == "train"]
    final = [r for r in rows if r["type"] == "eval"][-1]  # the run evaluates once, on its last step's weights
    return {"tokens_per_s": throughput(points), "steps": len(points), "losses": losses,
            "validation_loss": round(final["eval_loss"], 4), "first_step_s": round(points[0][0], 1)}


def run_trl(method: str, steps: int, out: Path, precision: str, compiled: bool = False) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from smalltune import load_examples
    from smalltune.models import builtin_path

    s = SETTINGS
    path = builtin_path("smollm2-135m-instruct")
    rows = []
    for ex in load_examples(DEMO / "train.jsonl"):
        msgs = [{"role": "system", "content": SYSTEM}] + [{"role": m["role"], "content": m["content"]} for m in ex.messages]
        rows.append({"prompt": msgs[:-1], "completion": msgs[-1:]})  # loss on the final answer only
    points: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            points.append((time.perf_counter(), int(state.num_input_tokens_seen)))

    config = SFTConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=s["batch_size"], learning_rate=s[method]["lr"],
        lr_scheduler_type="cosine", warmup_steps=round(s["warmup_ratio"] * steps), weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"], max_length=s["max_length"], seed=s["seed"], bf16=precision == "bf16",
        gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0, disable_tqdm=True)
    peft_config = None
    if method == "lora":
        lo = s["lora"]
        peft_config = LoraConfig(r=lo["r"], lora_alpha=lo["alpha"], lora_dropout=lo["dropout"],
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=AutoTokenizer.from_pretrained(path), peft_config=peft_config,
                         callbacks=[Clock()])
    trainer.train()
    losses = [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h]
    return {"tokens_per_s": throughput(points), "steps": len(points), "losses": losses,
            "validation_loss": validation_loss(trainer.model, trainer.processing_class, precision)}


def validation_loss(model, tokenizer, precision: str) -> float:
    """The demo validation loss (answer tokens) of a trained TRL model, by the function smalltune's own runs use.

    Step losses of the two tools are not comparable: their batches hold different examples (smalltune groups by
    length), so their first-step losses, before any update, already differ. The final weights on one fixed set are.
    """
    from smalltune import load_examples
    from smalltune.data.tokenize import tokenize_examples
    from smalltune.train.loss import dataset_metrics

    items, _ = tokenize_examples(tokenizer, load_examples(DEMO / "validation.jsonl"), SETTINGS["max_length"], SYSTEM)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else None
    model.eval()
    return round(dataset_metrics(model, items, 16, "cpu", tokenizer.pad_token_id, autocast)["eval_loss"], 4)


RUNNERS = {"smalltune": run_smalltune, "trl": run_trl}


def padding_overhead(shuffles: int = 20) -> dict:
    """Positions computed per real token: padded batch size x longest / real tokens, averaged over shuffles.

    smalltune groups examples of similar length into a batch; TRL's default sampler shuffles and pads
    each batch to its longest example. A count, not a timing: it shows how much of a speed gap is
    padding. Lengths are smalltune's tokenisation of the demo data (TRL's template render is the same).
    """
    from smalltune import load_examples
    from smalltune.data.batching import batch_indices
    from smalltune.data.tokenize import tokenize_examples
    from smalltune.models import builtin_path, load_tokenizer

    tok = load_tokenizer(str(builtin_path("smollm2-135m-instruct")))
    items, _ = tokenize_examples(tok, load_examples(DEMO / "train.jsonl"), SETTINGS["max_length"], SYSTEM)
    lengths = [len(x.input_ids) for x in items]

    def ratio(group: bool) -> float:
        per = []
        for seed in range(shuffles):
            batches = batch_indices(lengths, SETTINGS["batch_size"], seed, group)
            per.append(sum(len(b) * max(lengths[i] for i in b) for b in batches) / sum(lengths))
        return round(statistics.mean(per), 3)

    return {"smalltune_grouped": ratio(True), "shuffled_like_trl": ratio(False), "shuffles": shuffles}


def flops_per_token(method: str) -> float:
    from transformers import AutoConfig

    from smalltune.models import builtin_path

    c = AutoConfig.from_pretrained(builtin_path("smollm2-135m-instruct"))
    d, layers, ff, v = c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size
    kv = c.num_key_value_heads * (d // c.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * ff  # q, o, k, v, gate/up/down
    n = layers * per_layer + d * v  # + the output projection (tied to the input embedding)
    return (6 if method == "full" else 4) * n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    p.add_argument("--rounds", type=int, default=2, help="smalltune/TRL pairs per method (order alternates)")
    p.add_argument("--methods", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="both sides in fp32, or both under bf16 autocast with fp32 weights")
    p.add_argument("--compile", action="store_true", help="smalltune with train.compile=true (TRL unchanged)")
    p.add_argument("--output", type=Path, default=None, help="default results/speed_vs_trl[-bf16][-compile].json")
    p.add_argument("--padding-only", action="store_true", help="only add the padding count to an existing result file")
    args = p.parse_args()
    default_output = RESULTS / ("speed_vs_trl" + ("-bf16" if args.precision == "bf16" else "")
                                + ("-compile" if args.compile else "") + ".json")
    args.output = args.output or default_output
    if args.padding_only:
        result = json.loads(args.output.read_text())
        result["padding_positions_per_real_token"] = padding_overhead()
        atomic_text(args.output, json.dumps(result, indent=1))
        print(json.dumps(result["padding_positions_per_real_token"]))
        return
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(json.dumps({"matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()}}), flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            for i in range(args.rounds):
                for tool in ("smalltune", "trl") if i % 2 == 0 else ("trl", "smalltune"):
                    r = RUNNERS[tool](method, args.steps, Path(tmp) / f"{tool}-{method}-{i}", args.precision,
                                      args.compile)
                    runs.append({"method": method, "tool": tool, "round": i, **r})
                    print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for method in args.methods:
        tps = {tool: [r["tokens_per_s"] for r in runs if r["method"] == method and r["tool"] == tool] for tool in RUNNERS}
        fpt = flops_per_token(method)
        summary[method] = {
            **{f"{tool}_tokens_per_s": {"mean": round(statistics.mean(v), 1), "runs": [round(x, 1) for x in v]}
               for tool, v in tps.items()},
            "ratio_smalltune_over_trl": round(statistics.mean(tps["smalltune"]) / statistics.mean(tps["trl"]), 3),
            **{f"{tool}_validation_loss": [r["validation_loss"] for r in runs if r["method"] == method and r["tool"] == tool]
               for tool in RUNNERS},
            "flops_per_token": fpt,
            **{f"{tool}_gflops": round(statistics.mean(v) * fpt / 1e9, 1) for tool, v in tps.items()},
            **{f"{tool}_share_of_{dtype}_peak": round(statistics.mean(v) * fpt / peaks[dtype], 3)
               for tool, v in tps.items() for dtype in dict.fromkeys(["fp32", args.precision])},
        }
    result = {"experiment": "speed_vs_trl", "date": time.strftime("%Y-%m-%d"), "machine": machine()["cpu"],
              "threads": torch.get_num_threads(), "torch": torch.__version__, "settings": {**SETTINGS, "steps": args.steps,
              "rounds": args.rounds, "precision": args.precision, "smalltune_compile": args.compile}, "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
              "runs": runs, "summary": summary, "padding_positions_per_real_token": padding_overhead(),
              "command": f"python benchmarks/speed_vs_trl.py --steps {args.steps} --rounds {args.rounds}"
                         + (f" --precision {args.precision}" if args.precision != "fp32" else "")
                         + (" --compile" if args.compile else "")
                         + (f" --methods {' '.join(args.methods)}" if args.methods != ["lora", "full"] else "")
                         + (f" --output {args.output}" if args.output != default_output else "")}
    atomic_text(args.output, json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
