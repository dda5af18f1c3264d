"""``metrics.jsonl``: one JSON object per line, a training step, an evaluation or an event.

Every line carries its own ``schema_version`` (not a first "schema" line): a resumed run may append
lines from a newer smalltune to an older file, ``truncate_metrics_after`` rewrites the file, and
tools read lines one by one (``jq``, ``grep``); a per-line version stays true through all three, at
about 25 bytes a line.

>>> rec = parse_metric({"type": "train", "step": 3, "loss": 2.1, "ewc_penalty": 0.01})
>>> rec.loss, rec.extra["ewc_penalty"], rec.schema_version
(2.1, 0.01, '0')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

from .base import OMIT_NONE, Record

METRICS_SCHEMA = "1.0"


@dataclass
class TrainRecord(Record):
    """One optimizer step. Regularisers add their per-step numbers (e.g. ``ewc_penalty``) to ``extra``."""

    SCHEMA: ClassVar[str] = METRICS_SCHEMA
    KIND: ClassVar[str] = "train"
    FILE: ClassVar[str] = "metrics.jsonl"

    step: int | None = None
    epoch: float | None = None  # step / steps per epoch, 3 decimals
    loss: float | None = None  # task loss of the step's last micro-batch
    lr: float | None = None
    grad_norm: float | None = None  # before clipping; None when neither clipping nor a guard asked for it
    tokens: int | None = None  # tokens seen so far (padding excluded)
    elapsed: float | None = None  # seconds of training so far, across resumes
    schema_version: str = METRICS_SCHEMA
    extra: dict = field(default_factory=dict)


@dataclass
class EvalRecord(Record):
    """One evaluation on the validation split, with the signals the guards added to it.

    Also the shape of ``train_summary.json``'s ``best_metrics`` (the chosen evaluation).
    """

    SCHEMA: ClassVar[str] = METRICS_SCHEMA
    KIND: ClassVar[str] = "eval"
    FILE: ClassVar[str] = "metrics.jsonl"

    step: int | None = None
    epoch: float | None = None
    eval_loss: float | None = None  # token-weighted loss on validation answers
    eval_ppl: float | None = None  # exp(eval_loss), capped at exp(50)
    eval_token_acc: float | None = None  # next-token accuracy on validation answer tokens
    eval_tokens: int | None = field(default=None, metadata=OMIT_NONE)  # labelled validation tokens
    train_loss: float | None = None  # mean training loss since the previous evaluation
    best_step: int | None = field(default=None, metadata=OMIT_NONE)  # the checkpoint chosen so far
    # Guard signals (present when the guard runs); other guards' numbers land in ``extra``.
    ref_ppl: float | None = field(default=None, metadata=OMIT_NONE)  # forgetting_budget: reference-text perplexity
    ref_ppl_base: float | None = field(default=None, metadata=OMIT_NONE)  # forgetting_budget: the base model's
    forgetting: float | None = field(default=None, metadata=OMIT_NONE)  # forgetting_budget: relative rise
    within_forgetting_budget: bool | None = field(default=None, metadata=OMIT_NONE)
    ppl_ratio: float | None = field(default=None, metadata=OMIT_NONE)  # over_memorization: ppl / its minimum
    over_memorization: bool | None = field(default=None, metadata=OMIT_NONE)
    train_val_gap: float | None = field(default=None, metadata=OMIT_NONE)  # overfitting: eval_loss - train_loss
    gap_trend: float | None = field(default=None, metadata=OMIT_NONE)  # overfitting: gap change per epoch
    train_loss_change_per_epoch: float | None = field(default=None, metadata=OMIT_NONE)  # convergence
    schema_version: str = METRICS_SCHEMA
    extra: dict = field(default_factory=dict)


@dataclass
class EventRecord(Record):
    """``start`` (counts and settings in ``extra``), ``resume`` (``checkpoint``), ``guard``, ``end`` (``stopped``).

    A guard event carries the guard's :class:`~smalltune.train.guards.GuardEvent` fields; the same
    shape, without ``event``, is a ``train_summary.json`` ``events`` entry.
    """

    SCHEMA: ClassVar[str] = METRICS_SCHEMA
    KIND: ClassVar[str] = "event"
    FILE: ClassVar[str] = "metrics.jsonl"

    event: str | None = None  # start | resume | guard | end
    step: int | None = None
    guard: str | None = field(default=None, metadata=OMIT_NONE)  # guard events: which guard
    action: str | None = field(default=None, metadata=OMIT_NONE)  # guard events: stop | warn | note
    message: str | None = field(default=None, metadata=OMIT_NONE)  # guard events: one line a person reads
    values: dict | None = field(default=None, metadata=OMIT_NONE)  # guard events: the numbers it fired on
    schema_version: str = METRICS_SCHEMA
    extra: dict = field(default_factory=dict)


@dataclass
class OtherRecord(Record):
    """A line of a kind this version does not know (a newer minor added it): kept, and written back as read."""

    SCHEMA: ClassVar[str] = METRICS_SCHEMA
    FILE: ClassVar[str] = "metrics.jsonl"

    schema_version: str = METRICS_SCHEMA
    extra: dict = field(default_factory=dict)

    @property
    def kind(self) -> Any:
        return self.extra.get("type")


MetricRecord = Union[TrainRecord, EvalRecord, EventRecord, OtherRecord]
KINDS: dict[str, type[Record]] = {"train": TrainRecord, "eval": EvalRecord, "event": EventRecord}


def parse_metric(data: dict, what: str = "metrics.jsonl") -> MetricRecord:
    """The typed record of one metrics line (a dict); unknown kinds come back as :class:`OtherRecord`."""
    cls = KINDS.get(data.get("type")) if isinstance(data, dict) else None
    return (cls or OtherRecord).from_dict(data, what)  # type: ignore[return-value]


def encode_metric(record: Record | dict) -> dict:
    """What one metrics line holds: a record's ``to_dict()``; a plain dict is read as the current version.

    >>> encode_metric({"type": "event", "event": "end", "step": 8, "stopped": "completed"})
    {'schema_version': '1.0', 'type': 'event', 'event': 'end', 'step': 8, 'stopped': 'completed'}
    """
    if isinstance(record, dict):
        record = parse_metric({"schema_version": METRICS_SCHEMA, **record})
    return record.to_dict()


@dataclass
class MetricsLog:
    """Every readable line of a metrics file, in file order, and how many lines could not be read."""

    records: list = field(default_factory=list)
    bad_lines: int = 0

    def of(self, cls: type[Record]) -> list:
        return [r for r in self.records if isinstance(r, cls)]

    @property
    def train(self) -> list[TrainRecord]:
        return self.of(TrainRecord)

    @property
    def evals(self) -> list[EvalRecord]:
        return self.of(EvalRecord)

    @property
    def events(self) -> list[EventRecord]:
        return self.of(EventRecord)


def read_metrics(path: str | Path) -> MetricsLog:
    """Parse a metrics file; a missing file is an empty log.

    A line that is not a JSON object (a run killed mid-write leaves at most a partial last line) is
    counted in ``bad_lines`` and skipped; a line of a newer major version raises
    :class:`~smalltune.schema.base.SchemaVersionError` naming the file and line.
    """
    path = Path(path)
    log = MetricsLog()
    if not path.exists():
        return log
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            log.bad_lines += 1
            continue
        log.records.append(parse_metric(data, f"{path}:{number}"))
    return log


def dumps_metrics(records) -> str:
    """The text of a metrics file holding ``records`` (typed records or dicts), one line each."""
    from ..rundir import _json_default

    return "".join(json.dumps(encode_metric(r), default=_json_default) + "\n" for r in records)
