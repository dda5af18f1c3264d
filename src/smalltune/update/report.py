"""The update section of a version's report: the version against its parent, metric by metric.

Read only from the version's files (``version.json``, ``gate.json``, ``update_audit.json``); the
report page includes ``templates/update.html.j2`` with :func:`update_section`'s result, and
``report.md`` appends :func:`update_markdown`'s lines. A run that is not an update gets neither.
"""

from __future__ import annotations

import json
from pathlib import Path

from .gate import SECTION_NAMES
from .lineage import AUDIT_FILE, GATE_FILE, read_version


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def update_section(run_dir) -> dict | None:
    """What the page shows for an update run (None for a run that is not one)."""
    from ..report.render import compare_rows

    run = Path(run_dir)
    record = read_version(run)
    if record is None:
        return None
    gate, audit = _load(run / GATE_FILE), _load(run / AUDIT_FILE)
    checks = []
    for c in (gate or {}).get("checks", []):
        delta = None if c.get("new") is None or c.get("parent") is None else c["new"] - c["parent"]
        checks.append({"name": f"{SECTION_NAMES.get(c['section'], c['section'])}: {c['metric'].replace('_', ' ')}",
                       "parent": c.get("parent"), "new": c.get("new"), "delta": delta,
                       "message": c.get("message", ""), "status": "problem" if c.get("regressed") else "ok",
                       "n": c.get("n")})
    others = []
    for section, probe in ((gate or {}).get("sections") or {}).items():
        rows, _ = compare_rows(probe)
        others += [{**r, "name": f"{SECTION_NAMES.get(section, section)}: {r['name']}"} for r in rows
                   if "." not in r["name"]]
    g = record.gate or {}
    return {"version": record.version, "name": record.name, "parent": record.parent, "lineage": record.lineage,
            "created": record.created, "added": record.data_added, "replay": record.replay, "lr": record.lr,
            "stale": {k: len(v) for k, v in (record.stale or {}).items()}, "status": record.status,
            "passed": g.get("passed"), "forced": g.get("forced"), "checks": checks, "rows": others,
            "findings": (audit or {}).get("findings", []), "sources": (gate or {}).get("sources", {})}


def update_markdown(run_dir) -> list[str]:
    """The report.md lines of the update section (none for a run that is not an update)."""
    s = update_section(run_dir)
    if s is None:
        return []
    verdict = {True: "passed", False: "failed" + (", promoted anyway (--force)" if s["forced"] else ", not promoted"),
               None: "not run"}[s["passed"]]
    lines = [f"## Update: version {s['version']} against its parent `{s['parent']}`", "",
             f"Gate {verdict}. Added {s['added'].get('train', 0)} training and {s['added'].get('test', 0)} test examples; "
             f"replayed {s['replay'].get('examples', 0)} of {s['replay'].get('pool', 0)} earlier ones; "
             f"{s['stale'].get('train', 0)} earlier examples stale.", ""]
    if s["checks"]:
        lines += ["| check | parent | new | result |", "| --- | --- | --- | --- |"]
        for c in s["checks"]:
            lines.append(f"| {c['name']} | {_f(c['parent'])} | {_f(c['new'])} | "
                         f"{'REGRESSED: ' if c['status'] == 'problem' else ''}{c['message'].replace('|', '/')} |")
        lines.append("")
    return lines


def _f(x) -> str:
    return "—" if x is None else f"{x:.4g}"
