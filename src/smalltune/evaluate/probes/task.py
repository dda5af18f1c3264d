"""Task quality on held-out questions: loss, perplexity and token accuracy on the reference
answers; exact match, ROUGE-L and key-fact recall of greedy answers. Base vs fine-tuned.

Each answer is generated up to twice its reference answer's length plus ``ANSWER_SLACK`` tokens (at most
``eval.max_new_tokens``): an answer that has not given the facts by then is judged on what it said so far. On the demo
the base model's answers ran to 87 of 96 tokens on average against references of 22; the cap changed key-fact
recall in 1 of 216 answers per model and left the base 57% of its decoded tokens (benchmarks/README.md, "Answers as
long as the question needs").
"""

from __future__ import annotations

from ...data.tokenize import tokenize_examples
from .. import metrics as M
from ..context import MODELS, weighted_acc, weighted_loss, weighted_ppl
from ..results import metric
from . import PROBES, Probe


def test_prompts(ctx) -> tuple[list, list[str]]:
    """The capped held-out examples and their rendered prompts (shared with robustness and diversity)."""
    examples = ctx.sample(ctx.test, ctx.caps.test, "test")
    return examples, [ctx.render(ex.prompt(ctx.system_prompt)) for ex in examples]


ANSWER_FACTOR, ANSWER_SLACK = 2, 8  # answer tokens: ANSWER_FACTOR x the reference's + ANSWER_SLACK


def answer_limits(ctx, examples) -> list[int]:
    """New tokens each held-out question's answer may take: twice its reference's plus the slack, within the caps."""
    count = lambda text: len(ctx.tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    return [min(ANSWER_FACTOR * count(ex.target) + ANSWER_SLACK, ctx.caps.max_new_tokens) for ex in examples]


def answers(ctx, examples, prompts) -> dict[str, list[str]]:
    """Each model's greedy answers to the held-out questions (the task, robustness and diversity probes share them)."""
    limits = answer_limits(ctx, examples)
    return {m: ctx.generate(prompts, m, limits, "task answers") for m in MODELS}


def requests(ctx) -> list[tuple[list[str], list[int]]]:
    examples, prompts = test_prompts(ctx)
    return [(prompts, answer_limits(ctx, examples))]


def run(ctx) -> dict:
    examples, prompts = test_prompts(ctx)
    out = answers(ctx, examples, prompts)
    items, _ = tokenize_examples(ctx.tokenizer, examples, ctx.recipe.data.max_length, ctx.system_prompt)
    losses = {m: ctx.item_losses(items, m) for m in MODELS}
    seed = ctx.seed
    result = {
        "loss": metric(losses["base"], losses["finetuned"], weighted_loss, seed),
        "perplexity": metric(losses["base"], losses["finetuned"], weighted_ppl, seed),
        "token_accuracy": metric(losses["base"], losses["finetuned"], weighted_acc, seed),
    }
    per = {name: {m: [fn(o, ex) for o, ex in zip(out[m], examples)] for m in MODELS}
           for name, fn in SCORES.items()}
    for name in SCORES:
        result[name] = metric(per[name]["base"], per[name]["finetuned"], seed=seed)
    result["source"] = ctx.test_source
    result["criteria"] = {"answer_tokens": f"{ANSWER_FACTOR} x the reference answer's + {ANSWER_SLACK}",
                          "max_new_tokens": ctx.caps.max_new_tokens}
    ctx.samples = [
        {"id": ex.id, "category": ex.category, "question": ex.prompt_text, "reference": ex.target,
         "base": b, "finetuned": f, "key_facts": list(ex.meta.get("key_facts") or [])}
        for ex, b, f in zip(examples, out["base"], out["finetuned"])
    ]
    return result


SCORES = {
    "exact_match": lambda out, ex: M.exact_match(out, ex.target),
    "rouge_l": lambda out, ex: M.rouge_l(out, ex.target),
    "key_fact_recall": lambda out, ex: M.key_fact_recall(out, ex.meta.get("key_facts") or []),
}

PROBES.register("task")(Probe("quality on held-out questions", run,
                              lambda ctx: None if ctx.test else "no held-out examples", requests))
