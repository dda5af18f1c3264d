"""Numerical health: a NaN/inf loss or an exploding gradient norm stops the run at once.

Checked every optimizer step, after gradient clipping has measured the norm and *before* the
optimizer applies it, so the weights of the stopping step are never updated with garbage; the
best checkpoint on disk stays as it was and becomes the run's artifact. A non-finite validation
loss stops the run at the evaluation as well.
"""

from __future__ import annotations

import math

from .base import GUARD_DEFAULTS, GUARDS, Guard, GuardEvent


@GUARDS.register("numerical")
class NumericalHealth(Guard):
    """Stop on a non-finite loss, or a gradient norm above ``grad_norm_limit`` (None = no limit).

    >>> NumericalHealth(grad_norm_limit=100).check_step(2.3, 5e4, step=7).message
    'gradient norm 5e+04 at step 7 exceeds guards.grad_norm_limit=100; lower train.lr or check the data'
    """

    name = "numerical"
    keys = ("guards.grad_norm_limit", "train.lr", "train.precision")
    order = 0

    @classmethod
    def enabled(cls, recipe) -> bool:
        return True  # replaces a hard error, so it runs even with the other guards off

    @classmethod
    def from_recipe(cls, recipe):
        g = recipe.guards
        return cls(g.grad_norm_limit if g.enabled else None, recipe.train.lr,
                   tolerate_inf_grad=_resolved(recipe.train.precision) == "fp16")

    def __init__(self, grad_norm_limit: float | None = GUARD_DEFAULTS.grad_norm_limit, lr: float | None = None,
                 tolerate_inf_grad: bool = False):
        # fp16 loss scaling produces inf gradients on purpose (the step is skipped), so they are not a fault.
        self.grad_norm_limit, self.tolerate_inf_grad = grad_norm_limit, tolerate_inf_grad
        self._hint = f"lower train.lr (now {lr:g}) or check the data" if lr else "lower train.lr or check the data"

    def check_step(self, loss: float, grad_norm: float | None, step: int) -> GuardEvent | None:
        if not math.isfinite(loss):
            return self._stop(step, f"training loss became {loss} at step {step}", {"loss": str(loss)})
        if grad_norm is None:
            return None
        if not math.isfinite(grad_norm) and not self.tolerate_inf_grad:
            return self._stop(step, f"gradient norm became {grad_norm} at step {step}", {"grad_norm": str(grad_norm)})
        if self.grad_norm_limit and math.isfinite(grad_norm) and grad_norm > self.grad_norm_limit:
            return self._stop(step, f"gradient norm {grad_norm:.3g} at step {step} exceeds "
                                    f"guards.grad_norm_limit={self.grad_norm_limit:g}",
                              {"grad_norm": grad_norm, "limit": self.grad_norm_limit})
        return None

    def check(self, record: dict, step: int) -> GuardEvent | None:
        if not math.isfinite(record["eval_loss"]):
            return self._stop(step, f"validation loss became {record['eval_loss']} at step {step}",
                              {"eval_loss": str(record["eval_loss"])})
        return None

    def _stop(self, step: int, what: str, values: dict) -> GuardEvent:
        return GuardEvent(self.name, "stop", step, f"{what}; {self._hint}", values)

    def state_dict(self) -> dict:
        return {}  # settings only, and those come from the recipe


def _resolved(precision: str) -> str:
    from ..setup import resolve_precision

    return resolve_precision(precision)
