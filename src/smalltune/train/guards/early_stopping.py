"""Early stopping on validation loss with patience (the classic overfitting stop).

Extended beyond the usual rule: its stop message also carries the train/validation gap at the
best evaluation and now (set in the record by the overfitting guard, which runs first), so the
summary shows *how* the run was overfitting, not only that it stopped.
"""

from __future__ import annotations

from .base import EARLY_STOPPING_DEFAULTS as DEFAULTS, GUARDS, Guard, GuardEvent


@GUARDS.register("early_stopping")
class EarlyStopping(Guard):
    """Stop when ``metric`` (lower is better) has not improved by ``min_delta`` for ``patience`` evaluations.

    >>> es = EarlyStopping(patience=2)
    >>> [es.check({"eval_loss": v}, s) for s, v in ((1, 1.0), (2, 1.1), (3, 1.2))][-1].action
    'stop'
    """

    name = "early_stopping"
    keys = ("early_stopping.enabled", "early_stopping.metric", "early_stopping.patience", "early_stopping.min_delta")
    order = 90  # decides last, after every measurement

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.early_stopping.enabled

    @classmethod
    def from_recipe(cls, recipe):
        es = recipe.early_stopping
        return cls(es.metric, es.patience, es.min_delta)

    def __init__(self, metric: str = DEFAULTS.metric, patience: int = DEFAULTS.patience,
                 min_delta: float = DEFAULTS.min_delta):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.best: float | None = None
        self.best_gap: float | None = None
        self.bad_evals = 0

    def check(self, record: dict, step: int) -> GuardEvent | None:
        value = record[self.metric]
        gap = record.get("train_val_gap")
        if self.best is None or value < self.best - self.min_delta:
            self.best, self.best_gap, self.bad_evals = value, gap, 0
            return None
        self.bad_evals += 1
        if self.bad_evals < self.patience:
            return None
        gap_text = ""
        if gap is not None and self.best_gap is not None:
            gap_text = f"; train/validation gap {self.best_gap:.3f} at best, {gap:.3f} now"
        return GuardEvent(
            self.name, "stop", step,
            f"{self.metric} has not improved on {self.best:.4f} for {self.bad_evals} evaluations "
            f"(now {value:.4f}){gap_text}",
            {"best": self.best, "current": value, "patience": self.patience, "gap_at_best": self.best_gap,
             "gap": gap},
        )
