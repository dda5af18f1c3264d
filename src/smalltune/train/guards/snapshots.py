"""The weights behind checkpoint selection: ``selection.py`` decides, this keeps what it may still choose.

Every evaluation selection may still choose keeps its trainable weights until it no longer can:

* in memory, in one process, while the snapshots take at most ``HOST_SHARE`` of the host memory they would
  otherwise leave available (a full fine-tune of the built-in model: 540 MB each; usually one to three are
  candidates). Writing each new best to disk took 0.2-3.2 s on this project's 2-core VM against 0.07-0.16 s for the
  copy alone: 32-35 s of a ~200 s demo training against 1-2 s in memory, with the same chosen weights to the bit
  (benchmarks/README.md, "Best-model snapshots in memory");
* on disk, ``checkpoints/evals/step-NNNNNN.safetensors``, where they do not fit, under several processes (every
  rank restores the choice from the file; under FSDP2 taking one is a collective), and for every candidate when a
  --resume checkpoint is written: after a resume its selector may choose them (``LoopState.protected``).

``checkpoints/best/`` holds the choice as of the last --resume checkpoint, its weights a hard link to a snapshot
file, not a second copy. After the run the published artifact holds the final choice and ``best/`` is removed with
the checkpoints; a run that publishes nothing keeps its final choice there (``persist``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

HOST_SHARE = 0.25  # of the host memory available without the snapshots: the rest is the run's own


def snapshot_path(run, step: int) -> Path:
    return run.checkpoints / "evals" / f"step-{step:06d}.safetensors"


class Snapshots:
    """The candidate weights of one run (``write``: this process writes files, the main one;
    ``in_memory``: one process, where a snapshot may stay in host memory)."""

    def __init__(self, run, method, model, write: bool = True, in_memory: bool = True):
        self.run, self.method, self.model, self.write, self.in_memory = run, method, model, write, in_memory
        self.held: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def folder(self) -> Path:
        return self.run.checkpoints / "evals"

    def on_disk(self, step: int) -> bool:
        return snapshot_path(self.run, step).exists()

    def take(self, step: int) -> None:
        """This step's weights: in memory where they fit, else a file (every process calls it)."""
        from ..checkpoint import save_trainable

        if not self.in_memory:  # under FSDP2 a gather on every rank
            self._file(step, lambda tmp: save_trainable(self.method, self.model, tmp, write=self.write))
            return
        state = self.method.trainable_state(self.model)  # a copy on the host, as a file write makes anyway
        if _fits(state, self.held.values()):
            self.held[step] = state
        else:
            self._write(step, state)

    def keep_only(self, steps: set[int]) -> None:
        """Forget the snapshots of every step not in ``steps``."""
        self.held = {s: v for s, v in self.held.items() if s in steps}
        if self.write:
            for p in self.folder.glob("step-*.safetensors"):
                if int(p.stem.split("-")[1]) not in steps:
                    p.unlink(missing_ok=True)

    def persist(self, steps, selector) -> None:
        """Write the held snapshots of ``steps`` (a --resume checkpoint's candidates) and make ``best/`` the choice."""
        for step in sorted(set(steps) & self.held.keys()):
            if not self.on_disk(step):
                self._write(step, self.held[step])
        self.publish(selector)

    def publish(self, selector) -> None:
        """Make ``best/`` the selector's choice where its snapshot is a file (a link: no bytes written); one
        held only in memory waits for :meth:`persist`."""
        from ...rundir import atomic_write_json, publish_dir
        from ..checkpoint import STATE, WEIGHTS, link_or_copy

        if selector.best_step is None or best_step_on_disk(self.run) == selector.best_step:
            return  # (after a resume from an earlier checkpoint best/ may hold a later step: then it is replaced)
        source = snapshot_path(self.run, selector.best_step)
        if not source.exists():
            if selector.best_step in self.held:
                return
            raise RuntimeError(f"selection chose step {selector.best_step} but its weights were not kept")
        tmp_dir = Path(tempfile.mkdtemp(dir=self.run.checkpoints, prefix=".best."))
        try:
            link_or_copy(source, tmp_dir / WEIGHTS)  # snapshots are never rewritten in place: a link is safe
            atomic_write_json(tmp_dir / STATE, {"step": selector.best_step, "record": selector.best_record,
                                                "selection": selector.reason()})
            publish_dir(tmp_dir, self.run.best)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    def restore(self, step: int) -> bool:
        """Load ``step``'s weights into the model; False when they were not kept. Every process calls it (one
        machine: every rank sees the run directory; under FSDP2 rank 0 reads and each rank receives its shards)."""
        from ..checkpoint import load_trainable

        best = self.run.best / "trainable.safetensors"
        if step in self.held:
            self.method.load_trainable_state(self.model, self.held[step])
        elif self.on_disk(step):
            load_trainable(self.method, self.model, snapshot_path(self.run, step))
        elif best.exists() and best_step_on_disk(self.run) == step:
            load_trainable(self.method, self.model, best)
        else:
            return False
        return True

    def drop(self) -> None:
        """After the run: the artifact (or, when none is published, ``best/``) holds the chosen weights; the other
        candidates are no longer needed."""
        self.held.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _write(self, step: int, state: dict[str, torch.Tensor]) -> None:
        from ..checkpoint import _write_trainable

        self._file(step, lambda tmp: _write_trainable(self.method, self.model, state, tmp))

    def _file(self, step: int, write_to) -> None:
        """``step``'s snapshot file, written by ``write_to(tmp)`` (every process calls it; ``write``: this one's
        file) and then moved into place: a killed write leaves only a temporary file (clean_interrupted)."""
        tmp = self.folder / f".step-{step:06d}.tmp"
        if self.write:
            self.folder.mkdir(parents=True, exist_ok=True)
        write_to(tmp)
        if self.write:
            os.replace(tmp, snapshot_path(self.run, step))


def keep_best(snapshots: Snapshots, selector, record: dict, step: int, protect=()) -> None:
    """Give ``selector`` this evaluation; keep the weights it may choose; make ``best/`` its current choice where
    that costs no write.

    ``protect``: steps whose snapshots must outlive this choice -- the candidates of the last --resume
    checkpoint, which a resumed run's selector may still choose."""
    selector.update(record, step)
    keep = selector.candidates() | set(protect)
    if step in keep:
        snapshots.take(step)
    snapshots.keep_only(keep)
    if snapshots.write:
        snapshots.publish(selector)


def restore_best(snapshots: Snapshots, selector) -> bool:
    """Load the chosen evaluation's weights into the model; False when nothing was chosen."""
    return selector.best_step is not None and snapshots.restore(selector.best_step)


def best_step_on_disk(run) -> int | None:
    """The step whose weights ``best/`` holds (None when there is none)."""
    state = run.best / "state.json"
    return json.loads(state.read_text()).get("step") if state.exists() else None


def _fits(state: dict[str, torch.Tensor], held) -> bool:
    """Whether ``state`` may stay in memory beside the ``held`` snapshots (``state`` is already allocated)."""
    import psutil

    size = lambda s: sum(t.numel() * t.element_size() for t in s.values())  # noqa: E731
    snapshots = size(state) + sum(size(s) for s in held)
    return snapshots <= HOST_SHARE * (psutil.virtual_memory().available + snapshots)
