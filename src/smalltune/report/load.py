"""Read a run directory's result files into typed structures for the report.

The report renders only from these files (never from live objects), so a report can be rebuilt
from a copied run directory. ``metrics.jsonl``, ``train_summary.json`` and ``eval.json`` are read
through :mod:`smalltune.schema`; the recipe, provenance and audit are read here. Every file is
optional: a stage that did not run leaves its field ``None`` and its section says "not run"; a file
that exists but cannot be read (or was written by a newer smalltune) is listed in ``problems``
(shown at the top of the report) instead of failing the whole page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import SmalltuneError
from ..rundir import RunDir
from ..schema import (EvalRecord, EventRecord, EvalResult, Sample, TrainRecord, TrainSummary, Verdict, read_eval,
                      read_metrics, read_train_summary)

# A directory counts as a run directory when it holds at least one of these.
RESULT_FILES = ("recipe.yaml", "provenance.json", "audit.json", "metrics.jsonl", "train_summary.json", "eval.json")


@dataclass
class Curves:
    """The metrics log split by record type, each a list of typed records in step order."""

    train: list[TrainRecord] = field(default_factory=list)
    evals: list[EvalRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)

    @property
    def guard_events(self) -> list[EventRecord]:
        return [e for e in self.events if e.event == "guard"]

    def series(self, records: str, name: str) -> tuple[list[float], list[float]]:
        """(steps, values) of field or signal ``name`` in ``self.<records>``, skipping records without a number."""
        rows = [(r.step, r.lookup(name)) for r in getattr(self, records) if _number(r.step) and _number(r.lookup(name))]
        return [s for s, _ in rows], [float(v) for _, v in rows]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Finding:
    check: str
    severity: str  # error | warning | info
    title: str
    count: int | None
    message: str
    examples: list[dict]


@dataclass
class RunResults:
    """Everything the report shows, as read from one run directory."""

    run_dir: Path
    recipe: dict | None = None
    provenance: dict | None = None
    audit: dict | None = None
    findings: list[Finding] | None = None
    curves: Curves | None = None
    summary: TrainSummary | None = None
    eval: EvalResult | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def probes(self) -> dict:
        return self.eval.probes if self.eval is not None else {}

    @property
    def verdicts(self) -> list[Verdict] | None:
        return self.eval.verdicts if self.eval is not None else None

    @property
    def samples(self) -> list[Sample] | None:
        return self.eval.samples if self.eval is not None else None


def load_results(run_dir: str | Path) -> RunResults:
    """Read every result file of ``run_dir``; missing files stay ``None``.

    >>> results = load_results("runs/dental-demo")
    >>> results.summary.best_step if results.summary else "training not run"
    """
    run = RunDir(Path(run_dir))
    if not run.path.is_dir():
        raise SmalltuneError(f"{run.path}: not a directory (expected a run directory written by `smalltune run`)")
    if not any((run.path / name).exists() for name in RESULT_FILES):
        raise SmalltuneError(f"{run.path}: no result files (recipe.yaml, metrics.jsonl, eval.json, ...); "
                             "is this a run directory?")
    res = RunResults(run_dir=run.path)
    res.recipe = _read(run.recipe, _yaml, res.problems)
    res.provenance = _read(run.provenance, _json, res.problems)
    res.audit = _read(run.audit, _json, res.problems)
    res.summary = _typed(run.train_summary, read_train_summary, res.problems)
    res.eval = _typed(run.eval, read_eval, res.problems)
    if res.recipe is None and res.provenance and isinstance(res.provenance.get("recipe"), dict):
        res.recipe = res.provenance["recipe"]
    if res.audit is not None:
        res.findings = [_finding(f) for f in _list(res.audit.get("findings"))]
    if run.metrics.exists():
        res.curves = _curves(run.metrics, res.problems)
    return res


def _typed(path: Path, read, problems: list[str]):
    """A schema-read result file, or None (missing; or unreadable / too new, noted in ``problems``)."""
    if not path.exists():
        return None
    try:
        return read(path)
    except SmalltuneError as e:
        problems.append(str(e).replace(f"{path.parent}/", "", 1))
        return None


def _read(path: Path, parse, problems: list[str]):
    if not path.exists():
        return None
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as e:
        problems.append(f"{path.name}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: expected a mapping at the top level, got {type(data).__name__}")
        return None
    return data


def _json(text: str):
    return json.loads(text)


def _yaml(text: str):
    return yaml.safe_load(text)


def _list(value) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _curves(path: Path, problems: list[str]) -> Curves | None:
    try:
        log = read_metrics(path)
    except SmalltuneError as e:  # written by a newer smalltune: say so instead of misreading it
        problems.append(str(e).replace(f"{path.parent}/", "", 1))
        return None
    if log.bad_lines:  # a run killed mid-write leaves at most a partial last line
        problems.append(f"metrics.jsonl: {log.bad_lines} unreadable line(s) skipped")
    # On resume the log is truncated and redone, but sort anyway so plots never zig-zag.
    by_step = lambda r: r.step if _number(r.step) else 0  # noqa: E731
    return Curves(train=sorted(log.train, key=by_step), evals=sorted(log.evals, key=by_step), events=log.events)


def _finding(f: dict) -> Finding:
    return Finding(check=str(f.get("check", "")), severity=str(f.get("severity", "info")),
                   title=str(f.get("title") or f.get("check") or ""), count=f.get("count"),
                   message=str(f.get("message", "")), examples=_list(f.get("examples")))
