"""Guards: checks that run at every evaluation and can warn or stop training.

A guard sees each evaluation record (a dict of metrics) and returns a :class:`GuardEvent` when it
has something to say. Its state round-trips through ``state_dict`` so ``--resume`` continues it.
Early stopping is the first guard; the recipe's ``guards`` section adds more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ...registry import Registry


@dataclass
class GuardEvent:
    guard: str
    action: str  # "stop" | "warn" | "note"
    step: int
    message: str  # one line a person reads: what fired and on what numbers
    values: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Guard:
    name = "guard"

    def check(self, record: dict, step: int) -> GuardEvent | None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


GUARDS: Registry[type[Guard]] = Registry("guard")


@GUARDS.register("early_stopping")
class EarlyStopping(Guard):
    """Stop when ``metric`` (lower is better) has not improved by ``min_delta`` for ``patience`` evaluations."""

    name = "early_stopping"

    def __init__(self, metric: str = "eval_loss", patience: int = 3, min_delta: float = 0.0):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.best: float | None = None
        self.bad_evals = 0

    def check(self, record: dict, step: int) -> GuardEvent | None:
        value = record[self.metric]
        if self.best is None or value < self.best - self.min_delta:
            self.best, self.bad_evals = value, 0
            return None
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            return GuardEvent(
                self.name, "stop", step,
                f"{self.metric} has not improved on {self.best:.4f} for {self.bad_evals} evaluations "
                f"(now {value:.4f})",
                {"best": self.best, "current": value, "patience": self.patience},
            )
        return None


class BestSelector:
    """Decides which evaluation is the best checkpoint: lowest ``metric``."""

    def __init__(self, metric: str = "eval_loss"):
        self.metric = metric
        self.best_step: int | None = None
        self.best_record: dict | None = None

    def update(self, record: dict, step: int) -> bool:
        if self.best_record is None or record[self.metric] < self.best_record[self.metric]:
            self.best_step, self.best_record = step, dict(record)
            return True
        return False

    def state_dict(self) -> dict:
        return {"best_step": self.best_step, "best_record": self.best_record}

    def load_state_dict(self, state: dict) -> None:
        self.best_step, self.best_record = state["best_step"], state["best_record"]

    def reason(self) -> str:
        return f"lowest {self.metric}"


def build_guards(recipe) -> list[Guard]:
    """The guards a recipe asks for, in the order they run."""
    guards: list[Guard] = []
    es = recipe.early_stopping
    if es.enabled:
        guards.append(EarlyStopping(es.metric, es.patience, es.min_delta))
    return guards


def build_selector(recipe) -> BestSelector:
    return BestSelector(recipe.early_stopping.metric)
