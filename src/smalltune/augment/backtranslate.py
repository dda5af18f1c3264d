"""Back-translation: the generator translates each prompt into a pivot language and back.

The round trip rewords a sentence while keeping its meaning (Sennrich et al., "Improving Neural
Machine Translation Models with Monolingual Data", arXiv 1511.06709; used for augmentation in
"Unsupervised Data Augmentation for Consistency Training", arXiv 1904.12848). A general chat model
is the translator here, and a small one may not translate at all, so the first leg is *checked*:
the pivot text must exist and share few words with the source (the ``round_trip`` filter). A
source whose pivot fails is not sent back, and the command says how many round trips failed.
Variant ``k`` uses the ``k``-th pivot language (``--pivot French,German``).
"""

from __future__ import annotations

from .base import METHODS, Job, Method, candidate, clean, request
from .filters import FILTERS as RULES
from .filters import FilterContext

TEMPLATE = "Translate the text below into {language}. Reply with the {language} translation only.\n\n{text}"
FILTERS = ("round_trip", "empty", "echo", "copy", "meaning", "leakage", "duplicate")


def produce(jobs: list[Job], generate, options) -> list:
    languages = [options.pivots[j.variant] for j in jobs]
    pivots = [clean(r) for r in generate([request(TEMPLATE.format(language=lang, text=j.source.prompt))
                                          for j, lang in zip(jobs, languages)])]
    out = [candidate(j, "", "backtranslate", pivot=p) for j, p in zip(jobs, pivots)]
    for c, lang in zip(out, languages):
        c.meta = {"pivot_language": lang, "pivot_text": c.pivot}
    check = FilterContext(max_pivot_overlap=options.max_pivot_overlap)
    ok = [c for c in out if RULES.get("round_trip")(c, check) is None]  # only real translations go back
    if ok:
        back = generate([request(TEMPLATE.format(language=options.source_language, text=c.pivot)) for c in ok])
        for c, reply in zip(ok, back):
            c.text = clean(reply)
    return out


METHODS.register("backtranslate")(Method(produce=produce, legs=2, filters=FILTERS,
                                         variants=lambda options: len(options.pivots)))
