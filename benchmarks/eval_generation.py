"""Benchmark: batched generation (KV cache, left padding) vs one prompt at a time, built-in model.

Evaluation answers hundreds of prompts per model (memorization, robustness), so batching is what
keeps `smalltune evaluate --quick` within a couple of minutes on a CPU. Both arms use the same
prompts (the demo's training questions), greedy decoding and the same max_new_tokens; the ratio
is measured in one process so machine load affects both alike.

    .venv/bin/python benchmarks/eval_generation.py --n 32 --max-new-tokens 32 --batch-size 16
    .venv/bin/python benchmarks/eval_generation.py --prefix --n 200 --max-new-tokens 24 --batch-size 64
    .venv/bin/python benchmarks/eval_generation.py --drop-finished --n 256 --max-new-tokens 96 --batch-size 64
    .venv/bin/python benchmarks/eval_generation.py --batch-sizes 64 128 256 --n 256 --max-new-tokens 64
    .venv/bin/python benchmarks/eval_generation.py --grow-cache --n 128 --max-new-tokens 96 --batch-size 64
    .venv/bin/python benchmarks/eval_generation.py --continuous --n 400 --max-new-tokens 96 --batch-size 128

Results are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="prompts")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prefix", action="store_true",
                    help="instead: the batch's shared opening run once vs plain left padding, on the general questions")
    ap.add_argument("--drop-finished", action="store_true",
                    help="instead: finished rows leave the batch vs model.generate, on the demo's training and "
                    "test questions (answers of 10-90 tokens, as the task, robustness and memorization probes ask)")
    ap.add_argument("--grow-cache", action="store_true",
                    help="instead: the KV cache that grows by doubling vs transformers' DynamicCache (torch.cat per "
                    "step), on the demo's training and test questions")
    ap.add_argument("--continuous", action="store_true",
                    help="instead: ended answers' places go to the next prompts vs one batch after another, on the "
                    "demo's training and test questions (each answer capped as the task probe caps it) and as many "
                    "general questions (24 tokens, as the forgetting probe asks them)")
    ap.add_argument("--batch-sizes", type=int, nargs="+",
                    help="instead: these generation batch sizes against one another, alternating, on the demo's "
                    "training and test questions")
    ap.add_argument("--rounds", type=int, default=2, help="--batch-sizes: rounds (each size once per round)")
    args = ap.parse_args()
    if args.batch_sizes:
        return batch_sizes(args, demo_prompts(args))
    if args.prefix:
        return alternate(args, "share_prefix", general_prompts(args))
    if args.drop_finished:
        return alternate(args, "drop_finished", demo_prompts(args))
    if args.grow_cache:
        return alternate(args, "grow_cache", demo_prompts(args))
    if args.continuous:
        return alternate(args, "continuous", *evaluation_mix(args))

    import torch

    from smalltune.data import load_examples
    from smalltune.generate import GenerationSettings, generate
    from smalltune.models import load_model

    data = Path(__file__).resolve().parents[1] / "examples" / "dental" / "train.jsonl"
    convs = [ex.prompt() for ex in load_examples(data)[: args.n]]
    model, tok = load_model(args.model)
    model.eval()
    batched = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    single = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=1)
    generate(model, tok, convs[:2], single)  # warm-up: first-call allocations are not the method's cost

    t = time.perf_counter()
    out_single = generate(model, tok, convs, single)
    t_single = time.perf_counter() - t
    t = time.perf_counter()
    out_batched = generate(model, tok, convs, batched)
    t_batched = time.perf_counter() - t
    same = sum(a == b for a, b in zip(out_single, out_batched))
    print(json.dumps({
        "prompts": len(convs), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "one_at_a_time_s": round(t_single, 2), "batched_s": round(t_batched, 2),
        "speedup": round(t_single / t_batched, 2), "prompts_per_s_batched": round(len(convs) / t_batched, 2),
        "identical_answers": f"{same}/{len(convs)}",
    }, indent=2))


def general_prompts(args) -> list[str]:
    """The general questions of the forgetting probe (no system prompt: the template's default one is the
    shared opening)."""
    from smalltune.data.reference import general_questions
    from smalltune.data.tokenize import render
    from smalltune.models import load_tokenizer

    tok = load_tokenizer(args.model)
    return [render(tok, [{"role": "user", "content": q}], add_generation_prompt=True)
            for _, q, _ in general_questions()[: args.n]]


def demo_examples(args) -> list:
    """The demo's first ``--n`` training then test examples."""
    from smalltune.data import load_examples

    demo = Path(__file__).resolve().parents[1] / "examples" / "dental"
    return (load_examples(demo / "train.jsonl") + load_examples(demo / "test.jsonl"))[: args.n]


