"""The guard plugin shape: events, the base class, the registry and the set the loop drives.

A guard sees each evaluation record (a dict of metrics), may add its own signal to it (so the
metrics log carries it), and returns a :class:`GuardEvent` when it has something to say. A guard
that needs a measurement of its own (the forgetting budget scores reference text) does it in
``measure``; one that watches every optimizer step (numerical health) implements ``check_step``.
State round-trips through ``state_dict`` so ``--resume`` continues where the run stopped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

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


@dataclass
class GuardContext:
    """What a guard may use to measure things itself: the model and how to run it."""

    model: Any  # the model being trained (possibly wrapped by accelerate)
    tokenizer: Any
    device: Any
    batch_size: int
    autocast: Callable | None = None
    unwrap: Callable = lambda m: m


class Guard:
    name = "guard"

    def setup(self, ctx: GuardContext) -> None:
        """Called once before the first step (after a resume restored the state)."""

    def measure(self, ctx: GuardContext) -> dict:
        """Extra metrics for the evaluation record (default: none)."""
        return {}

    def check(self, record: dict, step: int) -> GuardEvent | None:
        """Look at one evaluation record (annotating it is allowed); return an event or None."""
        return None

    def check_step(self, loss: float, grad_norm: float | None, step: int) -> GuardEvent | None:
        """Look at one optimizer step; only cheap scalar checks belong here."""
        return None

    def summary(self) -> dict:
        """What the end-of-run summary should show about this guard (default: nothing)."""
        return {}

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


GUARDS: Registry[type[Guard]] = Registry("guard")


class GuardSet(list):
    """The guards of one run, in the order they run; the loop talks to this, not to each guard.

    >>> guards = build_guards(recipe)
    >>> events = guards.evaluate(record, step, ctx)   # record now also holds the guards' signals
    """

    def setup(self, ctx: GuardContext) -> None:
        for g in self:
            g.setup(ctx)

    def evaluate(self, record: dict, step: int, ctx: GuardContext | None = None) -> list[GuardEvent]:
        if ctx is not None:
            for g in self:
                record.update(g.measure(ctx))
        return [e for g in self if (e := g.check(record, step)) is not None]

    def check_step(self, loss: float, grad_norm: float | None, step: int) -> GuardEvent | None:
        for g in self:
            if (event := g.check_step(loss, grad_norm, step)) is not None:
                return event
        return None

    @property
    def wants_grad_norm(self) -> bool:
        return any(getattr(g, "grad_norm_limit", None) for g in self)

    def summary(self) -> dict:
        return {g.name: s for g in self if (s := g.summary())}

    def state_dict(self) -> dict:
        return {g.name: g.state_dict() for g in self}

    def load_state_dict(self, state: dict) -> None:
        for g in self:
            g.load_state_dict(state.get(g.name, {}))
