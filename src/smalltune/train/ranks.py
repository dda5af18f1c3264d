"""What the loop needs to run the same way on one process or many (``accelerate launch``).

Each helper is a decision every rank must take together -- where the run is written, whether a
setup error or a guard's stop ends the run, which epoch's order the sampler draws -- so no rank
waits at a collective for peers that have already left. On one process each is a plain call.
"""

from __future__ import annotations

import torch
from accelerate.utils import gather_object

from .plugins import GuardEvent


def shared_output_dir(recipe) -> str:
    """Under several processes every rank must write to one folder: the main process names it."""
    from ..rundir import default_run_name

    return f"runs/{gather_object([default_run_name(recipe)])[0]}"


def on_every_rank(acc, build):
    """``build()`` on every rank; if it raised a user error on any rank, every rank raises it.

    A rank left to go on alone would wait at the next collective for peers that have already exited.
    The main process reports the first failing rank's line; the others' errors are marked as reported
    (the CLI prints one line for the whole run).
    """
    from ..errors import SmalltuneError

    if acc.num_processes == 1:
        return build()
    try:
        result, error = build(), None
    except SmalltuneError as e:
        result, error = None, e
    failures = [(rank, f) for rank, f in enumerate(gather_object([(str(error), error.exit_code) if error else None])) if f]
    if not failures:
        return result
    if not (acc.is_main_process and error is not None):
        rank, (message, code) = failures[0]
        error = SmalltuneError(message if rank == 0 else f"rank {rank}: {message}", code)
        error.reported_by_main = not acc.is_main_process
    raise error


def set_epoch(loader, epoch: int) -> None:
    """The epoch on the prepared loader and on our batch sampler (``setup.EpochBatches``).

    Under N ranks accelerate wraps the sampler in its sharding sampler, and the loader's own
    ``set_epoch`` does not reach through that wrapper: every epoch would repeat epoch 0's order.
    """
    loader.set_epoch(epoch)
    inner = getattr(loader.batch_sampler, "batch_sampler", None)
    if hasattr(inner, "set_epoch"):
        inner.set_epoch(epoch)


def over_ranks(acc, loss, batch) -> tuple[float, int]:
    """(mean loss, tokens) of this micro-batch over every process, not only this rank's share."""
    tokens = int(batch["attention_mask"].sum())
    if acc.num_processes == 1:
        return loss.item(), tokens
    both = acc.reduce(torch.tensor([loss.item(), tokens], dtype=torch.float64, device=acc.device), "sum")
    return float(both[0]) / acc.num_processes, int(both[1])


def agreed(acc, event: GuardEvent | None) -> GuardEvent | None:
    """A step guard's stop, agreed by every process: one rank's non-finite loss stops all of them together."""
    if acc.num_processes == 1:
        return event
    flags = acc.gather(torch.tensor([event is not None], device=acc.device, dtype=torch.float32))
    if not bool(flags.max()):
        return None
    found = [e for e in gather_object([event.to_dict() if event else None]) if e]
    return GuardEvent(**found[0])
