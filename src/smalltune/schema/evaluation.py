"""``eval.json``: what ``evaluate`` returns and writes: settings, each probe's section, verdicts, sample answers.

Each probe owns the layout of its own section (one probe, one file: ``evaluate/probes/*.py``), so
``probes`` stays a mapping of plain dicts; every number inside uses one of two shapes, read typed with
:func:`metric_at` (base vs fine-tuned, :class:`Metric`) and :func:`estimate_at` (one value with a CI,
:class:`Estimate`).

>>> m = metric_at({"task": {"rouge_l": {"base": 0.2, "finetuned": 0.5, "delta": 0.3, "ci": [0.1, 0.4], "n": 12}}},
...               "task", "rouge_l")
>>> m.delta, m.ci_low
(0.3, 0.1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .base import OMIT_NONE, Record, read_record

EVAL_SCHEMA = "1.0"


@dataclass
class Metric(Record):
    """One number measured on the same items for both models: values, change, 95% paired-bootstrap CI of the change."""

    base: float | None = None
    finetuned: float | None = None
    delta: float | None = None  # finetuned - base
    ci: list | None = None  # [low, high] of delta; [None, None] when it could not be computed
    n: int | None = None  # items
    extra: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any) -> "Metric | None":
        """``value`` as a Metric when it has the shape (a mapping with ``base`` or ``finetuned``), else None."""
        if isinstance(value, dict) and ("base" in value or "finetuned" in value):
            return cls.from_dict(value)
        return None

    @property
    def ci_low(self) -> float | None:
        return self.ci[0] if isinstance(self.ci, (list, tuple)) and len(self.ci) == 2 else None

    @property
    def ci_high(self) -> float | None:
        return self.ci[1] if isinstance(self.ci, (list, tuple)) and len(self.ci) == 2 else None


@dataclass
class Estimate(Record):
    """One value with its CI (e.g. the relative change of reference perplexity)."""

    value: float | None = None
    ci: list | None = None
    n: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Verdict(Record):
    """A result read against a documented threshold (docs/evaluation.md), with the fix to try."""

    name: str
    status: str  # "ok" | "warn" | "problem"
    value: Any
    threshold: Any
    message: str
    fix: str
    extra: dict = field(default_factory=dict)


@dataclass
class Sample(Record):
    """One held-out question with both models' answers (filled by the task probe)."""

    id: str = ""
    category: str = ""
    question: str = ""
    reference: str = ""
    base: str = ""
    finetuned: str = ""
    key_facts: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def facts_found(self, answer: str) -> int:
        """Key facts the answer contains, by the evaluation's own matching rule."""
        from ..evaluate.metrics import key_fact_recall

        facts = [str(x) for x in self.key_facts or []]
        return round((key_fact_recall(answer or "", facts) or 0.0) * len(facts))


@dataclass
class EvalSettings(Record):
    """How the evaluation ran; the report shows it beside the provenance."""

    generation: dict | None = None  # GenerationSettings + greedy
    quick: bool | None = None
    caps: dict | None = None  # sample caps per probe (Caps)
    seed: int | None = None
    heldout: str | None = None  # where the held-out questions came from
    reference: str | None = None  # where the general reference text came from (or why there is none)
    skipped: dict = field(default_factory=dict)  # probe -> why it did not apply
    wall_seconds: float | None = field(default=None, metadata=OMIT_NONE)
    # where the wall time went: "answers (base)", "answers (finetuned)" (the up-front generation passes), then
    # each probe's own scoring; what is left of wall_seconds is loading the run and the data
    phase_seconds: dict | None = field(default=None, metadata=OMIT_NONE)
    ci: str | None = field(default=None, metadata=OMIT_NONE)  # how the CIs were computed
    extra: dict = field(default_factory=dict)


@dataclass
class EvalResult(Record):
    """The whole evaluation; ``to_dict()`` is exactly what ``eval.json`` holds (``run_dir`` is not stored)."""

    SCHEMA: ClassVar[str] = EVAL_SCHEMA
    FILE: ClassVar[str] = "eval.json"

    provenance: dict | None = None
    settings: EvalSettings = field(default_factory=EvalSettings)
    probes: dict = field(default_factory=dict)  # probe name -> its section (plain dicts, see module doc)
    verdicts: list[Verdict] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    schema_version: str = EVAL_SCHEMA
    extra: dict = field(default_factory=dict)
    run_dir: str = field(default="", compare=False)

    @classmethod
    def names(cls) -> list[str]:
        return [n for n in super().names() if n != "run_dir"]

    @classmethod
    def _field_from(cls, name: str, value: Any) -> Any:
        rows = [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
        if name == "settings":
            return EvalSettings.from_dict(value if isinstance(value, dict) else {})
        if name == "verdicts":
            return [Verdict.from_dict(v) for v in rows]
        if name == "samples":
            return [Sample.from_dict(s) for s in rows]
        if name == "probes":
            return {k: v for k, v in value.items() if isinstance(v, dict)} if isinstance(value, dict) else {}
        return value

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.pop("run_dir", None)
        return out

    @property
    def path(self) -> str:
        from ..rundir import RunDir

        return str(RunDir(self.run_dir).eval)

    def worst_status(self) -> str:
        order = {"ok": 0, "warn": 1, "problem": 2}
        return max((v.status for v in self.verdicts), key=lambda s: order.get(s, 0), default="ok")

    def metric(self, probe: str, *path: str) -> Metric | None:
        return metric_at(self.probes, probe, *path)


def probe_value(probes: dict, *path: str) -> Any:
    """The value at ``probes[path[0]][path[1]]...``, or None where any step is missing."""
    node: Any = probes
    for key in path:
        if not isinstance(node, dict) or node.get(key) is None:
            return None
        node = node[key]
    return node


def metric_at(probes: dict, *path: str) -> Metric | None:
    """The base-vs-fine-tuned metric at ``path`` in a probes mapping, or None."""
    return Metric.parse(probe_value(probes, *path))


def estimate_at(probes: dict, *path: str) -> Estimate | None:
    value = probe_value(probes, *path)
    return Estimate.from_dict(value) if isinstance(value, dict) and "value" in value else None


def read_eval(path: str | Path, run_dir: str | Path | None = None) -> EvalResult:
    """Read ``eval.json``; unreadable or newer-major files raise one clear :class:`SmalltuneError`."""
    result = read_record(path, EvalResult)
    result.run_dir = str(run_dir if run_dir is not None else Path(path).parent)
    return result