def demo_prompts(args) -> list[str]:
    """The demo's training then test questions with its system prompt, as `smalltune evaluate` renders them."""
    from smalltune.data.tokenize import render
    from smalltune.models import load_tokenizer

    tok = load_tokenizer(args.model)
    system = "You are the receptionist at Brightside Dental."
    return [render(tok, ex.prompt(system), add_generation_prompt=True) for ex in demo_examples(args)]


def evaluation_mix(args) -> tuple[list[str], list[int]]:
    """Prompts with answer caps of several lengths, as one evaluation pass asks them: the demo's questions (twice
    the reference answer's tokens plus the slack, within ``--max-new-tokens``) and general questions (24 tokens)."""
    from smalltune.evaluate.probes.forgetting import ANSWER_TOKENS
    from smalltune.evaluate.probes.task import ANSWER_FACTOR, ANSWER_SLACK
    from smalltune.models import load_tokenizer

    tok = load_tokenizer(args.model)
    limits = [min(ANSWER_FACTOR * len(tok(ex.target, add_special_tokens=False).input_ids) + ANSWER_SLACK,
                  args.max_new_tokens) for ex in demo_examples(args)]
    general = general_prompts(args)
    return demo_prompts(args) + general, limits + [min(ANSWER_TOKENS, args.max_new_tokens)] * len(general)


def alternate(args, setting: str, prompts: list[str], limits: list[int] | None = None) -> None:
    """The prompts answered with ``setting`` on and off, alternating (on, off, off, on), in one process."""
    import _evidence as E
    from smalltune.generate import GenerationSettings, generate_text
    from smalltune.models import load_model

    model, tok = load_model(args.model)
    times: dict[bool, list[float]] = {True: [], False: []}
    answers = {}
    for rnd in range(2):
        for on in ((True, False) if rnd == 0 else (False, True)):
            t = time.perf_counter()
            answers[on] = generate_text(model, tok, prompts, GenerationSettings(
                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, **{setting: on}), limits=limits)
            times[on].append(round(time.perf_counter() - t, 2))
    lengths = [len(tok(a, add_special_tokens=False).input_ids) for a in answers[True]]
    print(json.dumps({
        "setting": setting, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "machine": E.machine(), "answer_tokens_mean": round(
            sum(lengths) / len(lengths), 1), "answer_tokens_max": max(lengths), f"{setting}_s": times[True],
        "without_s": times[False], "speedup": round(min(times[False]) / min(times[True]), 2),
        "identical_answers": f"{sum(a == b for a, b in zip(answers[True], answers[False]))}/{len(prompts)}",
    }, indent=2))


def batch_sizes(args, prompts: list[str]) -> None:
    """The prompts answered at each generation batch size, the order reversed every other round, in one process:
    larger batches keep more rows decoding together as answers end, at the cost of more padding per batch."""
    import _evidence as E
    from smalltune.generate import GenerationSettings, generate_text
    from smalltune.models import load_model

    model, tok = load_model(args.model)
    times: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    answers = {}
    for rnd in range(args.rounds):
        for b in (args.batch_sizes if rnd % 2 == 0 else args.batch_sizes[::-1]):
            t = time.perf_counter()
            answers[b] = generate_text(model, tok, prompts, GenerationSettings(max_new_tokens=args.max_new_tokens,
                                                                               batch_size=b))
            times[b].append(round(time.perf_counter() - t, 2))
    first = args.batch_sizes[0]
    print(json.dumps({
        "setting": "batch_size", "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "machine": E.machine(), "seconds": {str(b): t for b, t in times.items()},
        "speedup_vs_first": {str(b): round(min(times[first]) / min(t), 2) for b, t in times.items()},
        "identical_to_first": {str(b): f"{sum(x == y for x, y in zip(answers[first], answers[b]))}/{len(prompts)}"
                               for b in args.batch_sizes},
    }, indent=2))


if __name__ == "__main__":
    main()
