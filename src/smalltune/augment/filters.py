"""The rules every generated candidate must pass before it becomes a training example: one rule each.

A filter is ``rule(candidate, ctx) -> str | None``: None keeps the candidate, a string says why not
(the detail kept in the counts file). A command lists the filters it runs, in order; the first that
fails is the candidate's rejection reason, so the counts per reason add up to the rejected total.

The rules are deliberately plain string tests a person can check by eye: a 135M generator mostly
fails in plain ways (it answers instead of rephrasing, echoes the request, drops a name, invents a
price). Reused rather than re-written: key facts are matched with evaluation's ``key_fact_recall``,
numbers and proper nouns are found by self-distillation's ``key_facts``, near-duplicates come from
the audit's MinHash index (``audit/similar.py``) at the audit's threshold and text normalisation.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from ..audit.text import jaccard, normalise, shingles
from ..data.example import Example
from ..evaluate.metrics import content_words, key_fact_recall, words
from ..registry import Registry


@dataclass
class Candidate:
    """One generated prompt (augment) or question/answer pair (synth), with what it came from."""

    text: str  # the new prompt (augment) or the generated question (synth)
    source_text: str  # what it rephrases (the original prompt) or asks about (the passage's text, without its title)
    source_id: str
    method: str
    answer: str = ""  # the answer it is trained with: the user's (augment) or the generated one (synth)
    passage: str | None = None  # synth: the passage the answer must be grounded in
    pivot: str | None = None  # backtranslate: the text in the pivot language
    facts: list[str] = field(default_factory=list)  # names, numbers and key facts the text must keep
    payload: Any = None  # what the writer needs to build the record (raw record, passage, ...)
    meta: dict = field(default_factory=dict)  # extra metadata for the record (pivot language, section, ...)
    order: tuple = ()  # position in the output (source index, variant)
    slot: int = -1  # index inside the chunk being filtered (set by FilterContext.prepare)
    reason: str | None = None  # the filter that rejected it
    detail: str = ""  # why, in words


Filter = Callable[[Candidate, "FilterContext"], "str | None"]
FILTERS: Registry[Filter] = Registry("generation filter")

# Words of a request that a real user prompt would not contain: the generator echoed our instruction.
ECHO_MARKERS = ("rephrase", "rewrite", "rewritten", "paraphrase", "translat", "original question", "here is",
                "here's", "question:", "reply with", "passage", "sure,", "certainly",
                # the generator replying as an assistant instead of writing the user's message
                "i'm sorry", "i am sorry", "i'm not sure", "i'm here to help", "i can help", "happy to help", "as an ai",
                "how can i help", "how may i help", "would you like", "great question", "wonderful question",
                "i'm glad", "i'm so glad")
# A synthetic question that points at its source instead of asking about the topic.
READING_MARKERS = ("this text", "in the text", "according to", "mentioned", "the section", "this section")
MAX_QUESTION_WORDS = 30
REFUSAL = re.compile(r"not (?:in|mentioned in|stated in) the (?:passage|text)|(?:passage|text) does not|"
                     r"no information|i (?:don't|do not) know|cannot answer|can't answer", re.I)
# Frequent function words of common pivot languages: a text in that language contains some of them.
# Other pivots are checked only by their overlap with the source.
PIVOT_WORDS = {
    "french": "le la les de des du un une est et vous nous je pour dans que qui pas ce sont avec",
    "german": "der die das und ist nicht ich sie wir zu den ein eine mit von auf für sind",
    "spanish": "el la los las de del que y en un una es por para con no se usted",
    "italian": "il la le di che e un una per non con sono del della si lei",
    "portuguese": "o a os as de do da que e um uma para com não se você",
    "dutch": "de het een en van is niet ik je u wij zijn voor met op",
}
_AFTER_TITLE = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Prof|St)\.\s+([A-Z][\w'’-]*)")
QUESTION_WORDS = frozenset("what when where who whom whose which why how is are am do does did can could will would "
                           "should shall may might have has was were".split())


def stems(items) -> set[str]:
    """Words with a plural or possessive 's' dropped: 'babies' still differs from 'baby', 'slots' does not from 'slot'."""
    return {w[:-2] if w.endswith("'s") else w[:-1] if len(w) > 3 and w.endswith("s") else w for w in items}


def text_facts(text: str) -> list[str]:
    """Numbers, e-mail/web addresses and proper nouns of ``text`` (self-distillation's rule).

    >>> text_facts("Can Dr. Sethi see my son on Friday at 3 pm?")
    ['3', 'Dr', 'Friday', 'Sethi']
    """
    from ..train.targets.self_distill import key_facts

    facts = key_facts(Example([{"role": "user", "content": ""}, {"role": "assistant", "content": text}], "x"))
    # That rule reads "Dr. Sethi" as a sentence break before "Sethi": names after a title count too.
    return list(dict.fromkeys(facts + _AFTER_TITLE.findall(text)))


def prompt_facts(prompt: str, record_facts=()) -> list[str]:
    """What a variant of ``prompt`` must keep: its numbers and names, and the record's ``key_facts`` it contains."""
    extra = [str(f) for f in record_facts or () if str(f).strip() and key_fact_recall(prompt, [str(f)])]
    return list(dict.fromkeys(text_facts(prompt) + extra))


def pivot_overlap(source: str, pivot: str, facts=()) -> float | None:
    """Share of the pivot text's ASCII words that are words of the source, names and numbers left out.

    A real translation into French or German shares few words with the English source; a generator
    that copies or answers in English shares most. None when the source has too few ordinary words
    to tell (e.g. "Summit Mutual?").
    """
    skip = {f.lower() for f in facts}
    ascii_words = lambda t: [w for w in re.findall(r"[a-z]+", t.lower()) if w not in skip]  # noqa: E731
    mine, theirs = ascii_words(source), ascii_words(pivot)
    if len(mine) < 2:
        return None
    return sum(w in set(mine) for w in theirs) / len(theirs) if theirs else 0.0


@dataclass
class FilterContext:
    """Settings of the rules, plus the texts candidates must not duplicate or leak into."""

    threshold: float = 0.8  # near-duplicate: Jaccard of word shingles at or above this (the audit's default)
    min_kept: float = 0.25  # a variant keeps at least this share of its prompt's content words
    max_length_ratio: float = 3.0  # a variant has at most this many times its prompt's words (+8)
    max_pivot_overlap: float = 0.5  # a pivot text sharing more of the source's words is not a translation
    min_support: float = 0.75  # share of an answer's content words that must occur in its passage
    held_out: list[str] = field(default_factory=list)  # normalised validation/test prompts
    held_out_ids: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # normalised prompts already in the data or accepted
    kept_ids: list[str] = field(default_factory=list)
    _links: dict[int, list[tuple[tuple[str, int], float]]] = field(default_factory=dict)
    _accepted_slots: set[int] = field(default_factory=set)

    def prepare(self, candidates: list[Candidate]) -> None:
        """Find each candidate's near-duplicates among itself, what is kept so far and the held-out prompts."""
        from ..audit.similar import SimilarityIndex

        texts = {"new": [normalise(c.text) for c in candidates], "kept": self.kept, "held_out": self.held_out}
        index = SimilarityIndex.build(texts, self.threshold)
        links: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for group in index.groups:  # identical texts
            for x in group:
                links[x] += [(y, 1.0) for y in group if y != x]
        for g, h, sim in index.pairs:
            for x in index.groups[g]:
                for y in index.groups[h]:
                    links[x].append((y, sim))
                    links[y].append((x, sim))
        self._links = {i: [(index.owner[y], sim) for y, sim in links[i]] for i in range(len(candidates))}
        self._accepted_slots = set()
        for i, c in enumerate(candidates):
            c.slot = i

    def accept(self, candidate: Candidate) -> None:
        self._accepted_slots.add(candidate.slot)
        self.kept.append(normalise(candidate.text))
        self.kept_ids.append(f"{candidate.source_id} ({candidate.method})")

    def neighbours(self, candidate: Candidate, split: str) -> list[tuple[int, float]]:
        return [(j, sim) for (s, j), sim in self._links.get(candidate.slot, []) if s == split]

    def judge(self, candidate: Candidate, names) -> bool:
        """Run the filters ``names`` in order; record the first failure on the candidate; True when it passes."""
        for name in names:
            detail = FILTERS.get(name)(candidate, self)
            if detail:
                candidate.reason, candidate.detail = name, detail
                return False
        return True


def _numbers(text: str) -> list[str]:
    return [w for w in words(text) if any(ch.isdigit() for ch in w)]


def is_question(text: str) -> bool:
    """A question mark anywhere, or an opening question word ("what time do you open" typed without one)."""
    first = words(text)[:1]
    return "?" in text or bool(first and first[0] in QUESTION_WORDS)


@FILTERS.register("round_trip")
def round_trip(c: Candidate, ctx: FilterContext) -> str | None:
    """Back-translation: the pivot text exists, keeps the source's numbers, is not the source in disguise, and
    (for six common languages) reads as the pivot language."""
    if c.pivot is None:
        return None
    if not c.pivot.strip():
        return "the pivot translation is empty"
    overlap = pivot_overlap(c.source_text, c.pivot, c.facts)
    if overlap is not None and overlap > ctx.max_pivot_overlap:
        return f"the pivot text shares {overlap:.0%} of its words with the source: not a translation"
    lost = [n for n in re.findall(r"\d+", c.source_text) if n not in re.findall(r"\d+", c.pivot)]
    if lost:
        return f"the pivot text lost the number {lost[0]!r}"
    language = str(c.meta.get("pivot_language", "")).lower()
    expected = set(PIVOT_WORDS.get(language, "").split())
    if expected and len(words(c.pivot)) >= 3 and not expected & set(words(c.pivot)):
        return f"the pivot text has none of {language.title()}'s common words: not {language.title()}"
    return None


@FILTERS.register("empty")
def empty(c: Candidate, ctx: FilterContext) -> str | None:
    if not c.text.strip():
        return "nothing generated"
    if not c.answer.strip():
        return "no answer generated"
    return None


@FILTERS.register("echo")
def echo(c: Candidate, ctx: FilterContext) -> str | None:
    """Not a rephrasing: echoes the request, rambles, or answers the question instead of asking it."""
    low, source = c.text.lower(), c.source_text.lower()
    marker = next((m for m in ECHO_MARKERS if m in low and m not in source), None)
    if marker:
        return f"echoes the request ({marker.strip(',:')!r})"
    n, m = len(words(c.text)), len(words(c.source_text))
    if n > ctx.max_length_ratio * m + 8:
        return f"{n} words for a {m}-word prompt"
    if c.passage is None and c.answer:
        mine = stems(content_words(c.text))
        from_answer = mine & stems(content_words(c.answer)) - stems(content_words(c.source_text))
        if len(from_answer) >= max(3, len(mine) / 2):
            return "answers the question instead of asking it"
    return None


@FILTERS.register("copy")
def copy(c: Candidate, ctx: FilterContext) -> str | None:
    """A copy of the source: identical after normalisation, or a near-duplicate of it."""
    a, b = normalise(c.text), normalise(c.source_text)
    if a == b:
        return "identical to its source"
    sim = jaccard(shingles(a), shingles(b))
    return f"near-copy of its source (similarity {sim:.2f})" if sim >= ctx.threshold else None


@FILTERS.register("meaning")
def meaning(c: Candidate, ctx: FilterContext) -> str | None:
    """Meaning kept: every name, number and key fact of the prompt, no new number, still a question if it was
    one, and enough of the prompt's content words."""
    missing = [f for f in c.facts if not key_fact_recall(c.text, [f])]
    if missing:
        return f"lost {missing[0]!r}"
    added = [n for n in _numbers(c.text) if n not in _numbers(c.source_text)]
    if added:
        return f"adds the number {added[0]!r}"
    if is_question(c.source_text) and not is_question(c.text):
        return "turns a question into a statement"
    src = stems(content_words(c.source_text))
    if src:
        kept = len(src & stems(content_words(c.text))) / len(src)
        if kept < ctx.min_kept:
            return f"keeps {kept:.0%} of the prompt's content words (< {ctx.min_kept:.0%})"
    return None


@FILTERS.register("question")
def question(c: Candidate, ctx: FilterContext) -> str | None:
    """Synth: the generated question reads like a user's question, not like a reading exercise."""
    text = c.text.strip()
    if not text:
        return "nothing generated"
    if not is_question(text):
        return "not a question"
    low = text.lower()
    marker = next((m for m in ECHO_MARKERS + READING_MARKERS if m in low), None)
    if marker:
        return f"echoes the request ({marker.strip(',:')!r})"
    n = len(words(text))
    return f"{n} words: too long for a question" if n > MAX_QUESTION_WORDS else None


@FILTERS.register("grounding")
def grounding(c: Candidate, ctx: FilterContext) -> str | None:
    """Synth: the answer is supported by its passage (numbers, names and most content words occur in it)."""
    if c.passage is None:
        return None
    if REFUSAL.search(c.answer):
        return "the answer says the passage does not answer it"
    passage_words = set(words(c.passage))
    missing = [n for n in _numbers(c.answer) if n not in passage_words]
    if missing:
        return f"number {missing[0]!r} is not in the passage"
    names = [f for f in text_facts(c.answer) if not any(ch.isdigit() for ch in f)]
    missing = [f for f in names if not key_fact_recall(c.passage, [f])
               and not (f.endswith("s") and key_fact_recall(c.passage, [f[:-1]]))]  # "Fridays"
    if missing:
        return f"{missing[0]!r} is not in the passage"
    mine = stems(content_words(c.answer))
    if not mine & stems(content_words(c.source_text)):
        return "the answer says nothing from the passage's text"
    support = len(mine & stems(passage_words)) / len(mine) if mine else 0.0
    if support < ctx.min_support:
        return f"{support:.0%} of the answer's content words occur in the passage (< {ctx.min_support:.0%})"
    return None


@FILTERS.register("leakage")
def leakage(c: Candidate, ctx: FilterContext) -> str | None:
    """No near-duplicate of a validation or test prompt: it would inflate held-out scores."""
    hits = ctx.neighbours(c, "held_out")
    if not hits:
        return None
    j, sim = max(hits, key=lambda h: h[1])
    return f"near-duplicate of held-out prompt {ctx.held_out_ids[j]} (similarity {sim:.2f})"


@FILTERS.register("duplicate")
def duplicate(c: Candidate, ctx: FilterContext) -> str | None:
    """No near-duplicate of a prompt already in the data or of a variant accepted before it."""
    hits = ctx.neighbours(c, "kept")
    if hits:
        j, sim = max(hits, key=lambda h: h[1])
        return f"near-duplicate of {ctx.kept_ids[j]} (similarity {sim:.2f})"
    earlier = [(j, sim) for j, sim in ctx.neighbours(c, "new") if j in ctx._accepted_slots]
    if earlier:
        return f"near-duplicate of another variant (similarity {max(s for _, s in earlier):.2f})"
    return None
