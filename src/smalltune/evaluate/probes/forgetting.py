"""Forgetting of general ability: perplexity on general reference text and accuracy on general
questions (country capitals, trivia), base vs fine-tuned on the same inputs.

The general questions are asked without the run's system prompt: they measure what the model
still knows, not whether it stays in its fine-tuned role.
"""

from __future__ import annotations

import numpy as np

from ...data.reference import capital_pairs, general_qa
from ...data.tokenize import tokenize_plain
from .. import metrics as M
from ..context import MODELS, weighted_ppl
from ..results import _clean, metric
from . import PROBES, Probe

ANSWER_TOKENS = 32  # short factual answers; longer generations only cost time


def _questions(ctx) -> list[tuple[str, str, str]]:
    """(kind, question, answer): half capitals, half trivia, seeded."""
    n = ctx.caps.probe_questions
    caps = [("capital", f"What is the capital of {c}?", cap) for c, cap in capital_pairs()]
    qa = [("trivia", q, a) for q, a in general_qa()]
    return ctx.sample(caps, (n + 1) // 2, "capitals") + ctx.sample(qa, n // 2, "trivia")


def run(ctx) -> dict:
    res = {"reference_source": ctx.reference_source}
    texts = ctx.sample(ctx.reference_texts, ctx.caps.reference_paragraphs, "reference")
    items = tokenize_plain(ctx.tokenizer, texts, ctx.recipe.data.max_length)
    rows = {m: np.array(ctx.item_losses(items, m), dtype=float) for m in MODELS}
    res["reference_ppl"] = metric(rows["base"], rows["finetuned"], weighted_ppl, ctx.seed)
    res["reference_ppl"]["paragraphs"] = len(texts)
    # Relative change with its own bootstrap CI (ratio of perplexities on the same resampled paragraphs).
    both = np.concatenate([rows["base"], rows["finetuned"]], axis=1)
    w = rows["base"].shape[1]
    rel = lambda a: weighted_ppl(a[:, w:]) / weighted_ppl(a[:, :w]) - 1  # noqa: E731
    ci = M.bootstrap_ci(both, rel, seed=ctx.seed) if len(both) else [None, None]
    res["reference_ppl_relative_change"] = {"value": _clean(rel(both)) if len(both) else None,
                                            "ci": [_clean(ci[0]), _clean(ci[1])], "n": len(items)}

    questions = _questions(ctx)
    prompts = [ctx.render([{"role": "user", "content": q}]) for _, q, _ in questions]
    answers = {m: ctx.generate(prompts, m, min(ANSWER_TOKENS, ctx.caps.max_new_tokens), "general questions")
               for m in MODELS}
    correct = {m: [float(M.contains_answer(a, ref)) for a, (_, _, ref) in zip(answers[m], questions)] for m in MODELS}
    res["general_accuracy"] = metric(correct["base"], correct["finetuned"], seed=ctx.seed)
    for kind in ("capital", "trivia"):
        keep = [k == kind for k, _, _ in questions]
        res[f"{kind}_accuracy"] = metric([c if k else None for c, k in zip(correct["base"], keep)],
                                         [c if k else None for c, k in zip(correct["finetuned"], keep)], seed=ctx.seed)
    res["examples"] = [{"question": q, "answer": ref, "base": b, "finetuned": f}
                       for (_, q, ref), b, f in list(zip(questions, answers["base"], answers["finetuned"]))[:5]]
    res["matching_rule"] = "correct when at least half (rounded up) of the reference answer's content words appear as whole words"
    return res


def _applies(ctx):
    return None if ctx.reference_texts else "no reference text"


PROBES.register("forgetting")(Probe("general-text perplexity and general questions", run, _applies))
