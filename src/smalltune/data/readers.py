"""Read JSONL, JSON and CSV files into raw records, each with its 1-based line number.

Line numbers are what make an error actionable ("data.jsonl:17: ..."), so every reader keeps them:
JSONL per line, JSON by decoding the array element by element, CSV from the reader's position.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError
from ..registry import Registry


@dataclass
class RawRecord:
    value: Any  # what the file holds at that position (normally a dict)
    line: int
    error: str | None = None  # set when the record itself could not be parsed


Reader = Callable[[str], list[RawRecord]]
READERS: Registry[Reader] = Registry("data format")


def read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, None, "is a directory, expected a data file (.jsonl, .json or .csv)") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(path, line, f"not valid UTF-8 (byte {raw[e.start]:#x}); save the file as UTF-8") from None


# No record shape nests deeper than a few levels (record -> messages -> turn -> metadata); a bound
# far above that keeps a hostile file from exhausting the parser's recursion (and later the JSON
# writers', which copy metadata into result files).
MAX_DEPTH = 64
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels (records are flat objects; is this file a data file?)"


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists/objects more than ``limit`` levels (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > limit:
                return True
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False


def parse_json_record(text: str, line: int) -> RawRecord:
    """One JSON value at ``line``: the record, or a record carrying the parse error (never raises)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return RawRecord(None, line, f"malformed JSON ({e.msg} at column {e.colno})")
    except RecursionError:  # C decoder recursion: thousands of nested brackets
        return RawRecord(None, line, TOO_DEEP)
    except ValueError as e:  # valid syntax Python refuses, e.g. an integer of more than 4300 digits
        return RawRecord(None, line, f"unreadable JSON value ({e})")
    return RawRecord(None, line, TOO_DEEP) if too_deep(value) else RawRecord(value, line)


@READERS.register("jsonl")
def read_jsonl(text: str) -> list[RawRecord]:
    return [parse_json_record(line, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


@READERS.register("json")
def read_json(text: str) -> list[RawRecord]:
    decoder = json.JSONDecoder()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as e:
        return [RawRecord(None, e.lineno, f"malformed JSON ({e.msg} at column {e.colno})")]
    except RecursionError:
        return [RawRecord(None, 1, TOO_DEEP)]
    except ValueError as e:
        return [RawRecord(None, 1, f"unreadable JSON value ({e})")]
    if too_deep(whole, MAX_DEPTH + 2):  # the array and its wrapper object add two levels
        return [RawRecord(None, 1, TOO_DEEP)]
    if isinstance(whole, dict):  # {"data": [...]} or similar: the single list inside
        lists = [v for v in whole.values() if isinstance(v, list)]
        if len(lists) != 1:
            return [RawRecord(None, 1, "expected a JSON array of records (or an object holding one array)")]
    elif not isinstance(whole, list):
        return [RawRecord(None, 1, "expected a JSON array of records")]
    # Decode element by element to recover each record's starting line.
    start = _array_start(text, decoder) if isinstance(whole, dict) else text.index("[") + 1
    records, pos = [], start
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        value, end = decoder.raw_decode(text, pos)
        records.append(RawRecord(value, text.count("\n", 0, pos) + 1))
        pos = end
    return records


def _array_start(text: str, decoder: json.JSONDecoder) -> int:
    """Offset just inside the one top-level array of a JSON object (walks keys; nested values skipped)."""
    pos = text.index("{") + 1
    while True:
        while text[pos] in " \t\r\n,":
            pos += 1
        _key, pos = decoder.raw_decode(text, pos)
        pos = text.index(":", pos) + 1
        while text[pos] in " \t\r\n":
            pos += 1
        value, end = decoder.raw_decode(text, pos)
        if isinstance(value, list):
            return pos + 1
        pos = end


@READERS.register("csv")
def read_csv(text: str) -> list[RawRecord]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records, prev = [], 1  # the header ends on line 1
    try:
        for row in reader:
            line = prev + 1
            prev = reader.line_num
            if None in row:
                records.append(RawRecord(None, line, f"{len(row[None])} more fields than the header has"))
                continue
            records.append(RawRecord({k: v for k, v in row.items() if v not in (None, "")}, line))
    except csv.Error as e:
        records.append(RawRecord(None, prev + 1, f"malformed CSV ({e})"))
    if reader.fieldnames is None:
        return []
    return records


# A NUL byte is never text: a UTF-16 export without its BOM decodes as UTF-8 with a NUL after every
# ASCII letter, and a binary file holds them too. JSON refuses them anyway; CSV would train on them.
NUL_FIX = "a NUL byte is the mark of a UTF-16 or binary file; save the file as UTF-8 text"


def read_records(path: str | Path) -> list[RawRecord]:
    """Raw records of a data file, chosen by extension (.jsonl, .json, .csv)."""
    path = Path(path)
    fmt = file_format(path)
    text = read_text(path)
    if (at := text.find("\x00")) >= 0:
        start = text.rfind("\n", 0, at) + 1
        raise DataError(path, text.count("\n", 0, at) + 1, f"NUL byte at column {at - start + 1}: {NUL_FIX}")
    return READERS.get(fmt)(text)


def file_format(path: Path) -> str:
    """The reader name for ``path`` (checked to exist and be a file); a clear DataError otherwise."""
    if path.is_dir():
        raise DataError(path, None, "is a directory, expected a data file (.jsonl, .json or .csv)")
    if not path.exists():
        raise DataError(path, None, "file not found")
    ext = path.suffix.lower().lstrip(".")
    if ext == "ndjson":
        ext = "jsonl"
    if ext not in READERS:
        kind = f"unsupported file type '.{ext}'" if ext else "no file extension"
        raise DataError(path, None, f"{kind}; use .jsonl, .json or .csv")
    return ext
