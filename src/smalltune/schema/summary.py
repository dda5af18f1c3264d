"""``train_summary.json``: how training ended, the chosen checkpoint, counts. ``train`` returns the same record.

The plain-dict fields (``best_metrics``, ``base_metrics``, ``data``, ``events``, ``guards``) stay dicts so
the loop and the console fill and print them as before; readers use the typed views
:attr:`TrainSummary.best`, :attr:`TrainSummary.base`, :attr:`TrainSummary.guard_events` and
:attr:`TrainSummary.data_info`.

>>> s = TrainSummary.from_dict({"stopped": "completed", "best_step": 6, "best_metrics": {"eval_ppl": 3.2}})
>>> s.best.eval_ppl, s.schema_version, s.steps
(3.2, '0', None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .base import OMIT_NONE, Record, read_record
from .metrics import EvalRecord, EventRecord

SUMMARY_SCHEMA = "1.0"


@dataclass
class SplitStats(Record):
    """Tokenisation counts of one split (``TokenizeStats.to_dict()``)."""

    examples: int | None = None
    tokens: int | None = None
    trainable_tokens: int | None = None  # tokens that carry loss (assistant answers)
    truncated_examples: int | None = None
    truncated_tokens: int | None = None
    truncated_trainable: int | None = None
    dropped: list | None = None  # "file:line (id)" of examples left without a trainable token
    extra: dict = field(default_factory=dict)


@dataclass
class DataSummary(Record):
    """The ``data`` section: where validation came from, split counts, target transforms, regularisers."""

    validation_source: str | None = None
    train: SplitStats | None = None
    validation: SplitStats | None = None
    transforms: dict | None = None  # each target transform's numbers (stm_masked_share, ...)
    regularizers: dict | None = None  # {"names": [...], plus each regulariser's set-up numbers}
    extra: dict = field(default_factory=dict)

    @classmethod
    def _field_from(cls, name: str, value: Any) -> Any:
        if name in ("train", "validation") and isinstance(value, dict):
            return SplitStats.from_dict(value)
        return value


@dataclass
class TrainSummary(Record):
    """What ``train`` returns and writes as ``train_summary.json``."""

    SCHEMA: ClassVar[str] = SUMMARY_SCHEMA
    FILE: ClassVar[str] = "train_summary.json"

    run_dir: str
    stopped: str  # "completed", "max_steps", or the guard that stopped the run
    stop_message: str
    steps: int
    epochs: float
    best_step: int | None
    best_metrics: dict | None  # the chosen evaluation record (typed: ``.best``)
    selection: str  # one line: which checkpoint was chosen, and why
    train_tokens: int
    wall_seconds: float
    trainable_params: int
    total_params: int
    data: dict = field(default_factory=dict)  # typed: ``.data_info``
    events: list = field(default_factory=list)  # guard events (typed: ``.guard_events``)
    guards: dict = field(default_factory=dict)  # each guard's end-of-run numbers (gap, forgetting, ...)
    artifact_written: bool = True  # False when a guard stopped the run and no checkpoint passed the guards
    base_metrics: dict | None = None  # the base model on the same validation set, before training (typed: ``.base``)
    provenance: dict | None = field(default=None, metadata=OMIT_NONE)  # versions, seed, recipe, counts
    schema_version: str = SUMMARY_SCHEMA
    extra: dict = field(default_factory=dict)

    @property
    def best(self) -> EvalRecord | None:
        """The chosen evaluation as a typed record (None when no checkpoint was chosen)."""
        return EvalRecord.from_dict(self.best_metrics, "train_summary.json best_metrics") \
            if isinstance(self.best_metrics, dict) else None

    @property
    def base(self) -> EvalRecord | None:
        """The base model's validation metrics, measured before training (None when not measured)."""
        return EvalRecord.from_dict(self.base_metrics, "train_summary.json base_metrics") \
            if isinstance(self.base_metrics, dict) else None

    @property
    def guard_events(self) -> list[EventRecord]:
        return [EventRecord.from_dict({"event": "guard", **e}, "train_summary.json events")
                for e in self.events or [] if isinstance(e, dict)]

    @property
    def data_info(self) -> DataSummary:
        return DataSummary.from_dict(self.data if isinstance(self.data, dict) else {})


def read_train_summary(path: str | Path) -> TrainSummary:
    """Read ``train_summary.json``; unreadable or newer-major files raise one clear :class:`SmalltuneError`."""
    return read_record(path, TrainSummary)
