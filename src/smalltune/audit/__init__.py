"""The data audit: what is wrong with the data, before any compute is spent on it.

``audit(train, validation, test, model=...)`` runs every check registered in
``audit.checks.CHECKS`` (format, length, duplicates, leakage, size, consistency, perplexity) and
returns an :class:`AuditReport`. Importing this package stays cheap: torch, transformers and
datasketch load only when a check needs them.

>>> from smalltune.audit import audit
>>> report = audit("examples/dental/train.jsonl", validation="examples/dental/validation.jsonl")
>>> report.exit_code()
"""

from .report import AuditReport, Finding
from .runner import audit

__all__ = ["audit", "AuditReport", "Finding"]
