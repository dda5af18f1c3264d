"""The typed audit result: findings (what is wrong, how bad, where, what to try) and statistics.

``audit.json`` in a run directory is ``AuditReport.to_dict()``; later stages and the report read
it back with :meth:`AuditReport.from_dict`, never by re-running the checks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import EXIT_FINDINGS, EXIT_OK

SEVERITIES = ("error", "warning", "info")  # worst first
SCHEMA_VERSION = 1


@dataclass
class Finding:
    """One kind of problem found by one check.

    ``count`` is how many times it occurs (examples, clusters or lines, as ``title`` says);
    ``examples`` point at some of the occurrences: ``{"file": ..., "line": N, ...}`` (1-based).

    >>> Finding("duplicates", "warning", "exact duplicates", 2, "...", [{"file": "a.jsonl", "line": 3}])
    """

    check: str
    severity: str
    title: str
    count: int
    message: str  # one line: what it means, then the fix to try
    examples: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        return cls(d["check"], d["severity"], d["title"], int(d["count"]), d["message"], list(d.get("examples", [])))


@dataclass
class AuditReport:
    """All findings (worst first) plus per-split statistics.

    >>> report = smalltune.audit("train.jsonl", validation="val.jsonl")
    >>> report.exit_code(), [f.title for f in report.errors]
    """

    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # split -> path
    settings: dict[str, Any] = field(default_factory=dict)  # model, max_length, threshold, ...
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.findings = sorted(self.findings, key=lambda f: (f.rank, -f.count))

    def by_severity(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    errors = property(lambda self: self.by_severity("error"))
    warnings = property(lambda self: self.by_severity("warning"))

    def exit_code(self, fail_on: str = "error") -> int:
        """0 when nothing at or above ``fail_on`` severity was found, else 1."""
        if fail_on not in ("error", "warning"):
            raise ValueError(f"fail_on must be 'error' or 'warning', got {fail_on!r}")
        worst = SEVERITIES.index(fail_on)
        return EXIT_FINDINGS if any(f.rank <= worst for f in self.findings) else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "summary": {s: len(self.by_severity(s)) for s in SEVERITIES},
            "files": self.files,
            "settings": self.settings,
            "findings": [f.to_dict() for f in self.findings],
            "stats": self.stats,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AuditReport":
        return cls(
            findings=[Finding.from_dict(f) for f in d.get("findings", [])],
            stats=d.get("stats", {}),
            files=d.get("files", {}),
            settings=d.get("settings", {}),
            provenance=d.get("provenance", {}),
        )
