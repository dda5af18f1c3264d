"""The one protocol for everything that hooks training: regularisers, SAM, replay, target transforms,
NEFTune and guards.

A plugin is one small file: a :class:`Plugin` subclass that names the recipe keys it reads
(``keys``), says when the recipe turns it on (``enabled``), builds itself from the recipe
(``from_recipe``) and overrides only the hooks it needs. It registers itself in its family's
registry (``REGULARIZERS``, ``GUARDS``, ``DATA_PLUGINS``); :func:`build_plugins` is the one place
that turns a recipe into the run's plugins, in ``order``. The hooks, in the order a run calls them::

    data      transform_examples -> (tokenise) -> transform_tokens -> extra_items      (base model)
    setup     setup(env)                                                  (method applied, before resume)
    per step  wrap_step(step) once, penalty(model) per micro-batch, check_step(...) per optimizer step
    per eval  measure(env) -> check(record, step) -> summary() at the end
    each log  log(record): every metrics.jsonl record, on the main process (experiment trackers)
    state     state_dict() / load_state_dict() through checkpoints; close() when training ends

Shaped after Lightning's ``Callback`` and transformers' ``TrainerCallback``: named hooks with
no-op defaults, so a plugin is only the code that makes it different.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..recipe import EvalSection

from ..registry import Registry


@dataclass
class PluginEnv:
    """What a plugin may use: the model and how to run it, the recipe, the run's folder and sources."""

    model: Any  # the model being trained (possibly wrapped by accelerate); the base model in data hooks
    tokenizer: Any
    device: Any = "cpu"
    batch_size: int = EvalSection().batch_size  # measurements are evaluations: the recipe's eval.batch_size
    autocast: Callable | None = None
    unwrap: Callable = lambda m: m
    recipe: Any = None
    run_path: Any = None
    accelerator: Any = None
    reference: Any = None  # ReferenceRoles: which general paragraphs serve which purpose (splits.py)
    # once(key, measure) for a measurement of the *untrained* model: runs from one loaded base (tuning trials,
    # folds) take it once for all (setup.Base.remember); a lone run just measures
    once: Callable = lambda key, measure: measure()
    # as_base(): a context in which ``model`` computes as the base model, also in a run started from a parent's
    # weights (an update: for a plugin with ``needs_base``); only during ``setup`` (setup.base_view)
    as_base: Callable = contextlib.nullcontext
    examples: list = field(default_factory=list)  # the run's training examples, as read (their meta included)


# Actions that end a run, and whether the run keeps weights: a stopped run publishes its chosen checkpoint; an
# abandoned one (a tuning trial the search pruned: never chosen, never evaluated) writes none, which spared 1.3 s
# and 517 MB of disk per pruned trial of the built-in model (benchmarks/README.md, "Item 5 on a Zen 5 EPYC").
STOPS = {"stop": True, "abandon": False}


@dataclass
class GuardEvent:
    guard: str
    action: str  # "stop" | "abandon" (STOPS) | "warn" | "note"
    step: int
    message: str  # one line a person reads: what fired and on what numbers
    values: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


class Plugin:
    """Base plugin: every hook is a no-op, so a plugin overrides only what it does."""

    name = ""
    keys: tuple[str, ...] = ()  # recipe keys this plugin reads (each documented once, in recipe/sections.py)
    order = 50  # lower runs first; guards that measure run before guards that decide
    needs_base = False  # measures the base model in setup (env.as_base()): an update keeps the base's weights for it

    @classmethod
    def enabled(cls, recipe) -> bool:
        return False

    @classmethod
    def from_recipe(cls, recipe) -> "Plugin":
        return cls()

    # --- data (run with the base model, before the method is applied) ---------------------------
    def transform_examples(self, examples: list, env: PluginEnv) -> tuple[list, dict]:
        return examples, {}

    def transform_tokens(self, items: list, env: PluginEnv) -> tuple[list, dict]:
        return items, {}

    def extra_items(self, n_train: int, env: PluginEnv) -> tuple[list, dict]:
        """Tokenised items to mix into the training set (replay)."""
        return [], {}

    # --- training -------------------------------------------------------------------------------
    def setup(self, env: PluginEnv) -> dict:
        """Prepare on the starting weights; return facts worth logging in the start event."""
        return {}

    def penalty(self, model):
        """A scalar added to the task loss of every micro-batch, or None."""
        return None

    def wrap_step(self, step):
        """Return the step strategy to use (SAM replaces the plain forward/backward)."""
        return step

    def check_step(self, loss: float, grad_norm: float | None, step: int) -> GuardEvent | None:
        """Look at one optimizer step before the update; only cheap scalar checks belong here."""
        return None

    def measure(self, env: PluginEnv) -> dict:
        """Extra metrics for the evaluation record."""
        return {}

    def check(self, record: dict, step: int) -> GuardEvent | None:
        """Look at one evaluation record (annotating it is allowed); return an event or None."""
        return None

    def metrics(self) -> dict:
        """Per-step numbers for metrics.jsonl (e.g. the last penalty)."""
        return {}

    def log(self, record: dict) -> None:
        """See every record written to metrics.jsonl (train steps, evaluations, events), on the main process only."""

    def summary(self) -> dict:
        """What the end-of-run summary shows about this plugin."""
        return {}

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)

    def close(self) -> None:
        """Remove hooks (called when training ends)."""


