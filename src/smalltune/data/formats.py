"""Record shapes, auto-detected per record, normalised to :class:`Example`.

Shapes: chat ``messages`` (the OpenAI fine-tuning format, optional ``weight`` 0/1 on assistant
turns), ``prompt``/``completion``, and Alpaca ``instruction``/``input``/``output``. Optional
metadata in any shape: ``category`` and ``id``; other fields are kept in ``Example.meta``.

``record_problems`` lists *every* problem of a record (the audit shows them all); loading stops
at the first one, naming file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError
from ..registry import Registry
from .example import ROLES, Example
from .readers import read_records


@dataclass(frozen=True)
class Shape:
    keys: tuple[str, ...]  # fields whose presence identifies the shape
    to_messages: Callable[[dict], list[dict]]
    owned: tuple[str, ...]  # fields consumed by the shape (not copied into meta)


SHAPES: Registry[Shape] = Registry("record shape")


def _prompt_completion(r: dict) -> list[dict]:
    return [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]


def _alpaca(r: dict) -> list[dict]:
    extra = r.get("input")
    user = f"{r['instruction']}\n\n{extra}" if isinstance(extra, str) and extra.strip() else r["instruction"]
    return [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]


SHAPES.register("messages")(Shape(("messages",), lambda r: r["messages"], ("messages",)))
SHAPES.register("prompt_completion")(Shape(("prompt", "completion"), _prompt_completion, ("prompt", "completion")))
SHAPES.register("alpaca")(Shape(("instruction", "output"), _alpaca, ("instruction", "input", "output")))

METADATA = ("id", "category")


def detect_shape(record: Any) -> str | None:
    """Name of the shape a record has, or None."""
    if not isinstance(record, dict):
        return None
    for name, shape in SHAPES.items():
        if all(k in record for k in shape.keys):
            return name
    return None


def _text_problems(value: Any, where: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{where} must be a string, got {type(value).__name__}"]
    if not value.strip():
        return [f"{where} is empty or whitespace-only"]
    return []


def message_problems(messages: Any) -> list[str]:
    """Every problem of a chat ``messages`` list (types, roles, order, empty turns, weights)."""
    if not isinstance(messages, list) or not messages:
        return ["messages must be a non-empty list of {role, content} objects"]
    problems = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            problems.append(f"messages[{i}] must be an object, got {type(m).__name__}")
            continue
        role = m.get("role")
        if role not in ROLES:
            problems.append(f"messages[{i}].role {role!r} is not one of {', '.join(ROLES)}")
        problems += _text_problems(m.get("content"), f"messages[{i}].content")
        if "weight" in m and (m["weight"] not in (0, 1) or isinstance(m["weight"], bool)):
            problems.append(f"messages[{i}].weight must be 0 or 1, got {m['weight']!r}")
        if "weight" in m and role != "assistant":
            problems.append(f"messages[{i}].weight is only allowed on assistant turns")
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    body = roles[1:] if roles[:1] == ["system"] else roles
    if "system" in body:
        problems.append("a system turn may only come first")
    elif body and body[0] != "user":
        problems.append(f"the conversation must start with a user turn (after an optional system turn), not {body[0]!r}")
    elif any(a == b for a, b in zip(body, body[1:])):
        problems.append("user and assistant turns must alternate")
    if "assistant" not in roles:
        problems.append("missing assistant turn: nothing to learn from")
    elif roles[-1] != "assistant":
        problems.append("the last turn must be the assistant's (a trailing user turn has no answer)")
    elif not any(m.get("weight", 1) for m in messages if isinstance(m, dict) and m.get("role") == "assistant"):
        problems.append("every assistant turn has weight 0: nothing to learn from")
    return problems


def record_problems(record: Any) -> list[str]:
    """Every schema problem of one raw record."""
    shape = detect_shape(record)
    if shape is None:
        if not isinstance(record, dict):
            return [f"expected an object, got {type(record).__name__}"]
        # a field name may hold line breaks (a CSV header cell "\r"): shown escaped, the message stays one line
        keys = ", ".join(k if str(k).isprintable() else repr(k) for k in sorted(record)) or "none"
        return [f"unrecognised record shape (fields: {keys}); expected messages, prompt/completion or instruction/output"]
    problems = []
    if shape == "messages":
        problems += message_problems(record["messages"])
    else:
        for key in SHAPES.get(shape).keys:
            problems += _text_problems(record[key], key)
        if shape == "alpaca" and "input" in record and not isinstance(record["input"], str):
            problems.append(f"input must be a string, got {type(record['input']).__name__}")
    if "category" in record and not isinstance(record["category"], str):
        problems.append(f"category must be a string, got {type(record['category']).__name__}")
    if "id" in record and not isinstance(record["id"], (str, int)):
        problems.append(f"id must be a string or integer, got {type(record['id']).__name__}")
    return problems


def normalise(record: dict, source: str, line: int, index: int) -> Example:
    """One valid raw record -> :class:`Example` (call :func:`record_problems` first)."""
    shape_name = detect_shape(record)
    shape = SHAPES.get(shape_name)
    messages = [
        {k: v for k, v in m.items() if k in ("role", "content", "weight")} for m in shape.to_messages(record)
    ]
    meta = {k: v for k, v in record.items() if k not in shape.owned and k not in METADATA}
    return Example(
        messages=messages,
        id=str(record.get("id", f"{Path(source).stem}-{index + 1}")),
        source=source,
        line=line,
        category=record.get("category"),
        shape=shape_name,
        meta=meta,
    )


def load_examples(path: str | Path) -> list[Example]:
    """Read and validate a data file; the first bad record raises :class:`DataError` naming file and line.

    >>> examples = load_examples("examples/dental/train.jsonl")
    >>> examples[0].category, examples[0].target
    """
    path = Path(path)
    records = read_records(path)
    examples = []
    for i, rec in enumerate(records):
        problems = [rec.error] if rec.error else record_problems(rec.value)
        if problems:
            more = f" (and {len(problems) - 1} more problems; `smalltune audit` lists them all)" if len(problems) > 1 else ""
            raise DataError(path, rec.line, problems[0] + more)
        examples.append(normalise(rec.value, str(path), rec.line, i))
    if not examples:
        raise DataError(path, None, "no records found")
    return examples
