"""The run directory: the unit of output every stage reads and writes.

Layout (later stages read earlier stages' files; nothing travels through globals)::

    runs/<name>/
      recipe.yaml          resolved recipe (exact settings of this run)
      provenance.json      versions, seed, git hash, host
      audit.json           `smalltune audit` report
      metrics.jsonl        one JSON object per line: train steps, evaluations, guard events
      checkpoints/         step-NNNNNN/ (trainable weights + loop state) for --resume; best/
      adapter/             final trained weights (PEFT format for adapter methods)
      train_summary.json   how training ended, best checkpoint, counts
      eval.json            `smalltune evaluate` results
      report.html          `smalltune report`

Every file is written atomically (temp file + rename) so a killed run never leaves half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(obj):
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def publish_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Replace ``final_dir`` with the fully written ``tmp_dir`` (a rename, so never half a folder)."""
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass
class RunDir:
    """Paths inside one run directory; creating it does not write anything but the folder."""

    path: Path
    lock: Any = field(default=None, repr=False, compare=False)  # the RunLock while this process writes

    def __post_init__(self):
        self.path = Path(self.path)

    recipe = property(lambda self: self.path / "recipe.yaml")
    provenance = property(lambda self: self.path / "provenance.json")
    audit = property(lambda self: self.path / "audit.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    best = property(lambda self: self.path / "checkpoints" / "best")
    adapter = property(lambda self: self.path / "adapter")
    train_summary = property(lambda self: self.path / "train_summary.json")
    eval = property(lambda self: self.path / "eval.json")
    report = property(lambda self: self.path / "report.html")
    report_md = property(lambda self: self.path / "report.md")
    splits = property(lambda self: self.path / "splits.json")

    @property
    def started(self) -> bool:
        """Whether training began here: ``--resume`` continues it (or returns a finished run's summary)."""
        return self.metrics.exists() or self.checkpoints.exists() or self.train_summary.exists()

    def mkdir(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:06d}"

    def step_checkpoints(self) -> list[Path]:
        """Periodic checkpoints, oldest first (only complete ones: they are published by rename)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.glob("step-*") if p.is_dir())

    def log(self, record) -> None:
        """Append one record (a :mod:`smalltune.schema` metrics record, or its dict) to the metrics log.

        A line is written whole or, on a crash, not at all.
        """
        from .schema import encode_metric

        self.path.mkdir(parents=True, exist_ok=True)
        line = json.dumps(encode_metric(record), default=_json_default) + "\n"  # stamped with the schema version
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list:
        """The metrics log as typed records (:mod:`smalltune.schema.metrics`), in file order.

        >>> evals = [r for r in RunDir("runs/x").read_metrics() if r.kind == "eval"]
        """
        from .schema import read_metrics

        return read_metrics(self.metrics).records

    def truncate_metrics_after(self, step: int) -> None:
        """On resume, drop records logged after the checkpoint we resume from (they will be redone)."""
        from .schema import dumps_metrics

        kept = [r for r in self.read_metrics() if (r.lookup("step") or 0) <= step]
        atomic_write_text(self.metrics, dumps_metrics(kept))


_HELD: dict[str, list] = {}  # lock file -> [descriptor, holders in this process]


class RunLock:
    """One writer per run directory: an exclusive ``flock`` on ``<run>/.lock``.

    The kernel drops the lock when its process exits, however it exits (``kill -9`` included), so
    a lock can never go stale; the file keeps the holder's pid for the error message. Re-entrant
    within one process (``smalltune run`` holds it while ``train`` opens the same folder). Without
    ``fcntl`` (Windows) there is no lock, and the docs say so.
    """

    def __init__(self, path: Path):
        self.path, self._held = Path(path) / ".lock", False

    def acquire(self) -> "RunLock":
        from .errors import SmalltuneError

        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        key = str(self.path.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            self._held = True
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise SmalltuneError(f"{self.path.parent} is in use by another smalltune process (pid {holder}); "
                                 f"wait for it to finish or set another output_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD[key] = [fd, 1]
        self._held = True
        return self

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        key = str(self.path.resolve())
        entry = _HELD.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            os.close(entry[0])  # closing the descriptor releases the flock
            del _HELD[key]


def default_run_name(recipe) -> str:
    import datetime as _dt

    stem = Path(recipe.data.train).stem or "run"
    return f"{stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def open_run_dir(recipe, resume: bool = False, main: bool = True) -> RunDir:
    """Create (or, with ``resume``, reopen) the recipe's run directory, lock it, write recipe + provenance.

    Fills ``recipe.output_dir`` when empty. The lock is taken before anything else is checked or
    written (one writer per directory; ``run.lock.release()`` or process exit frees it). Refuses to
    overwrite a directory that already holds a run unless resuming, and refuses to resume with
    settings that differ from the stored ones. ``main=False`` (other ranks of a multi-process run)
    only opens: the main process checks, locks and writes.
    """
    from .errors import SmalltuneError
    from .provenance import provenance
    from .recipe import load_recipe

    if not recipe.output_dir:
        if resume:
            raise SmalltuneError("--resume needs output_dir (the run directory to continue)")
        recipe.name = recipe.name or default_run_name(recipe)
        recipe.output_dir = str(Path("runs") / recipe.name)
    run = RunDir(Path(recipe.output_dir))
    if not main:
        return run
    if run.path.exists() and not run.path.is_dir():
        raise SmalltuneError(f"output_dir {run.path} is a file, not a folder")
    run.lock = RunLock(run.path).acquire()
    try:
        _check_run_dir(run, recipe, resume, SmalltuneError, load_recipe)
    except BaseException:
        run.lock.release()
        raise
    if not resume:
        recipe.name = recipe.name or run.path.name
        recipe.save(run.recipe)
        atomic_write_json(run.provenance, provenance(recipe))
    return run


def _check_run_dir(run: "RunDir", recipe, resume: bool, SmalltuneError, load_recipe) -> None:
    if resume:
        if not run.recipe.exists():
            raise SmalltuneError(f"{run.path}: nothing to resume (no recipe.yaml); start without --resume")
        stored = load_recipe(run.recipe).to_dict()
        changed = sorted(k for k in _diff(stored, recipe.to_dict()) if k not in ("name",))
        if changed:
            raise SmalltuneError(f"--resume: the recipe differs from the run's stored recipe.yaml in {', '.join(changed)}")
    elif run.started:
        raise SmalltuneError(f"{run.path} already holds a run; pass --resume to continue it, or set another output_dir")


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in set(a) | set(b):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys
