"""Generated examples as ordinary data records: the prompt field of each shape, and atomic file writing.

A variant keeps its source record's shape and every field of it (category, key_facts, ...) but the
id and the prompt, and adds where it came from: ``source_id``, ``augment_method``, ``generator``.
Files are written in the format their extension names (.jsonl, .json, .csv), like the readers read.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

from ..errors import SmalltuneError
from ..rundir import atomic_write_text



def _last_user(messages: list[dict]) -> int:
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    return max(i for i, m in enumerate(messages[:last]) if m.get("role") == "user")


def get_prompt(raw: dict, shape: str) -> str:
    """The user text a variant replaces: the last user turn, ``prompt`` or ``instruction``.

    >>> get_prompt({"instruction": "Summarise", "input": "long text", "output": "short"}, "alpaca")
    'Summarise'
    """
    if shape == "messages":
        return raw["messages"][_last_user(raw["messages"])]["content"]
    return raw["prompt"] if shape == "prompt_completion" else raw["instruction"]


def with_prompt(raw: dict, shape: str, text: str, **meta) -> dict:
    """A copy of ``raw`` with its prompt replaced by ``text`` and ``meta`` fields set."""
    out = copy.deepcopy(raw)
    if shape == "messages":
        out["messages"][_last_user(out["messages"])]["content"] = text
    else:
        out["prompt" if shape == "prompt_completion" else "instruction"] = text
    out.update(meta)
    return out


def default_output(data: str | Path, method: str) -> Path:
    """``train.jsonl`` -> ``train.paraphrase.jsonl`` next to it."""
    data = Path(data)
    return data.with_name(f"{data.stem}.{method}{data.suffix}")


def counts_path(output: str | Path, verb: str) -> Path:
    """Where the acceptance counts go: ``train.paraphrase.jsonl`` -> ``train.paraphrase.augment.json``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.{verb}.json")


def write_records(path: str | Path, records: list[dict]) -> Path:
    """Write ``records`` atomically as JSONL, a JSON array or CSV, chosen by the extension."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext in (".jsonl", ".ndjson"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    elif ext == ".json":
        text = json.dumps(records, ensure_ascii=False, indent=1) + "\n"
    elif ext == ".csv":
        if any("messages" in r for r in records):
            raise SmalltuneError(f"{path}: chat records (messages) cannot be written as CSV; use .jsonl")
        columns = list(dict.fromkeys(k for r in records for k in r))
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        for r in records:  # lists and objects (key_facts, ...) as JSON text in their cell
            writer.writerow({k: v if isinstance(v, str) else json.dumps(v) for k, v in r.items()})
        text = buf.getvalue()
    else:
        raise SmalltuneError(f"{path}: unsupported output type '{ext}'; use .jsonl, .json or .csv")
    atomic_write_text(path, text)
    return path
