"""The guard plugin shape: a :class:`~smalltune.train.plugins.Plugin` that watches evaluations.

A guard sees each evaluation record (a dict of metrics), may add its own signal to it (so the
metrics log carries it), and returns a :class:`GuardEvent` when it has something to say. A guard
that needs a measurement of its own (the forgetting budget scores reference text) does it in
``measure``; one that watches every optimizer step (numerical health) implements ``check_step``.
State round-trips through ``state_dict`` so ``--resume`` continues where the run stopped.
Guards share the one plugin protocol of ``train/plugins.py``; this module keeps their registry.
"""

from __future__ import annotations

from ...recipe import EarlyStoppingSection, GuardsSection
from ...registry import Registry
from ..plugins import GuardEvent, Plugin, PluginEnv, PluginSet

GuardContext = PluginEnv  # what a guard may use to measure things itself
GuardSet = PluginSet  # the guards of one run, in the order they run
# Constructor defaults are the recipe's, read from its schema: each default is defined once, there.
GUARD_DEFAULTS, EARLY_STOPPING_DEFAULTS = GuardsSection(), EarlyStoppingSection()


class Guard(Plugin):
    name = "guard"

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.guards.enabled


GUARDS: Registry[type[Guard]] = Registry("guard")

__all__ = ["EARLY_STOPPING_DEFAULTS", "GUARDS", "GUARD_DEFAULTS", "Guard", "GuardContext", "GuardEvent", "GuardSet"]
