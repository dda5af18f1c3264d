"""Checkpoints for --resume and for restoring the best model.

A checkpoint folder holds the method's trainable tensors (safetensors), the optimizer and
scheduler state and every process's RNG states (torch tensors and plain values only, loaded with
``weights_only=True``: we never unpickle) and the loop state as JSON. It is written to a temporary
folder and published by rename, so a run killed while saving keeps its previous checkpoint intact;
the temporary folders such a kill leaves behind are removed when the run resumes.

Why not ``accelerator.save_state``: it pickles RNG states and custom objects and loads them with
``weights_only=False``, which would unpickle files from a run directory. Each rank's RNG is
gathered to the main process and written here, and each rank restores its own on resume.

What each process holds decides how the state is saved:

- one process, or DDP: every rank holds the whole model and optimizer state (DDP keeps them equal),
  so the main process writes its own copy: ``Method.save_state`` and ``optimizer.state_dict()``;
- FSDP2 (``fully_shard``, accelerate's ``fsdp_version: 2``): each rank holds 1/N of every weight and
  of its AdamW moments. Every rank calls :func:`save_checkpoint`, which gathers the full tensors onto
  rank 0 (PyTorch's ``torch.distributed.checkpoint.state_dict`` API, a collective); rank 0 writes
  the same two files, the optimizer state keyed by parameter name instead of position. On resume
  rank 0 reads them and the same API sends each rank its shard; the other ranks read only their RNG
  (memory-mapped, so not the whole optimizer state). :func:`save_trainable` / :func:`load_trainable`
  do the same for the weights alone (best-model snapshots).

Not handled: FSDP1 (refused with one line: use ``fsdp_version: 2``) and DeepSpeed ZeRO, whose
optimizer (and under ZeRO-3 weights) the main process also holds only in part; see docs/multi-gpu.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import SmalltuneError
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


def sharded(model) -> bool:
    """Whether FSDP2 holds only a shard of ``model``'s tensors on this process (then saving is a collective).

    FSDP1 is refused: accelerate hands the loop its inner module, which PyTorch's state-dict API
    cannot gather from (it needs FSDP1's root), so its checkpoints would hold only rank 0's shard.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return False
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        raise SmalltuneError("checkpoints under FSDP1 would keep only one rank's shard: set fsdp_version: 2 in "
                             "the accelerate config (as examples/accelerate/fsdp_*.yaml do)")
    return any(isinstance(m, FSDPModule) for m in model.modules())


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def gather_trainable(method, model) -> dict[str, torch.Tensor]:
    """The method's checkpoint tensors, whole, on rank 0's CPU (``{}`` elsewhere); every rank must call it.

    The method says which tensors a checkpoint keeps (``trainable_state``; here its local shards, read
    only for their names). Frozen weights are gathered only when it keeps some (``hft``), so a LoRA
    checkpoint of a sharded base moves only the adapter.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    keep = set(method.trainable_state(model))
    frozen = keep - {n for n, p in model.named_parameters() if p.requires_grad}
    full = get_model_state_dict(model, options=_options(cpu_offload=True, ignore_frozen_params=not frozen))
    return {k: v for k, v in full.items() if k in keep}


def scatter_trainable(model, state: dict[str, torch.Tensor]) -> None:
    """Load whole tensors read on rank 0 (``{}`` elsewhere) into every rank's shards; every rank must call it."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_options(broadcast_from_rank0=True, strict=False))


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer


def gather_optimizer(model, optimizer) -> dict:
    """The whole optimizer state keyed by parameter name, on rank 0's CPU (``{}`` elsewhere); a collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, _inner(optimizer), options=_options(cpu_offload=True))


def scatter_optimizer(model, optimizer, state: dict) -> None:
    """Load a whole optimizer state read on rank 0 (``{}`` elsewhere) into every rank's shards; a collective."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, _inner(optimizer), state, options=_options(broadcast_from_rank0=True))


def save_trainable(method, model, path: Path, write: bool = True) -> None:
    """Write the method's checkpoint tensors to ``path`` (safetensors) where ``write``.

    Every process calls it (under FSDP2 the gather is a collective), e.g. for best-model snapshots.
    """
    weights = gather_trainable(method, model) if sharded(model) else None
    if write:
        _write_trainable(method, model, weights, path)


def load_trainable(method, model, path: Path) -> None:
    """Load tensors written by :func:`save_trainable`; every process calls it (under FSDP2 rank 0 reads the
    file and each rank receives its shards)."""
    if sharded(model):
        scatter_trainable(model, load_file(str(path)) if torch.distributed.get_rank() == 0 else {})
    else:
        method.load_state(model, path)


def _write_trainable(method, model, gathered: dict | None, path: Path) -> None:
    if gathered is None:  # one process or DDP: this process's copy is the whole state
        method.save_state(model, path)
    else:
        save_file({k: v.contiguous() for k, v in gathered.items()}, str(path))


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link to ``source`` (no bytes written), or a copy where links are not possible."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def save_checkpoint(run: RunDir, folder: Path, method, model, loop_state: dict, optimizer=None, scheduler=None,
                    rng_states: list[dict] | None = None, write: bool = True, weights_from: Path | None = None) -> None:
    """Write one checkpoint; ``rng_states`` holds every rank's :func:`rng_state` (rank order).

    Every process calls it, the main process with ``write``: under FSDP2 the gather is a collective.
    ``weights_from``: a snapshot of these very weights (:func:`save_trainable` at this step), linked
    instead of written again.
    """
    weights = optim = None
    if sharded(model):
        weights = gather_trainable(method, model)
        optim = gather_optimizer(model, optimizer) if optimizer is not None else None
    if not write:
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        if weights_from is not None and weights_from.exists():
            link_or_copy(weights_from, tmp / WEIGHTS)
        else:
            _write_trainable(method, model, weights, tmp / WEIGHTS)
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict() if optim is None else optim,
                        "scheduler": scheduler.state_dict() if scheduler else None,
                        "rng": rng_states or [rng_state()]}, tmp / OPTIM)
        atomic_write_json(tmp / STATE, loop_state)
        publish_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prune_checkpoints(run: RunDir, keep: int) -> None:
    for old in run.step_checkpoints()[: max(0, len(run.step_checkpoints()) - max(keep, 1))]:
        shutil.rmtree(old, ignore_errors=True)


