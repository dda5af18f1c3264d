"""The served version: one pointer file per project folder, ``<project>/current``, moved atomically.

``current`` is a small JSON file naming the version folder that should be served, with the moves
that led there (newest last). It is only ever replaced whole (temporary file, fsync, rename:
:func:`smalltune.rundir.atomic_write_text`), so a reader, or a ``promote`` killed half-way, sees
the previous pointer or the new one, never a mix. Serving scripts read ``version`` (or run
``smalltune versions DIR --current``, which prints the folder's path).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EXIT_FINDINGS, SmalltuneError
from ..rundir import RunDir, atomic_write_text

POINTER = "current"
HISTORY = 100  # moves kept in the pointer file


def read_pointer(project) -> dict | None:
    """The pointer of ``project``: ``{"version", "moved", "by", "forced", "history"}``, or None when unset."""
    path = Path(project) / POINTER
    if not path.exists():
        return None
    try:
        pointer = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SmalltuneError(f"{path}: not a smalltune version pointer (unreadable JSON)") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
        raise SmalltuneError(f"{path}: not a smalltune version pointer (no version name)")
    return pointer


def move_pointer(project, version: str, by: str, forced: bool = False, note: str = "") -> dict:
    """Point ``project/current`` at the version folder ``version``; returns the new pointer."""
    from .lineage import now

    project = Path(project)
    old = read_pointer(project)
    move = {"version": version, "moved": now(), "by": by, "forced": forced, "previous": old and old["version"]}
    if note:
        move["note"] = note
    history = [*(old or {}).get("history", []), move][-HISTORY:]
    pointer = {**move, "history": history}
    atomic_write_text(project / POINTER, json.dumps(pointer, indent=2) + "\n")
    return pointer


def _version_dir(path) -> Path:
    run = RunDir(Path(path))
    if not run.recipe.exists():
        raise SmalltuneError(f"{run.path}: not a run directory (no recipe.yaml)")
    from ..recipe import load_recipe
    from ..train.methods import METHODS

    method = METHODS.get(load_recipe(run.recipe).method.name, "method.name")()
    if not (run.path / method.artifact).exists():
        raise SmalltuneError(f"{run.path}: no trained {method.artifact}/ to serve", EXIT_FINDINGS)
    return run.path.resolve()


def promote(version_dir, force: bool = False, by: str = "promote") -> dict:
    """Make ``version_dir`` the served version of its project folder (its parent folder).

    A version whose regression gate failed is refused unless ``force``; the pointer records a forced move.

    >>> promote("runs/clinic/clinic-v2")["version"]
    'clinic-v2'
    """
    from .lineage import read_version, write_version

    path = _version_dir(version_dir)
    record = read_version(path)
    failed = record is not None and record.gate is not None and not record.gate.get("passed")
    if failed and not force:
        worst = "; ".join(record.gate.get("regressions", [])[:2])
        raise SmalltuneError(f"{path.name} failed its regression gate ({worst}); pass --force to promote it anyway",
                             EXIT_FINDINGS)
    if record is not None and record.gate is not None and failed and not record.gate.get("forced"):
        record.gate["forced"] = True  # recorded where the version is listed, as well as in the pointer
        write_version(path, record)
    return move_pointer(path.parent, path.name, by, forced=failed)


def rollback(project, to: str | None = None) -> dict:
    """Point ``project/current`` back at the version served before the current one was promoted (or at ``to``).

    >>> rollback("runs/clinic")["version"]
    'clinic'
    """
    project = Path(project)
    pointer = read_pointer(project)
    if pointer is None:
        raise SmalltuneError(f"{project}: no version is served yet ({POINTER} missing); nothing to roll back")
    if to is None:  # the version served before the current one was promoted: repeated rollbacks walk back
        promoted = [m for m in pointer.get("history", []) if m["version"] == pointer["version"] and m["by"] != "rollback"]
        to = promoted[-1].get("previous") if promoted else None
        if not to:
            raise SmalltuneError(f"{project}: nothing was served before {pointer['version']}; nothing to roll back to")
    path = _version_dir(project / to if (project / to).is_dir() else Path(to))  # a folder name, or a path
    if path.parent != project.resolve():
        raise SmalltuneError(f"{to}: not a version in {project}")
    return move_pointer(project, path.name, "rollback")
