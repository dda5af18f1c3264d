"""Task quality on held-out questions: loss, perplexity and token accuracy on the reference
answers; exact match, ROUGE-L and key-fact recall of greedy answers. Base vs fine-tuned."""

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


def requests(ctx) -> list[tuple[list[str], int | None]]:
    return [(test_prompts(ctx)[1], None)]


def run(ctx) -> dict:
    examples, prompts = test_prompts(ctx)
    out = {m: ctx.generate(prompts, m, desc="task answers") for m in MODELS}
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
