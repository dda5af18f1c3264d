"""Provenance stamped into every result file: what produced it, with which versions and settings."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
from pathlib import Path

from . import __version__

_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "safetensors", "datasketch")


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def git_hash(path: Path | None = None) -> str | None:
    """Commit of the smalltune checkout (or of ``path``), with ``+dirty`` when it has local changes."""
    cwd = path or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(recipe=None, seed: int | None = None, **counts) -> dict:
    """The provenance block: versions, time, host, git hash, seed, resolved recipe and sample counts."""
    info = {
        "smalltune_version": __version__,
        "libraries": library_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_hash": git_hash(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if recipe is not None:
        info["recipe"] = recipe.to_dict()
        info["seed"] = recipe.train.seed if seed is None else seed
    elif seed is not None:
        info["seed"] = seed
    if counts:
        info["counts"] = counts
    return info
