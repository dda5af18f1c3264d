"""Recorded splits: which examples train and which validate, and which general paragraphs serve which purpose.

Training carves (or reads) the validation split once, here, and writes ``splits.json`` into the
run directory; evaluation and the memorization probe read that record instead of carving again.

General reference paragraphs have two kinds of use that must never meet:

* **measurement** (the forgetting guard during training, reference perplexity in evaluation):
  a fixed ordering of the paragraphs (seed :data:`MEASURE_SEED`, the same for every run so runs
  compare); each consumer takes a prefix of it;
* **training** (replay, the EWC Fisher): drawn only from the paragraphs *outside* the longest
  measurement prefix any consumer may take, ``max(eval.reference_paragraphs, GUARD_PARAGRAPHS)``.

So whatever ``eval.reference_paragraphs`` or ``guards.reference_tokens`` say, no paragraph used
for training is used for measuring: disjoint by construction, and ``splits.json`` shows it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..data import Example, carve_validation, load_examples

MEASURE_SEED = 0  # one measurement sample for every run: forgetting numbers compare across runs
GUARD_PARAGRAPHS = 64  # the forgetting guard reads at most this many measurement paragraphs
SPLITS_FILE = "splits.json"
SCHEMA_VERSION = 1


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass
class Splits:
    """The examples of one training, held in memory (folds and updates pass their own)."""

    train: list[Example]
    validation: list[Example]
    validation_source: str  # the file, or how the split was carved

    def record(self) -> dict:
        return {"validation_source": self.validation_source,
                "train": [e.id for e in self.train], "validation": [e.id for e in self.validation]}


def load_splits(recipe) -> Splits:
    """Read ``data.train`` (and ``data.validation``); carve a stratified validation split when none is given.

    >>> splits = load_splits(recipe); len(splits.validation)
    """
    d = recipe.data
    examples = load_examples(d.train)
    if d.validation:
        return Splits(examples, load_examples(d.validation), d.validation)
    train, val = carve_validation(examples, d.validation_fraction, recipe.train.seed)
    stratified = " (stratified by category)" if any(e.category for e in examples) else ""
    share = len(val) / max(len(examples), 1)
    return Splits(train, val, f"carved {len(val)} of {len(examples)} training examples ({share:.0%}){stratified}")


@dataclass
class ReferenceRoles:
    """General paragraphs by purpose: ``measure`` (ordered, consumers take prefixes) and ``train_pool``."""

    measure: list[str]
    train_pool: list[str]
    used: dict[str, list[str]] = field(default_factory=dict)  # purpose -> the paragraphs it took

    def take_measure(self, purpose: str, n: int) -> list[str]:
        texts = self.measure[:n]
        self.used[purpose] = texts
        return texts

    def take_train(self, purpose: str, n: int) -> list[str]:
        texts = self.train_pool[:n]
        self.used[purpose] = texts
        return texts

    def record(self) -> dict:
        return {"measure_seed": MEASURE_SEED, "measure_paragraphs": len(self.measure),
                "measure": self.measure,  # evaluation reads these texts back
                "purposes": {k: {"kind": "measure" if k.startswith("measure") else "train",
                                 "count": len(v), "ids": [text_id(t) for t in v]} for k, v in self.used.items()}}


def reference_roles(recipe) -> ReferenceRoles:
    """The measurement and training paragraphs for ``recipe``, disjoint for any sample sizes.

    >>> roles = reference_roles(recipe)
    >>> set(roles.measure).isdisjoint(roles.train_pool)
    True
    """
    from ..data.reference import reference_paragraphs

    measured = max(recipe.eval.reference_paragraphs, GUARD_PARAGRAPHS)
    long = reference_paragraphs(min_chars=300)  # measurement paragraphs: long enough to score
    measure = random.Random(MEASURE_SEED).sample(long, min(measured, len(long)))
    held = set(measure)
    pool = [p for p in reference_paragraphs() if p not in held]
    random.Random(recipe.train.seed).shuffle(pool)
    return ReferenceRoles(measure, pool)


def write_record(run_path: Path, splits: Splits, roles: ReferenceRoles, sources: dict) -> None:
    """``splits.json``: the examples of each split, the paragraphs of each purpose, the sources used."""
    from ..rundir import atomic_write_json

    atomic_write_json(Path(run_path) / SPLITS_FILE, {
        "schema_version": SCHEMA_VERSION, **splits.record(), "reference": roles.record(), "sources": sources})


def read_record(run_path: Path) -> dict | None:
    """The run's ``splits.json``, or None for a run trained before splits were recorded."""
    import json

    path = Path(run_path) / SPLITS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def recorded_splits(run_path: Path, recipe) -> Splits:
    """The split a run trained with, from its ``splits.json`` (carved again only for runs older than it)."""
    record = read_record(run_path)
    if record is None or recipe.data.validation:
        return load_splits(recipe)
    by_id = {e.id: e for e in load_examples(recipe.data.train)}
    missing = [i for i in record["train"] + record["validation"] if i not in by_id]
    if missing:
        from ..errors import SmalltuneError

        raise SmalltuneError(f"{recipe.data.train} no longer holds example {missing[0]!r} that the run in "
                             f"{run_path} trained or validated on; evaluate with the data it was trained on")
    return Splits([by_id[i] for i in record["train"]], [by_id[i] for i in record["validation"]],
                  record["validation_source"])


def measurement_paragraphs(run_path: Path, recipe, n: int) -> list[str]:
    """``n`` measurement paragraphs for evaluation: the run's recorded ones, never its training pool."""
    record = read_record(run_path)
    measure = record["reference"]["measure"] if record else reference_roles(recipe).measure
    return measure[:n]
