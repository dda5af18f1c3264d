"""The audit checks: one module each, one shape, registered here in the order they run.

A check is ``check(ctx: AuditContext) -> list[Finding]``; it may add its statistics to
``ctx.stats[<its name>]``. Register a new one with ``@CHECKS.register("name")`` in its own module
and import that module below.
"""

from __future__ import annotations

from typing import Callable

from ...registry import Registry

CHECKS: Registry[Callable] = Registry("audit check")

# Importing registers; the order here is the order the checks run and the report lists stats.
from . import format, length, duplicates, leakage, size, consistency, perplexity  # noqa: E402,F401

__all__ = ["CHECKS"]
