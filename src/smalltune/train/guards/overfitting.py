"""Overfitting: the train/validation loss gap and its trend, at every evaluation.

The train side is the mean training loss over the steps since the previous evaluation (already
in the record as ``train_loss``): free, but measured with dropout on and weights moving, so it
reads a little high early on. Scoring a fixed train sample would be cleaner and costs another
evaluation pass; the trend over several evaluations is what matters, and the window mean is
good enough for it.

Adds ``train_val_gap`` (validation loss - train loss) and ``gap_trend`` (change of the gap per
epoch, least-squares over the last ``window`` evaluations) to the record, and warns once when
the gap has widened for ``patience`` evaluations in a row while validation loss rose.
"""

from __future__ import annotations

from .base import GUARD_DEFAULTS, GUARDS, Guard, GuardEvent


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (None with fewer than two distinct xs).

    >>> slope([0, 1, 2], [1.0, 1.5, 2.0])
    0.5
    """
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return None if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


@GUARDS.register("overfitting")
class OverfittingGap(Guard):
    name = "overfitting"
    keys = ("guards.gap_patience",)
    order = 30

    @classmethod
    def from_recipe(cls, recipe):
        return cls(recipe.guards.gap_patience)

    def __init__(self, patience: int = GUARD_DEFAULTS.gap_patience, window: int = 4):
        self.patience, self.window = patience, window
        self.history: list[list[float]] = []  # [epoch, gap, eval_loss] per evaluation
        self.widening = 0
        self.fired_step: int | None = None

    def check(self, record: dict, step: int) -> GuardEvent | None:
        if record.get("train_loss") is None:
            return None
        gap = record["eval_loss"] - record["train_loss"]
        prev = self.history[-1] if self.history else None
        self.history.append([record.get("epoch", step), gap, record["eval_loss"]])
        recent = self.history[-self.window:]
        trend = slope([h[0] for h in recent], [h[1] for h in recent])
        record["train_val_gap"], record["gap_trend"] = gap, trend
        self.widening = self.widening + 1 if prev and gap > prev[1] and record["eval_loss"] > prev[2] else 0
        if self.widening >= self.patience and self.fired_step is None:
            self.fired_step = step
            first = self.history[-1 - self.widening][1]
            return GuardEvent(
                self.name, "warn", step,
                f"overfitting: train/validation gap widened {self.widening} evaluations in a row "
                f"({first:.3f} -> {gap:.3f}) while validation loss rose",
                {"gap": gap, "gap_before": first, "trend_per_epoch": trend, "evaluations": self.widening},
            )
        return None

    def summary(self) -> dict:
        if not self.history:
            return {}
        recent = self.history[-self.window:]
        return {"gap": self.history[-1][1], "trend_per_epoch": slope([h[0] for h in recent], [h[1] for h in recent]),
                "widening_since_step": self.fired_step}
