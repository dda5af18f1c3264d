"""Convergence: training loss that moves less than ``delta`` per epoch is noted (not stopped).

Compares the window training loss now with the one about an epoch earlier (the newest
evaluation at least one epoch back), so the rate is per epoch whatever the evaluation cadence.
"""

from __future__ import annotations

from .base import GUARD_DEFAULTS, GUARDS, Guard, GuardEvent


@GUARDS.register("convergence")
class Convergence(Guard):
    """Note once when |train loss change| per epoch drops below ``delta``.

    >>> c = Convergence(delta=0.1)
    >>> c.check({"epoch": 1.0, "train_loss": 1.00}, 10) is None
    True
    >>> c.check({"epoch": 2.0, "train_loss": 0.95}, 20).action
    'note'
    """

    name = "convergence"
    keys = ("guards.converged_delta",)
    order = 40

    @classmethod
    def from_recipe(cls, recipe):
        return cls(recipe.guards.converged_delta)

    def __init__(self, delta: float = GUARD_DEFAULTS.converged_delta):
        self.delta = delta
        self.history: list[list[float]] = []  # [epoch, train_loss]
        self.noted_step: int | None = None
        self.noted_values: dict = {}

    def check(self, record: dict, step: int) -> GuardEvent | None:
        loss, epoch = record.get("train_loss"), record.get("epoch")
        if loss is None or epoch is None:
            return None
        self.history.append([epoch, loss])
        earlier = [h for h in self.history if epoch - h[0] >= 1.0 - 1e-9]
        if not earlier:
            return None
        e0, l0 = earlier[-1]
        rate = (loss - l0) / (epoch - e0)
        record["train_loss_change_per_epoch"] = rate
        if abs(rate) >= self.delta or self.noted_step is not None:
            return None
        self.noted_step = step
        self.noted_values = {"loss_change_per_epoch": rate, "train_loss": loss, "train_loss_epoch_before": l0}
        return GuardEvent(
            self.name, "note", step,
            f"converged: training loss moved {rate:+.3f} per epoch ({l0:.3f} -> {loss:.3f}), below {self.delta:g}",
            dict(self.noted_values),
        )

    def summary(self) -> dict:
        return {"noted_step": self.noted_step, **self.noted_values} if self.noted_step is not None else {}
