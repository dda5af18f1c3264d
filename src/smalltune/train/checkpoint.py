"""Checkpoints for --resume and for restoring the best model.

A checkpoint folder holds the method's trainable tensors (safetensors), the optimizer and
scheduler state and every process's RNG states (torch tensors and plain values only, loaded with
``weights_only=True``: we never unpickle) and the loop state as JSON. It is written to a temporary
folder and published by rename, so a run killed while saving keeps its previous checkpoint intact;
the temporary folders such a kill leaves behind are removed when the run resumes.

Why not ``accelerator.save_state``: it pickles RNG states and custom objects and loads them with
``weights_only=False``, which would unpickle files from a run directory. Under DDP the optimizer
state is the same on every rank, so the main process's copy is the whole state; each rank's RNG
is gathered to the main process and written here, and each rank restores its own on resume.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import torch

from ..rundir import RunDir, atomic_write_json, publish_dir

WEIGHTS = "trainable.safetensors"
OPTIM = "optimizer.pt"
STATE = "state.json"


def rng_state() -> dict:
    """This process's random generators (python, torch CPU and CUDA), as weights-only-loadable values."""
    state = {"python": list(random.getstate()), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run: RunDir, folder: Path, method, model, loop_state: dict, optimizer=None, scheduler=None,
                    rng_states: list[dict] | None = None) -> None:
    """Write one checkpoint; ``rng_states`` holds every rank's :func:`rng_state` (rank order)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        method.save_state(model, tmp / WEIGHTS)
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
                        "rng": rng_states or [rng_state()]}, tmp / OPTIM)
        atomic_write_json(tmp / STATE, loop_state)
        publish_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prune_checkpoints(run: RunDir, keep: int) -> None:
    for old in run.step_checkpoints()[: max(0, len(run.step_checkpoints()) - max(keep, 1))]:
        shutil.rmtree(old, ignore_errors=True)


def clean_interrupted(run: RunDir) -> list[str]:
    """Remove temporary folders and files a killed write left in ``checkpoints/``; return their names."""
    found = [p for p in run.checkpoints.glob(".*")] if run.checkpoints.is_dir() else []
    found += [p for p in (run.checkpoints / "evals").glob(".*")] if (run.checkpoints / "evals").is_dir() else []
    found += [p for p in run.path.glob(".*.tmp")] if run.path.is_dir() else []
    for p in found:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return [p.name for p in found]


def latest_checkpoint(run: RunDir) -> Path | None:
    found = [p for p in run.step_checkpoints() if (p / STATE).exists()]
    return found[-1] if found else None


def load_checkpoint(folder: Path, method, model, optimizer=None, scheduler=None, rank: int = 0) -> dict:
    """Restore weights (and optimizer state and this rank's RNG when given); return the loop state."""
    method.load_state(model, folder / WEIGHTS)
    if optimizer is not None and (folder / OPTIM).exists():
        saved = torch.load(folder / OPTIM, weights_only=True, map_location="cpu")
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler"):
            scheduler.load_state_dict(saved["scheduler"])
        if "rng" in saved:
            set_rng_state(saved["rng"][min(rank, len(saved["rng"]) - 1)])
        else:  # a checkpoint from before per-rank RNG
            torch.set_rng_state(saved["torch_rng"])
    return json.loads((folder / STATE).read_text())
