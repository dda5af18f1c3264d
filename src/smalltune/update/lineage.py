"""Versions and their lineage: ``version.json`` in each update run, the lineage's data, version listings.

A version is a run directory. The first (a run of ``smalltune train``) has no ``version.json`` and
counts as version 1; every ``smalltune update`` writes a new run directory next to its parent with

* ``version.json``: number, parent, lineage back to the first version, the data it added, what it
  replayed, which earlier examples it found stale, its learning rate, and its gate outcome;
* ``data/pool.jsonl``: every example the lineage now holds true (earlier ones minus the stale ones,
  plus the added ones), each tagged with its split and the version that added it; the next update
  replays from it. ``data/test.jsonl`` holds the lineage's current test set the same way.

Each version is self-contained (its data files and its artifact), so a parent can be deleted or
moved without breaking its children's evaluation; ``parent`` is stored relative to the project folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data import Example, load_examples
from ..rundir import RunDir, atomic_write_json, atomic_write_text

VERSION_FILE = "version.json"
GATE_FILE = "gate.json"
AUDIT_FILE = "update_audit.json"
SCHEMA_VERSION = 1


@dataclass
class VersionRecord:
    """``version.json``: where a version comes from and what it added."""

    name: str
    version: int
    parent: str | None = None  # the parent's folder, relative to this version's project folder
    lineage: list[str] = field(default_factory=list)  # folder names, first version first, this one last
    created: str = ""
    data_added: dict = field(default_factory=dict)  # files, counts, corrections
    replay: dict = field(default_factory=dict)  # share, examples replayed, pool size, general replay ratio
    stale: dict = field(default_factory=dict)  # {"train": [ids], "test": [ids]} found stale by this update
    lr: float | None = None
    forgetting_budget: dict | None = None  # {"lineage", "parent_spent", "room", "budget"}: the training guard's budget
    status: str = "training"  # training | trained | no artifact | gated
    gate: dict | None = None  # {"passed", "forced", "regressions": [...]} once the gate ran
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VersionRecord":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_version(run_path) -> VersionRecord | None:
    path = Path(run_path) / VERSION_FILE
    if not path.exists():
        return None
    return VersionRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))


def write_version(run_path, record: VersionRecord) -> None:
    atomic_write_json(Path(run_path) / VERSION_FILE, record.to_dict())


def version_of(run_path) -> VersionRecord:
    """The run's version record; a run without one is the first version of its lineage."""
    found = read_version(run_path)
    if found is not None:
        return found
    run = RunDir(Path(run_path))
    created = ""
    if run.provenance.exists():
        created = json.loads(run.provenance.read_text(encoding="utf-8")).get("created", "")
    return VersionRecord(name=run.path.name, version=1, lineage=[run.path.name], created=created, status="trained")


def parent_path(run_path, record: VersionRecord) -> Path | None:
    return None if record.parent is None else (Path(run_path).parent / record.parent).resolve()


def relative_parent(child: Path, parent: Path) -> str:
    return os.path.relpath(Path(parent).resolve(), Path(child).resolve().parent)


# --- the lineage's data ---------------------------------------------------------------------------
POOL = "data/pool.jsonl"
TEST = "data/test.jsonl"


def pool_of(run_path, recipe) -> tuple[list[Example], list[Example]]:
    """(training, validation) examples the lineage holds at this version (what an update replays from)."""
    path = Path(run_path) / POOL
    if path.exists():
        examples = load_examples(path)
        return ([e for e in examples if e.meta.get("pool_split") != "validation"],
                [e for e in examples if e.meta.get("pool_split") == "validation"])
    from ..train.splits import recorded_splits  # the first version: what it trained and validated on

    splits = recorded_splits(Path(run_path), recipe)
    return list(splits.train), list(splits.validation)


def tests_of(run_path, recipe) -> list[Example]:
    """The lineage's test set at this version (the first version's ``data.test``; none when it had none)."""
    path = Path(run_path) / TEST
    if read_version(run_path) is not None:
        return load_examples(path) if path.exists() else []
    return load_examples(recipe.data.test) if recipe.data.test else []


