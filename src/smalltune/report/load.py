"""Read a run directory's result files into typed structures for the report.

The report renders only from these files (never from live objects), so a report can be rebuilt
from a copied run directory. Every file is optional: a stage that did not run leaves its field
``None`` and its section says "not run"; a file that exists but cannot be read is listed in
``problems`` (shown at the top of the report) instead of failing the whole page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SmalltuneError
from ..rundir import RunDir

# A directory counts as a run directory when it holds at least one of these.
RESULT_FILES = ("recipe.yaml", "provenance.json", "audit.json", "metrics.jsonl", "train_summary.json", "eval.json")


@dataclass
class Curves:
    """The metrics log split by record type, each a list of records in step order."""

    train: list[dict] = field(default_factory=list)  # {"step", "loss", "lr", ...}
    evals: list[dict] = field(default_factory=list)  # {"step", "eval_loss", "eval_ppl", "eval_token_acc", "train_loss", ...}
    events: list[dict] = field(default_factory=list)  # {"event": start|resume|guard|end, "step", ...}

    @property
    def guard_events(self) -> list[dict]:
        return [e for e in self.events if e.get("event") == "guard"]

    def series(self, records: str, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of ``key`` in ``self.<records>``, skipping records without a number for it."""
        rows = [(r["step"], r[key]) for r in getattr(self, records)
                if isinstance(r.get(key), (int, float)) and isinstance(r.get("step"), (int, float))]
        return [s for s, _ in rows], [float(v) for _, v in rows]


@dataclass
class Finding:
    check: str
    severity: str  # error | warning | info
    title: str
    count: int | None
    message: str
    examples: list[dict]


@dataclass
class Verdict:
    name: str
    status: str  # ok | warn | problem
    value: Any
    threshold: Any
    message: str
    fix: str


@dataclass
class Sample:
    id: str
    category: str
    question: str
    reference: str
    base: str
    finetuned: str
    key_facts: list[str]

    def facts_found(self, answer: str) -> int:
        """Key facts the answer contains, by the evaluation's own matching rule."""
        from ..evaluate.metrics import key_fact_recall

        return round((key_fact_recall(answer or "", self.key_facts) or 0.0) * len(self.key_facts))


@dataclass
class RunResults:
    """Everything the report shows, as read from one run directory."""

    run_dir: Path
    recipe: dict | None = None
    provenance: dict | None = None
    audit: dict | None = None
    findings: list[Finding] | None = None
    curves: Curves | None = None
    summary: dict | None = None
    eval: dict | None = None
    verdicts: list[Verdict] | None = None
    samples: list[Sample] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def probes(self) -> dict:
        return (self.eval or {}).get("probes") or {}


def load_results(run_dir: str | Path) -> RunResults:
    """Read every result file of ``run_dir``; missing files stay ``None``.

    >>> results = load_results("runs/dental-demo")
    >>> results.summary["best_step"] if results.summary else "training not run"
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
    res.summary = _read(run.train_summary, _json, res.problems)
    res.eval = _read(run.eval, _json, res.problems)
    if res.recipe is None and res.provenance and isinstance(res.provenance.get("recipe"), dict):
        res.recipe = res.provenance["recipe"]
    if res.audit is not None:
        res.findings = [_finding(f) for f in _list(res.audit.get("findings"))]
    if res.eval is not None:
        res.verdicts = [_verdict(v) for v in _list(res.eval.get("verdicts"))]
        res.samples = [_sample(s) for s in _list(res.eval.get("samples"))]
    if run.metrics.exists():
        res.curves = _curves(run.metrics, res.problems)
    return res


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


def _curves(path: Path, problems: list[str]) -> Curves:
    curves = Curves()
    bad = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1  # a run killed mid-write leaves at most a partial last line
            continue
        if not isinstance(rec, dict):
            bad += 1
            continue
        kind = rec.get("type")
        {"train": curves.train, "eval": curves.evals, "event": curves.events}.get(kind, []).append(rec)
    if bad:
        problems.append(f"metrics.jsonl: {bad} unreadable line(s) skipped")
    # On resume the log is truncated and redone, but sort anyway so plots never zig-zag.
    for records in (curves.train, curves.evals):
        records.sort(key=lambda r: r.get("step", 0) if isinstance(r.get("step"), (int, float)) else 0)
    return curves


def _finding(f: dict) -> Finding:
    return Finding(check=str(f.get("check", "")), severity=str(f.get("severity", "info")),
                   title=str(f.get("title") or f.get("check") or ""), count=f.get("count"),
                   message=str(f.get("message", "")), examples=_list(f.get("examples")))


def _verdict(v: dict) -> Verdict:
    return Verdict(name=str(v.get("name", "")), status=str(v.get("status", "")), value=v.get("value"),
                   threshold=v.get("threshold"), message=str(v.get("message", "")), fix=str(v.get("fix") or ""))


def _sample(s: dict) -> Sample:
    facts = s.get("key_facts")
    return Sample(id=str(s.get("id", "")), category=str(s.get("category") or ""), question=str(s.get("question", "")),
                  reference=str(s.get("reference") or ""), base=str(s.get("base") or ""),
                  finetuned=str(s.get("finetuned") or ""), key_facts=[str(x) for x in facts] if isinstance(facts, list) else [])
