"""Documenting a recipe from its schema: the table of every key (``smalltune recipe --explain``)
and YAML text with each key commented by its help, or by the planner's reason for its value.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from .options import field_types, is_section
from .sections import Recipe


def iter_fields(cls=Recipe, prefix: str = ""):
    """Yield (dotted key, type, default, help, choices) for every leaf field, in schema order."""
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if is_section(tp):
            yield from iter_fields(tp, f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            key = f"{prefix}{f.name}"
            yield key, tp, default, field_help(key, f.metadata.get("help", "")), f.metadata.get("choices")


def field_help(key: str, text: str) -> str:
    """A field's help; a ``method.*`` key also names the methods that read it (each method declares its keys).

    >>> field_help("method.r", "rank: size of the low-rank update")
    'lora, dora: rank: size of the low-rank update'
    """
    if not key.startswith("method.") or key == "method.name":
        return text
    from ..train.methods import methods_using

    return f"{', '.join(methods_using(key)) or 'no method'}: {text}"


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").removesuffix("...").strip() if value is not None else ""


def dump(obj, notes: dict[str, str], comments: bool, prefix: str = "", indent: int = 0) -> str:
    """YAML text of a recipe (or one section, indented), each key commented when ``comments``."""
    lines: list[str] = []
    hints = field_types(type(obj))
    pad = "  " * indent
    for f in dataclasses.fields(obj):
        key = f"{prefix}{f.name}"
        value = getattr(obj, f.name)
        note = notes.get(key) or field_help(key, f.metadata.get("help", ""))
        if is_section(hints[f.name]):
            if comments and indent == 0:
                lines.append("")
                lines.append(f"# {note}" if note else "")
            lines.append(f"{pad}{f.name}:")
            lines.append(dump(value, notes, comments, f"{key}.", indent + 1))
        else:
            text = f"{pad}{f.name}: {_yaml_scalar(value)}".rstrip()
            if comments and note:
                text = f"{text}  # {note}"
            lines.append(text)
    return "\n".join(line for line in lines if line is not None) + ("\n" if indent == 0 else "")
