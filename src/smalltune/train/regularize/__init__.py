"""Anti-forgetting regularisers: one registry, one plugin shape.

A :class:`Regularizer` is set up once on the model about to be trained (before any checkpoint is
restored, so anchors are the starting weights), may add a penalty to the loss of every micro-batch
and may hook the model (NEFTune). The loop talks only to :class:`Regularizers`, the composite::

    regularizers = build_regularizers(recipe)
    regularizers.setup(model, tok, recipe, device)
    loss = task_loss + regularizers.penalty(model)

Sharpness-Aware Minimization changes how a step is taken rather than the loss, so it is a step
strategy (:func:`build_step`, in ``sam.py``). Replay changes the data (``replay.py``, used by
``train/data.py``).

Every regulariser recomputes its state deterministically in ``setup`` (the EWC Fisher under the
starting weights), so ``--resume`` needs nothing extra in the checkpoint.
"""

from __future__ import annotations

import torch

from ...registry import Registry


class Regularizer:
    """Plugin base: ``enabled`` reads the recipe; ``setup`` prepares; ``penalty`` adds to the loss."""

    name = ""

    @staticmethod
    def enabled(recipe) -> bool:
        raise NotImplementedError

    def setup(self, model, tokenizer, recipe, device) -> dict:
        """Prepare on the (unwrapped) model; return facts worth logging in the start event."""
        return {}

    def penalty(self, model) -> torch.Tensor | None:
        """A scalar added to the task loss, or None."""
        return None

    def metrics(self) -> dict:
        """Per-step numbers for metrics.jsonl (e.g. the last penalty)."""
        return {}

    def close(self) -> None:
        """Remove hooks (called when training ends)."""


REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer")


class Regularizers:
    """The enabled regularisers of a recipe, used together by the loop."""

    def __init__(self, items: list[Regularizer]):
        self.items = items
        self.info: dict = {}

    def setup(self, model, tokenizer, recipe, device) -> dict:
        for r in self.items:
            self.info.update(r.setup(model, tokenizer, recipe, device))
        return self.info

    def penalty(self, model):
        """Sum of the penalties (0.0 when no regulariser adds one)."""
        total = 0.0
        for r in self.items:
            p = r.penalty(model)
            if p is not None:
                total = total + p
        return total

    def metrics(self) -> dict:
        out: dict = {}
        for r in self.items:
            out.update(r.metrics())
        return out

    def close(self) -> None:
        for r in self.items:
            r.close()

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.items] + (["sam"] if "sam_rho" in self.info else [])


def build_regularizers(recipe) -> Regularizers:
    """Instances of every registered regulariser the recipe turns on.

    >>> build_regularizers(load_recipe("r.yaml", ["regularize.ewc_lambda=100"])).names
    ['ewc']
    """
    regs = Regularizers([cls() for _, cls in REGULARIZERS.items() if cls.enabled(recipe)])
    if recipe.regularize.sam_rho > 0:  # a step strategy (build_step), listed here so the run log shows it
        regs.info["sam_rho"] = recipe.regularize.sam_rho
    return regs


# Plugins register themselves on import; this is the one place that imports them.
from . import ewc, neftune  # noqa: E402,F401
from .sam import build_step  # noqa: E402,F401