def write_examples(path: Path, examples: list[Example], **meta) -> Path | None:
    """Write ``examples`` as JSONL (their metadata kept, ``meta`` added); nothing when there are none."""
    if not examples:
        return None
    lines = [json.dumps({**e.to_dict(), **meta}, ensure_ascii=False) for e in examples]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


# --- listings ---------------------------------------------------------------------------------------
@dataclass
class VersionRow:
    """One line of ``smalltune versions``."""

    name: str
    version: int
    parent: str | None
    created: str
    added: str
    metrics: str
    gate: str
    current: bool = False
    path: str = ""


def find_versions(project) -> list[tuple[Path, VersionRecord]]:
    """Every version in ``project``: runs with a ``version.json``, their ancestors there, and the pointer's target."""
    from .pointer import read_pointer

    project = Path(project)
    found: dict[Path, VersionRecord] = {}
    for child in sorted(p for p in project.iterdir() if p.is_dir()):
        record = read_version(child)
        if record is None:
            continue
        found[child.resolve()] = record
        for name in record.lineage[:-1]:
            ancestor = (project / name).resolve()
            if ancestor.is_dir() and ancestor not in found:
                found[ancestor] = version_of(ancestor)
    pointer = read_pointer(project)
    if pointer and (project / pointer["version"]).is_dir():
        target = (project / pointer["version"]).resolve()
        found.setdefault(target, version_of(target))
    return sorted(found.items(), key=lambda kv: (kv[1].lineage[:1], kv[1].version, kv[1].created, kv[1].name))


def list_versions(project) -> list[VersionRow]:
    """The lineage table of ``project`` (oldest first).

    >>> [(r.name, r.gate, r.current) for r in list_versions("runs/clinic")]
    [('v1', '—', False), ('v1-v2', 'passed', True)]
    """
    from .pointer import read_pointer

    pointer = read_pointer(Path(project))
    rows = []
    for path, record in find_versions(project):
        added = record.data_added
        text = "—" if not added else (f"{added.get('train', 0)} train, {added.get('test', 0)} test"
                                       + (f" ({added['corrections']} corrections)" if added.get("corrections") else "")
                                       + (f" from {Path(added['file']).name}" if added.get("file") else ""))
        rows.append(VersionRow(record.name, record.version, record.parent and Path(record.parent).name,
                               record.created[:16].replace("T", " "), text, key_metrics(path), gate_text(record),
                               bool(pointer and pointer["version"] == path.name), str(path)))
    return rows


def gate_text(record: VersionRecord) -> str:
    if record.gate is None:
        return {"training": "training", "no artifact": "no artifact"}.get(record.status, "—")
    if record.gate.get("forced") and not record.gate.get("passed"):
        return "failed, forced"
    return "passed" if record.gate.get("passed") else "failed"


def key_metrics(run_path) -> str:
    """A short line of the version's headline numbers: its gate's test metrics, else its evaluation's."""
    path = Path(run_path) / GATE_FILE
    if path.exists():
        gate = json.loads(path.read_text(encoding="utf-8"))
        parts = [f"{c['section'].replace('_', ' ')} {c['metric'].replace('_', ' ')} {_pct(c['new'])}"
                 for c in gate.get("checks", []) if c["metric"] in ("key_fact_recall", "token_accuracy")
                 and c["new"] is not None]
        return ", ".join(parts[:3]) or "—"
    run = RunDir(Path(run_path))
    if run.eval.exists():
        from ..schema import read_eval

        m = read_eval(run.eval).metric("task", "key_fact_recall")
        if m is not None and m.finetuned is not None:
            return f"key-fact recall {_pct(m.finetuned)} (evaluate)"
    if run.train_summary.exists():
        best = json.loads(run.train_summary.read_text(encoding="utf-8")).get("best_metrics") or {}
        if best.get("eval_loss") is not None:
            return f"validation loss {best['eval_loss']:.3f}"
    return "—"


def _pct(x) -> str:
    return "—" if x is None else f"{x:.0%}"
