"""New data for an update: ordinary records and *corrections*, read from one file with line numbers.

A correction is what a reviewer writes after reading a bad answer (docs/update.md)::

    {"prompt": "How much is a cleaning?", "model_answer": "A cleaning costs $80.",
     "corrected_answer": "A cleaning costs $95.", "key_facts": ["$95"], "split": "test"}

``prompt`` and ``corrected_answer`` are required; ``model_answer`` (what the model said), ``key_facts``
(the facts the corrected answer must carry: the gate's key-fact recall), ``category``, ``id`` and
``split`` (``train`` or ``test``) are optional. A correction becomes a training example (user: prompt,
assistant: corrected answer) or, with ``split: test`` or drawn by ``update.corrections_test_share``, a
test example for the regression gate. Any other record shape smalltune reads (chat, prompt/completion,
Alpaca) may sit in the same file and is always training data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..data import Example
from ..data.formats import normalise, record_problems
from ..data.readers import read_records
from ..errors import DataError

CORRECTION_KEY = "corrected_answer"
SPLITS = ("train", "test")


@dataclass
class NewData:
    """What one file adds: training examples, test examples, and how many of them were corrections."""

    train: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    corrections: int = 0
    source: str = ""


def correction_problems(record: dict) -> list[str]:
    """Every problem of one correction record (the format above)."""
    problems = []
    for key in ("prompt", CORRECTION_KEY):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key} must be a non-empty string" + ("" if key in record else " (missing)"))
    if "model_answer" in record and not isinstance(record["model_answer"], str):
        problems.append("model_answer must be a string")
    facts = record.get("key_facts")
    if facts is not None and not (isinstance(facts, list) and all(isinstance(f, str) and f.strip() for f in facts)):
        problems.append("key_facts must be a list of non-empty strings")
    if "split" in record and record["split"] not in SPLITS:
        problems.append(f"split must be train or test, got {record['split']!r}")
    if "category" in record and not isinstance(record["category"], str):
        problems.append("category must be a string")
    if "id" in record and not isinstance(record["id"], (str, int)):
        problems.append("id must be a string or integer")
    return problems


def _correction(record: dict, source: str, line: int, index: int) -> Example:
    meta = {k: v for k, v in record.items()
            if k not in ("prompt", CORRECTION_KEY, "id", "category", "split", "messages")}
    meta["correction"] = True
    return Example(
        messages=[{"role": "user", "content": record["prompt"]},
                  {"role": "assistant", "content": record[CORRECTION_KEY]}],
        id=str(record.get("id", f"{Path(source).stem}-{index + 1}")), source=source, line=line,
        category=record.get("category"), shape="correction", meta=meta)


def read_new_data(path: str | Path, test_share: float = 0.0, seed: int = 0, all_test: bool = False) -> NewData:
    """Read ``path`` (any smalltune data format; corrections allowed); the first bad record raises a
    :class:`DataError` naming file and line.

    Corrections without a ``split`` go to the test side with probability ``test_share`` (a seeded
    draw, the same for the same file and seed); ``all_test`` puts every record on the test side (``--test``).

    >>> new = read_new_data("corrections.jsonl", test_share=0.2)
    >>> len(new.train), len(new.test)
    """
    path = Path(path)
    out = NewData(source=str(path))
    undecided: list[Example] = []
    records = read_records(path)
    for i, rec in enumerate(records):
        value = rec.value
        is_correction = isinstance(value, dict) and CORRECTION_KEY in value
        problems = [rec.error] if rec.error else (correction_problems(value) if is_correction else record_problems(value))
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise DataError(path, rec.line, problems[0] + more)
        if not is_correction:
            (out.test if all_test else out.train).append(normalise(value, str(path), rec.line, i))
            continue
        ex = _correction(value, str(path), rec.line, i)
        out.corrections += 1
        split = "test" if all_test else value.get("split")
        if split is None:
            undecided.append(ex)
        else:
            (out.test if split == "test" else out.train).append(ex)
    if not records:
        raise DataError(path, None, "no records found")
    rng = random.Random(f"{seed}:corrections")
    k = round(len(undecided) * test_share)
    held = set(rng.sample(range(len(undecided)), k)) if k else set()
    for j, ex in enumerate(undecided):
        (out.test if j in held else out.train).append(ex)
    return out
