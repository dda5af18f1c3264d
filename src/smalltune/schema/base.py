"""The record shape every result file shares, and the version rule every reader applies.

A record is a dataclass: its declared fields are what smalltune reads back by name; anything else a
file holds (a guard's or a regulariser's own number, a field a newer minor version added) is kept in
``extra`` and written back unchanged, so plugins add signals without a schema change.

Versions are ``"MAJOR.MINOR"`` strings, one per file kind. A minor bump only adds (an optional field,
a record kind); readers of the same major read it, the new parts landing in ``extra``. A major bump
renames, removes or changes the meaning of a field; readers refuse a newer major with one line rather
than misread it. A file (or metrics line) without ``schema_version`` predates versioning: version 0,
read with the same field names and every missing field ``None``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from ..errors import SmalltuneError

R = TypeVar("R", bound="Record")
UNVERSIONED = "0"  # what a file written before schema versions reads as

# Field metadata: leave the key out of to_dict() while its value is None (optional signals, so a run
# without the forgetting guard does not log "ref_ppl": null on every line).
OMIT_NONE = {"omit_none": True}


class SchemaVersionError(SmalltuneError):
    """A result file written by a newer smalltune whose major schema version this one cannot read."""


def major(version: Any, what: str) -> int:
    """The major number of a stored version (``"1.2"``, ``1`` or ``None`` for unversioned files)."""
    if version is None:
        return 0
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise SchemaVersionError(f"{what}: schema_version {version!r} is not MAJOR.MINOR") from None


def check_version(version: Any, current: str, what: str) -> str:
    """The stored version as a string; a newer major than ``current`` is refused with one clear line.

    >>> check_version(None, "1.0", "eval.json")
    '0'
    >>> check_version("2.0", "1.0", "eval.json")
    Traceback (most recent call last):
    SchemaVersionError: eval.json: schema_version 2.0 was written by a newer smalltune (this one reads up to 1.x); upgrade smalltune to read it
    """
    found = major(version, what)
    if found > major(current, what):
        raise SchemaVersionError(f"{what}: schema_version {version} was written by a newer smalltune "
                                 f"(this one reads up to {major(current, what)}.x); upgrade smalltune to read it")
    return UNVERSIONED if version is None else str(version)


def plain(value: Any) -> Any:
    """``value`` with nested records turned into dicts (JSON-ready apart from scalars)."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass
class Record:
    """Base of every typed record: ``from_dict`` keeps unknown keys in ``extra``; ``to_dict`` restores them.

    Subclasses declare ``SCHEMA`` (current version of their file, or None for a record nested in a file
    that carries the version) and may declare ``KIND`` (the ``type`` tag of a metrics line).
    """

    SCHEMA: ClassVar[str | None] = None
    KIND: ClassVar[str | None] = None
    FILE: ClassVar[str] = "record"  # how error messages name the file this record lives in

    @property
    def kind(self) -> str | None:
        """The ``type`` tag of a metrics line (None for records of the other files)."""
        return self.KIND

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls: type[R], data: dict, what: str | None = None) -> R:
        """Read one record; missing fields take their default (or None), unknown keys go to ``extra``.

        Raises :class:`SchemaVersionError` when ``data`` carries a newer major version than ``SCHEMA``.
        """
        if not isinstance(data, dict):
            raise SmalltuneError(f"{what or cls.FILE}: expected a mapping, got {type(data).__name__}")
        data = dict(data)
        if cls.KIND is not None:
            data.pop("type", None)
        kwargs: dict[str, Any] = {}
        if cls.SCHEMA is not None:
            kwargs["schema_version"] = check_version(data.pop("schema_version", None), cls.SCHEMA, what or cls.FILE)
        for f in dataclasses.fields(cls):
            if f.name in ("extra", "schema_version"):
                continue
            if f.name in data:
                kwargs[f.name] = cls._field_from(f.name, data.pop(f.name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                kwargs[f.name] = None  # an older or hand-written file without this field
        return cls(**kwargs, extra=data)

    @classmethod
    def _field_from(cls, name: str, value: Any) -> Any:
        """Hook for fields holding nested records (see EvalResult); plain values pass through."""
        return value

    def to_dict(self) -> dict:
        """The record as its file stores it: version first, the ``type`` tag, fields, then ``extra``."""
        out: dict[str, Any] = {}
        if self.SCHEMA is not None:
            out["schema_version"] = getattr(self, "schema_version")
        if self.KIND is not None:
            out["type"] = self.KIND
        for f in dataclasses.fields(self):
            if f.name in ("extra", "schema_version"):
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = plain(value)
        out.update(plain(self.extra))
        return out

    def lookup(self, name: str, default: Any = None) -> Any:
        """A declared field or an ``extra`` signal by name, for code that plots whichever one it is given."""
        if name in self.names():
            got = getattr(self, name)
            return default if got is None else got
        return self.extra.get(name, default)


def read_record(path, cls: type[R]) -> R:
    """Read a JSON result file into ``cls``; an unreadable file or a newer major version is one clear line."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise SmalltuneError(f"{path}: unreadable ({type(e).__name__}: {first})") from None
    return cls.from_dict(data, str(path))
