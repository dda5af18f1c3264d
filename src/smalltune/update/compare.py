"""The new-vs-old audit of an update: copies, near-duplicates, changed answers, and test leakage.

Prompts are compared with the audit's near-duplicate machinery (:mod:`smalltune.audit.similar`:
word-shingle Jaccard, MinHash/LSH candidates confirmed exactly), answers by their normalised text.

* **changed answer** (a *conflict*): a new example asks the same question as an earlier one
  (``update.conflict_similarity``) and answers it differently. The fact changed; the new answer
  wins. The earlier example is *stale*: reported, and left out of the replay and of every later
  version's pool. An earlier **test** question answered differently by the new data is stale too: it
  leaves the lineage's test set (the new test data measures the new answer).
* **copy**: a new example identical to an earlier one (prompt and answer); it is not added again.
* **near-duplicate**: a new prompt close to an earlier one (``update.duplicate_similarity``) with the
  same answer: reported only.
* **leakage**: a test question (earlier or new) that the update's training data asks too, at the
  near-duplicate threshold; it would measure memory, so it leaves the test set.
* the new data disagreeing with **itself** (same question, two answers): the later record wins.
* **a replaced value stated elsewhere**: a changed answer replaces a value ("$95" -> "$110", "1 pm" -> "2 pm") that an
  earlier example states in answer to *another* question. That example teaches the old fact too: it is stale like a
  conflict's (a test question, too). Only values with a digit count (prices, hours, dates, numbers), matched as whole
  values ("$95" not in "$950", "1 pm" not in "11 pm"), and not one the new answer itself still states. On the
  continual-update benchmark, 5 of the demo's 56 validation examples stated changed prices and hours in other
  questions, and each update that learned the change looked worse on them (benchmarks/README.md, "Unlikelihood on the
  stale answers").
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from ..audit.report import Finding
from ..audit.similar import SimilarityIndex
from ..audit.text import normalise, snippet
from ..data import Example

MAX_EXAMPLES = 10  # pointers kept per finding (as the audit's)


@dataclass
class Comparison:
    """What the audit found, and the example sets the update acts on."""

    findings: list[Finding] = field(default_factory=list)
    stale: list[Example] = field(default_factory=list)  # earlier training/validation examples with a changed answer
    replacing: list[Example] = field(default_factory=list)  # new examples whose answer replaces a stale one's
    stale_test: list[Example] = field(default_factory=list)  # earlier test examples with a changed answer
    leaked_test: list[Example] = field(default_factory=list)  # test examples the update's training data asks
    copies: list[Example] = field(default_factory=list)  # new examples identical to earlier ones (not added)
    superseded: list[Example] = field(default_factory=list)  # new examples a later new record answers differently
    stale_answers: dict[str, list[str]] = field(default_factory=dict)  # new example id -> the answers it replaces
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        ids = lambda xs: [e.id for e in xs]  # noqa: E731
        return {"findings": [f.to_dict() for f in self.findings], "stats": self.stats,
                "stale": ids(self.stale), "replacing": ids(self.replacing), "stale_test": ids(self.stale_test),
                "leaked_test": ids(self.leaked_test), "copies": ids(self.copies), "superseded": ids(self.superseded)}


def _cross(index: SimilarityIndex, a: str, b: str) -> dict[tuple[int, int], float]:
    """Every (i in split a, j in split b) pair of similar prompts with its Jaccard (1.0 for identical ones)."""
    members = [{} for _ in index.groups]
    for g, group in enumerate(index.groups):
        for x in group:
            split, i = index.owner[x]
            members[g].setdefault(split, []).append(i)
    out: dict[tuple[int, int], float] = {}

    def link(g: int, h: int, sim: float) -> None:
        for i in members[g].get(a, []):
            for j in members[h].get(b, []):
                if (a, i) != (b, j):
                    out[(i, j)] = max(out.get((i, j), 0.0), sim)

    for g in range(len(index.groups)):
        link(g, g, 1.0)
    for g, h, sim in index.pairs:
        link(g, h, sim)
        link(h, g, sim)
    return out


def _same_answer(x: Example, y: Example) -> bool:
    return normalise(x.target) == normalise(y.target)


def _pointer(ex: Example, other: Example, sim: float, **extra) -> dict:
    return {"file": ex.source, "line": ex.line, "id": ex.id, "prompt": snippet(ex.prompt_text),
            "match": other.where, "similarity": round(sim, 3), **extra}


def _word(w: str) -> str:
    return w.rstrip(".,;:!?)")


def replaced_values(old_answer: str, new_answer: str) -> list[str]:
    """Values (with a digit) that ``new_answer`` replaces in ``old_answer``, with a unit word after a bare number.

    >>> replaced_values("Open 9 am to 1 pm, cleaning $95.", "Open 9 am to 2 pm, cleaning $110.")
    ['1 pm', '$95']
    """
    a, b = [_word(w) for w in old_answer.split()], [_word(w) for w in new_answer.split()]
    out = []
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        span = a[i1:i2]
        if tag not in ("replace", "delete") or not any(ch.isdigit() for w in span for ch in w):
            continue
        if span[-1].isdigit() and i2 < len(a):  # "1" of "1 pm": the value is "1 pm"
            span = span + [a[i2]]
        value = " ".join(span)
        if not _states(new_answer, value):
            out.append(value)
    return list(dict.fromkeys(out))


def _states(text: str, value: str) -> bool:
    """Whether ``text`` states ``value`` as a whole value ("$95" not inside "$950" or "$195")."""
    return re.search(rf"(?<![\w$]){re.escape(value)}(?!\w|,\d)", " ".join(text.split())) is not None


def _stating(items: list[Example], values: dict, skip=()) -> dict[int, str]:
    """Index -> the first of ``values`` each example's answer states (those in ``skip`` left alone)."""
    found = {}
    for j, ex in enumerate(items):
        hit = next((v for v in values if _states(ex.target, v)), None) if j not in skip else None
        if hit is not None:
            found[j] = hit
    return found


