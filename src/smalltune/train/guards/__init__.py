"""Guards: checks that run inside training and can note, warn or stop.

One module per guard, all of one shape (:class:`Guard`), registered in :data:`GUARDS`:

* ``numerical``          NaN/inf loss or exploding gradient norm: stop at once (every step)
* ``forgetting_budget``  general reference-text perplexity vs the base model: stop or warn
* ``over_memorization``  accuracy holds while perplexity climbs (arXiv 2508.04117): flag
* ``overfitting``        train/validation gap and its trend: warn
* ``convergence``        training loss flat within ``guards.converged_delta`` per epoch: note
* ``early_stopping``     validation loss stopped improving: stop

``selection.py`` decides which evaluation's weights the run keeps; ``snapshots.py`` keeps them. The loop only
calls :func:`build_guards`, :func:`build_selector`, :class:`Snapshots` and the two functions of ``snapshots``.
"""

from __future__ import annotations

from .base import GUARDS, Guard, GuardContext, GuardEvent, GuardSet
from .convergence import Convergence
from .early_stopping import EarlyStopping
from .forgetting import ForgettingBudget
from .numerical import NumericalHealth
from .over_memorization import OverMemorization
from .overfitting import OverfittingGap
from .selection import BestSelector, CheckpointSelector
from .snapshots import Snapshots, keep_best, restore_best, snapshot_path

# Stops that leave the last weights untrustworthy: without a chosen checkpoint, publish nothing.
UNSAFE_STOPS = ("numerical", "forgetting_budget")


def unsafe_stop_message(summary: dict) -> str | None:
    """One line for a run a guard stopped for safety (a finding: exit code 1), else None.

    The forgetting budget is a constraint since the v4 defaults (benchmarks/README.md 1d): its stop is how a
    planned run ends, and a run that published a checkpoint within the budget succeeded. It is a finding only
    when no evaluation was within the budget, so nothing was written."""
    stopped = summary.get("stopped")
    if stopped not in UNSAFE_STOPS or (stopped == "forgetting_budget" and summary.get("artifact_written")):
        return None
    return f"training stopped by the {stopped} guard: {summary.get('stop_message', '')}".rstrip(": ")


def build_guards(recipe) -> GuardSet:
    """The guards a recipe turns on, from the registry, in the order they run (measurements first,
    early stopping last).

    >>> [g.name for g in build_guards(recipe)]
    ['numerical', 'over_memorization', 'overfitting', 'convergence', 'early_stopping']
    """
    from ..plugins import build_plugins

    return build_plugins(recipe, GUARDS)


def build_selector(recipe) -> CheckpointSelector:
    """The checkpoint selection rule of a recipe (``guards.selection``; lowest loss with guards off)."""
    g = recipe.guards
    mode = g.selection if g.enabled else "eval_loss"
    respect = g.enabled and g.forgetting_budget is not None and g.forgetting_action == "stop"
    return CheckpointSelector(mode, recipe.early_stopping.metric, g.ppl_factor, respect_budget=respect,
                              tolerance=recipe.early_stopping.min_delta if g.enabled else 0.0)


__all__ = [
    "GUARDS", "Guard", "GuardContext", "GuardEvent", "GuardSet", "Convergence", "EarlyStopping",
    "ForgettingBudget", "NumericalHealth", "OverMemorization", "OverfittingGap", "BestSelector",
    "CheckpointSelector", "UNSAFE_STOPS", "unsafe_stop_message", "build_guards", "build_selector", "Snapshots",
    "keep_best", "restore_best", "snapshot_path",
]
