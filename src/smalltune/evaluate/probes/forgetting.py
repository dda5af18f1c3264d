"""Forgetting of general ability: perplexity on general reference text and accuracy on general
questions (country capitals, trivia), base vs fine-tuned on the same inputs.

The general questions are asked without the run's system prompt: they measure what the model
still knows, not whether it stays in its fine-tuned role. At least 200 are asked in every mode:
an accuracy on n questions has a binomial standard deviation of sqrt(p(1-p)/n), 8.8 points at
n = 32 and 3.5 at n = 200 (p = 0.5): a drop of 10 points is within the noise of 32 questions and
outside that of 200.
"""

from __future__ import annotations

import numpy as np

from ...data.reference import general_questions
from ...data.tokenize import tokenize_plain
from .. import metrics as M
from ..context import MODELS, weighted_ppl
from ..results import _clean, metric
from . import PROBES, Probe

ANSWER_TOKENS = 24  # short factual answers come first; longer generations only cost time (docs/evaluation.md)


def _questions(ctx) -> list[tuple[str, str, tuple[str, ...]]]:
    """(kind, question, accepted answers): a seeded sample of the pool, each kind in its share of the pool."""
    pool = general_questions()
    n = min(ctx.caps.probe_questions, len(pool))
    kinds = list(dict.fromkeys(k for k, _, _ in pool))
    out, left = [], n
    for i, kind in enumerate(kinds):
        items = [q for q in pool if q[0] == kind]
        take = left if i == len(kinds) - 1 else round(n * len(items) / len(pool))
        out += ctx.sample(items, take, kind)
        left -= take
    return out


def is_correct(answer: str, accepted: tuple[str, ...]) -> bool:
    """The short-answer rule (:func:`metrics.contains_answer`) against any accepted spelling."""
    return any(M.contains_answer(answer, ref) for ref in accepted)


def requests(ctx) -> list[tuple[list[str], int]]:
    prompts = [ctx.render([{"role": "user", "content": q}]) for _, q, _ in _questions(ctx)]
    return [(prompts, min(ANSWER_TOKENS, ctx.caps.max_new_tokens))]


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
    (prompts, new), = requests(ctx)
    answers = {m: ctx.generate(prompts, m, new, "general questions") for m in MODELS}
    correct = {m: [float(is_correct(a, refs)) for a, (_, _, refs) in zip(answers[m], questions)] for m in MODELS}
    res["general_accuracy"] = metric(correct["base"], correct["finetuned"], seed=ctx.seed)
    for kind in ("capital", "trivia"):
        keep = [k == kind for k, _, _ in questions]
        res[f"{kind}_accuracy"] = metric([c if k else None for c, k in zip(correct["base"], keep)],
                                         [c if k else None for c, k in zip(correct["finetuned"], keep)], seed=ctx.seed)
    res["questions"] = {"asked": len(questions), "pool": len(general_questions()),
                        "max_new_tokens": min(ANSWER_TOKENS, ctx.caps.max_new_tokens)}
    res["examples"] = [{"question": q, "answer": refs[0], "base": b, "finetuned": f}
                       for (_, q, refs), b, f in list(zip(questions, answers["base"], answers["finetuned"]))[:5]]
    res["matching_rule"] = ("correct when at least half (rounded up) of an accepted reference answer's content words "
                            "appear as whole words")
    return res


def _applies(ctx):
    return None if ctx.reference_texts else "no reference text"


PROBES.register("forgetting")(Probe("general-text perplexity and general questions", run, _applies, requests))
