"""Paraphrase augmentation: the generator rewrites each prompt in a few fixed styles (greedy, reproducible).

New wordings of the same question teach the model that the answer does not hang on the exact
words, the "paraphrasing with another language model" of the data-augmentation literature (see
"A Survey of Data Augmentation Approaches for NLP", arXiv 2105.03075). Variant ``k`` of an example
uses style ``k``, so several variants differ without sampling.
"""

from __future__ import annotations

from .base import METHODS, Job, Method, candidate, clean, request

STYLES = (
    "in different words",
    "the way someone would type it quickly in a chat: short and informal",
    "as one polite, complete sentence",
    "starting with a different word than the original",
)
TEMPLATE = ("Rewrite the message below {style}. Keep its meaning and every name, number and date in it. "
            "Do not answer it. Reply with the rewritten message only.\n\n{prompt}")
FILTERS = ("empty", "echo", "copy", "meaning", "leakage", "duplicate")


def produce(jobs: list[Job], generate, options=None) -> list:
    convs = [request(TEMPLATE.format(style=STYLES[j.variant], prompt=j.source.prompt)) for j in jobs]
    return [candidate(j, clean(reply), "paraphrase") for j, reply in zip(jobs, generate(convs))]


METHODS.register("paraphrase")(Method(produce=produce, legs=1, filters=FILTERS, variants=lambda options: len(STYLES)))
