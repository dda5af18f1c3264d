"""Read a data file for the audit: every record, every problem, nothing stops at the first error.

``data.load_examples`` stops at the first bad record (right for training); the audit must list
them all, including encoding damage that ``data.readers.read_text`` turns into one error for the
whole file. So this module reads bytes line by line, decodes each line on its own (a bad byte
costs one line, not the file), then reuses the project's JSON/CSV readers and
``data.formats.record_problems`` for parsing and schema checks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..data.example import Example
from ..data.formats import detect_shape, normalise, record_problems
from ..data.readers import READERS, RawRecord, file_format, parse_json_record
from ..errors import DataError
from .text import CONTROL, MOJIBAKE, strings_in


@dataclass
class Problem:
    line: int
    kind: str  # a FORMAT_KINDS key (see checks/format.py)
    detail: str


@dataclass
class SplitData:
    """One split as the checks see it: valid examples plus every problem found while reading."""

    name: str  # train / validation / test
    path: Path
    records: int = 0  # records parsed (valid or not)
    examples: list[Example] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    shapes: Counter = field(default_factory=Counter)

    @property
    def file(self) -> str:
        return str(self.path)


def _decode_lines(raw: bytes, problems: list[Problem]) -> list[str]:
    """Decode each line on its own, recording invalid UTF-8 and NUL bytes with their line."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = []
    for n, b in enumerate(raw.split(b"\n"), 1):
        if b"\x00" in b:
            problems.append(Problem(n, "nul", f"NUL byte at column {b.index(0) + 1}"))
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append(Problem(n, "invalid_utf8", f"byte {b[e.start]:#x} at column {e.start + 1} is not valid UTF-8"))
            text = b.decode("utf-8", errors="replace")
        lines.append(text.rstrip("\r").replace("\x00", ""))
    return lines


def _parse(fmt: str, lines: list[str]) -> list[RawRecord]:
    if fmt == "jsonl":  # per line, so one broken line does not hide the next
        return [parse_json_record(line, n) for n, line in enumerate(lines, 1) if line.strip()]
    return READERS.get(fmt)("\n".join(lines))


def _encoding_problems(value, line: int, bad_lines: set[int]) -> list[Problem]:
    out = []
    for where, s in strings_in(value):
        if m := CONTROL.search(s):
            out.append(Problem(line, "control", f"{where or 'value'}: control character U+{ord(m.group()):04X}"))
        m = MOJIBAKE.search(s)
        if m and not (m.group() == "\ufffd" and line in bad_lines):  # U+FFFD we inserted ourselves
            out.append(Problem(line, "mojibake", f"{where or 'value'}: {m.group()!r} looks like UTF-8 decoded as cp1252"))
    return out


def read_split(name: str, path: str | Path) -> SplitData:
    """Read one file completely; unusable input (missing, wrong type, nothing parseable) raises DataError."""
    path = Path(path)
    fmt = file_format(path)
    split = SplitData(name, path)
    lines = _decode_lines(path.read_bytes(), split.problems)
    bad_lines = {p.line for p in split.problems if p.kind == "invalid_utf8"}
    records = _parse(fmt, lines)
    parsed = [r for r in records if r.error is None]
    if not parsed:
        if records:
            raise DataError(path, records[0].line, f"nothing parseable: none of {len(records)} records could be "
                                                   f"read (first: {records[0].error})")
        raise DataError(path, None, "no records found")
    split.records = len(records)
    for i, rec in enumerate(records):
        if rec.error:
            split.problems.append(Problem(rec.line, "json", rec.error))
            continue
        split.problems += _encoding_problems(rec.value, rec.line, bad_lines)
        problems = record_problems(rec.value)
        split.problems += [Problem(rec.line, "schema", p) for p in problems]
        shape = detect_shape(rec.value)
        if shape:
            split.shapes[shape] += 1
        if not problems:
            split.examples.append(normalise(rec.value, str(path), rec.line, i))
    if len(split.shapes) > 1:  # mixed formats: point at the records in the minority shapes
        main = split.shapes.most_common(1)[0][0]
        for rec in parsed:
            shape = detect_shape(rec.value)
            if shape and shape != main:
                split.problems.append(Problem(rec.line, "mixed_shapes", f"{shape} record in a file of mostly {main} records"))
    split.problems.sort(key=lambda p: p.line)
    return split
