"""Diversity of the held-out answers: distinct-1/2 (corpus level) and the repetition rate.

Fine-tuning on a few hundred answers often narrows a model to a handful of stock phrases or
makes it loop; both show here before a user sees them.
"""

from __future__ import annotations

from .. import metrics as M
from ..context import MODELS
from ..results import metric
from . import PROBES, Probe
from .task import answers, requests, test_prompts


def run(ctx) -> dict:
    examples, prompts = test_prompts(ctx)
    out = answers(ctx, examples, prompts)  # cached after the task probe
    n = len(prompts)
    # Corpus-level statistics resample outputs: rows carry an index into one list of texts
    # (base outputs first, then fine-tuned), so the paired bootstrap keeps both models together.
    # Resamples repeat answers, which lowers distinct-n: the CI is recentred on the estimate.
    texts = out["base"] + out["finetuned"]
    res = {}
    for k in (1, 2):
        grams = [M.ngrams(M.words(t), k) for t in texts]  # split once, not once per resample
        stat = lambda rows, grams=grams: M.distinct_of([grams[int(i)] for i in rows[:, 0]])  # noqa: E731
        res[f"distinct_{k}"] = metric(list(range(n)), list(range(n, 2 * n)), stat, ctx.seed, recenter=True)
    res["repetition_rate"] = metric([M.repetition_rate(t) for t in out["base"]],
                                    [M.repetition_rate(t) for t in out["finetuned"]], seed=ctx.seed)
    res["mean_words"] = metric([len(M.words(t)) for t in out["base"]], [len(M.words(t)) for t in out["finetuned"]],
                               seed=ctx.seed)
    return res


PROBES.register("diversity")(Probe("distinct-n and repetition of answers", run,
                                   lambda ctx: None if ctx.test else "no held-out examples", requests))
