"""Checkpoints for --resume and for restoring the best model.

A checkpoint folder holds the method's trainable tensors (safetensors), the optimizer and
scheduler state (torch tensors only, loaded with ``weights_only=True``) and the loop state as
JSON. It is written to a temporary folder and published by rename, so a run killed while saving
keeps its previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from ..rundir import RunDir, atomic_write_json, publish_dir

WEIGHTS = "trainable.safetensors"
OPTIM = "optimizer.pt"
STATE = "state.json"


def save_checkpoint(run: RunDir, folder: Path, method, model, loop_state: dict, optimizer=None, scheduler=None) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        method.save_state(model, tmp / WEIGHTS)
        if optimizer is not None:
            torch.save(
                {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
                 "torch_rng": torch.get_rng_state()},
                tmp / OPTIM,
            )
        atomic_write_json(tmp / STATE, loop_state)
        publish_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prune_checkpoints(run: RunDir, keep: int) -> None:
    for old in run.step_checkpoints()[: max(0, len(run.step_checkpoints()) - max(keep, 1))]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run: RunDir) -> Path | None:
    found = [p for p in run.step_checkpoints() if (p / STATE).exists()]
    return found[-1] if found else None


def load_checkpoint(folder: Path, method, model, optimizer=None, scheduler=None) -> dict:
    """Restore weights (and optimizer state when given); return the loop state."""
    method.load_state(model, folder / WEIGHTS)
    if optimizer is not None and (folder / OPTIM).exists():
        saved = torch.load(folder / OPTIM, weights_only=True, map_location="cpu")
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler"):
            scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
    return json.loads((folder / STATE).read_text())
