"""Prompt perturbations for the robustness probe, deterministic for a given seed.

Each perturbation takes the user's question, a seeded ``random.Random`` and the example, and
returns the perturbed variants (an empty list when it does not apply: a one-clause question
cannot be reordered, a test item without rephrasings has none). Users rarely type the way a
training set is written; these are the cheap, common ways real questions differ.
"""

from __future__ import annotations

import random
import re
from typing import Callable

from ..registry import Registry

Perturbation = Callable[[str, random.Random, object], list[str]]
PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")

FILLERS = ("um, ", "so, ", "hey, quick question: ", "hi! ", "ok so ")
_KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"


@PERTURBATIONS.register("rephrasings")
def rephrasings(text: str, rng: random.Random, example) -> list[str]:
    """The test set's own rephrasings of the question (``rephrasings`` field of a test record)."""
    given = getattr(example, "meta", {}).get("rephrasings") or []
    return [r for r in given if isinstance(r, str) and r.strip()]


@PERTURBATIONS.register("typos")
def typos(text: str, rng: random.Random, example=None, rate: float = 0.08) -> list[str]:
    """About one word in twelve gets a dropped, doubled, swapped or replaced letter.

    >>> typos("What are your opening hours today", random.Random(1))
    ['What are your openig hours today']
    """
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if sum(c.isalpha() for c in w) >= 3]
    if not candidates:
        return []
    k = max(1, round(rate * len(words)))
    for i in rng.sample(candidates, min(k, len(candidates))):
        w = words[i]
        letters = [j for j, c in enumerate(w) if c.isalpha()]
        j = rng.choice(letters[1:] or letters)
        op = rng.choice(("drop", "double", "swap", "replace"))
        if op == "drop":
            w = w[:j] + w[j + 1:]
        elif op == "double":
            w = w[:j] + w[j] + w[j:]
        elif op == "swap" and j + 1 < len(w) and w[j + 1].isalpha():
            w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        else:
            w = w[:j] + rng.choice(_KEYBOARD) + w[j + 1:]
        words[i] = w
    return [" ".join(words)]


@PERTURBATIONS.register("casing")
def casing(text: str, rng: random.Random, example=None) -> list[str]:
    """All lower case, as typed on a phone (all upper case for text that is already lower case)."""
    return [text.lower() if text != text.lower() else text.upper()]


@PERTURBATIONS.register("punctuation")
def punctuation(text: str, rng: random.Random, example=None) -> list[str]:
    """Punctuation removed (or, for text without any, a doubled question mark added)."""
    stripped = re.sub(r"[^\w\s$%']", "", text)
    stripped = " ".join(stripped.split())
    return [stripped if stripped != text else text + "??"]


@PERTURBATIONS.register("filler")
def filler(text: str, rng: random.Random, example=None) -> list[str]:
    """A conversational filler in front ("um, ", "hey, quick question: ")."""
    return [rng.choice(FILLERS) + text[:1].lower() + text[1:]]


_CLAUSE = re.compile(r"(?<=[,;.?!])\s+|\s+(?=\b(?:and|but|because|if|when|so)\b)", re.I)


@PERTURBATIONS.register("reorder")
def reorder(text: str, rng: random.Random, example=None) -> list[str]:
    """Clauses (split at commas, sentence ends and conjunctions) in a different order; [] for one clause.

    >>> reorder("I have a toothache, can I come today?", random.Random(0))
    ['can I come today? I have a toothache,']
    """
    parts = [p for p in _CLAUSE.split(text.strip()) if p and p.strip()]
    if len(parts) < 2:
        return []
    order = list(range(len(parts)))
    while order == sorted(order):
        rng.shuffle(order)
    return [" ".join(parts[i].strip() for i in order)]


def perturb(conversation: list[dict], name: str, rng: random.Random, example=None) -> list[list[dict]]:
    """Variants of ``conversation`` with its last user turn perturbed by ``name``."""
    fn = PERTURBATIONS.get(name)
    last = max(i for i, m in enumerate(conversation) if m["role"] == "user")
    return [[*conversation[:last], {**conversation[last], "content": v}, *conversation[last + 1:]]
            for v in fn(conversation[last]["content"], rng, example) if v != conversation[last]["content"]]
