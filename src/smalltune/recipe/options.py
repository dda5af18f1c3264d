"""How a recipe field is declared and checked: :func:`option` and the small check functions.

A check returns the tail of an error message (``must be > 0, got -1``) or None when the value is
fine; the loader puts the key the user typed in front of it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from typing import Any, Callable

Check = Callable[[Any], "str | None"]


def option(default: Any, help: str, check: Check | None = None, choices: tuple | None = None):
    """A recipe field: its default, its one-line documentation and its validation."""
    meta = {"help": help, "check": check, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# --- checks: each returns the tail of an error message, or None when the value is fine -------
def _shown(v) -> str:
    """A value as the user typed it: -1, not -1.0."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def positive(v):
    return None if v is None or v > 0 else f"must be > 0, got {_shown(v)}"


def non_negative(v):
    return None if v is None or v >= 0 else f"must be >= 0, got {_shown(v)}"


def fraction(v):
    return None if v is None or 0 <= v < 1 else f"must be in [0, 1), got {_shown(v)}"


def at_least(lo):
    def check(v):
        return None if v is None or v >= lo else f"must be >= {lo}, got {_shown(v)}"

    return check


# --- walking the schema: a field whose type is a dataclass is a section -----------------------
def is_section(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)