def compare(old: list[Example], new: list[Example], old_test: list[Example], new_test: list[Example],
            conflict_similarity: float = 0.9, duplicate_similarity: float = 0.8) -> Comparison:
    """Audit ``new`` training examples against the lineage's ``old`` examples and test sets.

    >>> c = compare(old, new, old_test, new_test)
    >>> [e.id for e in c.stale]          # earlier examples whose answer the new data changes
    """
    texts = {"old": [normalise(e.prompt_text) for e in old], "new": [normalise(e.prompt_text) for e in new],
             "old_test": [normalise(e.prompt_text) for e in old_test],
             "new_test": [normalise(e.prompt_text) for e in new_test]}
    index = SimilarityIndex.build(texts, min(conflict_similarity, duplicate_similarity))
    c = Comparison()
    changed, copies, near, leaks, self_conflicts, stale_tests = [], [], [], [], [], []

    # the new data against itself: the later record wins
    superseded: set[int] = set()
    for (i, j), sim in sorted(_cross(index, "new", "new").items()):
        if i < j and sim >= conflict_similarity and not _same_answer(new[i], new[j]):
            superseded.add(i)
            self_conflicts.append(_pointer(new[i], new[j], sim, answer=snippet(new[i].target),
                                           later_answer=snippet(new[j].target)))
    c.superseded = [new[i] for i in sorted(superseded)]
    kept = [i for i in range(len(new)) if i not in superseded]

    # new against earlier training and validation examples
    stale, copy, replacing = set(), set(), set()
    pairs = _cross(index, "new", "old")
    for (i, j), sim in sorted(pairs.items()):
        if i in superseded:
            continue
        if sim >= conflict_similarity and not _same_answer(new[i], old[j]):
            replacing.add(i)
            c.stale_answers.setdefault(new[i].id, []).append(old[j].target)
            if j not in stale:
                changed.append(_pointer(old[j], new[i], sim, old_answer=snippet(old[j].target),
                                        new_answer=snippet(new[i].target)))
            stale.add(j)
        elif sim == 1.0 and _same_answer(new[i], old[j]):
            copy.add(i)
            copies.append(_pointer(new[i], old[j], sim))
        elif sim >= duplicate_similarity:
            near.append(_pointer(new[i], old[j], sim))
    # new test questions answered differently by an earlier training example: the earlier one is stale
    for (i, j), sim in sorted(_cross(index, "new_test", "old").items()):
        if sim >= conflict_similarity and not _same_answer(new_test[i], old[j]) and j not in stale:
            stale.add(j)
            changed.append(_pointer(old[j], new_test[i], sim, old_answer=snippet(old[j].target),
                                    new_answer=snippet(new_test[i].target)))
    trained = set(kept) - copy
    c.replacing = [new[i] for i in sorted(replacing & trained)]
    # values a changed answer replaces, stated by earlier examples in answer to other questions: stale too
    values = {v: ex for ex in c.replacing for answer in c.stale_answers[ex.id]
              for v in replaced_values(answer, ex.target)}
    stated_train, stated_t = _stating(old, values, skip=stale), _stating(old_test, values)
    stale |= set(stated_train)
    stated = [_pointer(items[j], values[v], 1.0, value=v, answer=snippet(items[j].target), test=items is old_test)
              for items, found in ((old, stated_train), (old_test, stated_t)) for j, v in found.items()]
    c.stale = [old[j] for j in sorted(stale)]
    c.copies = [new[i] for i in sorted(copy)]

    # test questions: stale (a changed answer) or leaked (the update trains on them)
    stale_t, leaked_old, leaked_new = set(), set(), set()
    for (i, j), sim in sorted(_cross(index, "old_test", "new").items()):
        if j not in trained:
            continue
        if sim >= conflict_similarity and not _same_answer(old_test[i], new[j]):
            if i not in stale_t:
                stale_tests.append(_pointer(old_test[i], new[j], sim, old_answer=snippet(old_test[i].target),
                                            new_answer=snippet(new[j].target)))
            stale_t.add(i)
        elif sim >= duplicate_similarity and i not in leaked_old:
            leaked_old.add(i)
            leaks.append(_pointer(old_test[i], new[j], sim, test="earlier"))
    for other, items in (("new", new), ("old", old)):
        for (i, j), sim in sorted(_cross(index, "new_test", other).items()):
            usable = j in trained if other == "new" else j not in stale
            if usable and sim >= duplicate_similarity and i not in leaked_new:
                leaked_new.add(i)
                leaks.append(_pointer(new_test[i], items[j], sim, test="new"))
    stale_t |= set(stated_t)
    stale_t -= leaked_old
    c.stale_test = [old_test[i] for i in sorted(stale_t)]
    c.leaked_test = [old_test[i] for i in sorted(leaked_old - stale_t)] + [new_test[i] for i in sorted(leaked_new)]

    add = c.findings.append
    if changed:
        add(Finding("update", "warning", "changed answers: earlier examples are stale", len(c.stale),
                    "the new data answers these earlier questions differently; the new answer wins, and the earlier "
                    "examples are left out of the replay and of later versions (check that each change is intended)",
                    changed[:MAX_EXAMPLES]))
    if stale_tests:
        add(Finding("update", "warning", "earlier test questions with a changed answer", len(c.stale_test),
                    "these earlier test questions now have another answer; they leave the test set, so the gate "
                    "does not punish the change (give new test questions for the new answers with --test)",
                    stale_tests[:MAX_EXAMPLES]))
    if stated:
        add(Finding("update", "warning", "earlier answers that state a replaced value", len(stated),
                    "these earlier examples state a value a changed answer replaces (in answer to another question), "
                    "so they teach the old fact too; they are treated as stale: left out of the replay, the "
                    "validation and the gate's test set (check each; give corrected versions in the new data)",
                    stated[:MAX_EXAMPLES]))
    if leaks:
        add(Finding("update", "warning", "test questions the update trains on", len(c.leaked_test),
                    "the update's training data asks these test questions (or close paraphrases), so they would "
                    "measure memory; they are left out of the test set and the gate", leaks[:MAX_EXAMPLES]))
    if self_conflicts:
        add(Finding("update", "warning", "the new data disagrees with itself", len(c.superseded),
                    "the same question has two answers in the new data; the later record wins and the earlier one "
                    "is not trained on: remove one of them", self_conflicts[:MAX_EXAMPLES]))
    if copies:
        add(Finding("update", "info", "copies of earlier examples", len(c.copies),
                    "these new examples are already in the lineage's data (same question and answer); they are not "
                    "added again (replay may still show them)", copies[:MAX_EXAMPLES]))
    if near:
        add(Finding("update", "info", f"near-duplicates of earlier examples (similarity >= {duplicate_similarity:g})",
                    len({p["id"] for p in near}), "close paraphrases of earlier questions with the same answer: "
                    "harmless, and they weigh that fact more", near[:MAX_EXAMPLES]))
    c.stats = {"old": len(old), "new": len(new), "old_test": len(old_test), "new_test": len(new_test),
               "stale": len(c.stale), "stale_test": len(c.stale_test), "stating_replaced_values": len(stated),
               "leaked_test": len(c.leaked_test),
               "copies": len(c.copies), "superseded": len(c.superseded), "near_duplicates": len({p["id"] for p in near}),
               "conflict_similarity": conflict_similarity, "duplicate_similarity": duplicate_similarity}
    return c