class PluginSet(list):
    """The plugins of one run, in order; the loop and data preparation talk to this, not to each plugin."""

    def of(self, kind: type) -> "PluginSet":
        return PluginSet(p for p in self if isinstance(p, kind))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self]

    def transform_examples(self, examples, env) -> tuple[list, dict]:
        info: dict = {}
        for p in self:
            examples, more = p.transform_examples(examples, env)
            info.update(more)
        return examples, info

    def transform_tokens(self, items, env) -> tuple[list, dict]:
        info: dict = {}
        for p in self:
            items, more = p.transform_tokens(items, env)
            info.update(more)
        return items, info

    def extra_items(self, n_train: int, env) -> tuple[list, dict]:
        items, info = [], {}
        for p in self:
            more, facts = p.extra_items(n_train, env)
            items += more
            info.update(facts)
        return items, info

    def setup(self, env) -> dict:
        info: dict = {}
        for p in self:
            info.update(p.setup(env) or {})
        return info

    def penalty(self, model):
        """Sum of the penalties (0.0 when no plugin adds one)."""
        total = 0.0
        for p in self:
            value = p.penalty(model)
            if value is not None:
                total = total + value
        return total

    def wrap_step(self, step):
        for p in self:
            step = p.wrap_step(step)
        return step

    def check_step(self, loss: float, grad_norm: float | None, step: int) -> GuardEvent | None:
        for p in self:
            if (event := p.check_step(loss, grad_norm, step)) is not None:
                return event
        return None

    def evaluate(self, record: dict, step: int, env: PluginEnv | None = None) -> list[GuardEvent]:
        """Every plugin measures (when ``env`` is given), then every plugin checks the record."""
        if env is not None:
            for p in self:
                record.update(p.measure(env))
        return [e for p in self if (e := p.check(record, step)) is not None]

    def metrics(self) -> dict:
        out: dict = {}
        for p in self:
            out.update(p.metrics())
        return out

    def summary(self) -> dict:
        return {p.name: s for p in self if (s := p.summary())}

    def log(self, record: dict) -> None:
        for p in self:
            p.log(record)

    @property
    def wants_grad_norm(self) -> bool:
        return any(getattr(p, "grad_norm_limit", None) for p in self)

    def state_dict(self) -> dict:
        return {p.name: p.state_dict() for p in self}

    def load_state_dict(self, state: dict) -> None:
        for p in self:
            p.load_state_dict(state.get(p.name, {}))

    def close(self) -> None:
        for p in self:
            p.close()


def registries() -> list[Registry]:
    """Every plugin family, in the order their plugins run (data, regularisers, guards)."""
    from .guards.base import GUARDS
    from .regularize import REGULARIZERS
    from .targets import DATA_PLUGINS

    return [DATA_PLUGINS, REGULARIZERS, GUARDS]


def build_plugins(recipe, *families: Registry) -> PluginSet:
    """Instances of every registered plugin the recipe turns on, in ``order``.

    >>> build_plugins(load_recipe("r.yaml", ["regularize.ewc_lambda=100"])).names
    ['numerical', 'ewc', 'over_memorization', 'overfitting', 'convergence', 'early_stopping']
    """
    found = [cls for reg in (families or registries()) for _, cls in reg.items() if cls.enabled(recipe)]
    return PluginSet(cls.from_recipe(recipe) for cls in sorted(found, key=lambda c: c.order))