def drop_checkpoints(run: RunDir, drop_best: bool) -> None:
    """Remove a finished run's ``--resume`` checkpoints: once its summary is written, ``--resume`` returns the
    summary and trains nothing, so they (weights and optimizer state: three times a full model's size, each) serve
    nothing more. ``best/`` (the choice as of the last checkpoint) goes too with ``drop_best``: when the run published
    its artifact, which holds the chosen weights (a second copy was 540 MB per full fine-tune of the built-in model,
    in every tuning trial and fold), or was abandoned (a pruned tuning trial keeps no weights). When nothing was
    published it holds what selection chose and stays. Until the summary it stays in any case: a run killed before
    resumes from its last checkpoint, whose choice it may hold."""
    for folder in run.step_checkpoints():
        shutil.rmtree(folder, ignore_errors=True)
    if drop_best:
        shutil.rmtree(run.best, ignore_errors=True)


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
    """Restore weights (and optimizer state and this rank's RNG when given); return the loop state.

    Every process calls it; under FSDP2 rank 0 reads the tensors and each rank receives its shards.
    """
    load_trainable(method, model, folder / WEIGHTS)
    shards = sharded(model)
    if optimizer is not None and (folder / OPTIM).exists():
        # memory-mapped under FSDP2: the other ranks read only their RNG, not the whole optimizer state
        saved = torch.load(folder / OPTIM, weights_only=True, map_location="cpu", mmap=shards)
        if shards:
            scatter_optimizer(model, optimizer, saved["optimizer"] if torch.distributed.get_rank() == 0 else {})
        else:
            optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler"):
            scheduler.load_state_dict(saved["scheduler"])
        if "rng" in saved:
            set_rng_state(saved["rng"][min(rank, len(saved["rng"]) - 1)])
        else:  # a checkpoint from before per-rank RNG
            torch.set_rng_state(saved["torch_rng"])
    return json.loads((folder / STATE).read_text())
