"""Evaluation probes: one registry, one plugin shape.

A probe is one short module that registers a :class:`Probe`: ``applies(ctx)`` says why it cannot
run (or None when it can), ``prompts(ctx)`` lists what it will ask the models, ``run(ctx)`` returns
its section of ``eval.json``. Every number inside that section uses the metric shape of
:func:`smalltune.evaluate.results.metric`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...registry import Registry


@dataclass(frozen=True)
class Probe:
    help: str
    run: Callable  # (EvalContext) -> dict
    applies: Callable = lambda ctx: None  # (EvalContext) -> reason it cannot run, or None
    # (EvalContext) -> [(rendered prompts, max_new_tokens: one for all, one per prompt, or None for the caps')]
    # that ``run`` will generate: the runner answers every probe's prompts together, one pass per model, before
    # any probe runs (EvalContext.prefetch)
    prompts: Callable = lambda ctx: []


PROBES: Registry[Probe] = Registry("evaluation probe")

# Plugins register themselves on import; this is the one place that imports them (in run order:
# diversity reuses the task probe's generations).
from . import task, memorization, forgetting, robustness, diversity  # noqa: E402,F401
