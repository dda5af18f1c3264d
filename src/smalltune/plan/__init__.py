"""Planning: dataset size + model + hardware -> a complete, commented recipe.

Import-light: the planner (and torch) load on the first call. The rules live in one table,
:mod:`smalltune.plan.rules`; ``smalltune plan --explain`` prints it.
"""


def plan(data, model: str = "smollm2-135m-instruct", device_memory_gib: float | None = None, update: bool = False,
         validation: str | None = None, test: str | None = None, output=None, processes: int = 1,
         sharding: str = "ddp"):
    """Plan a recipe for training ``model`` on ``data``; see :func:`smalltune.plan.planner.plan`.

    >>> p = smalltune.plan("train.jsonl", output="recipe.yaml")
    >>> p.recipe.train.lr, p.memory.total / 2**30
    """
    from .planner import plan as _plan

    return _plan(data, model=model, device_memory_gib=device_memory_gib, update=update, validation=validation,
                 test=test, output=output, processes=processes, sharding=sharding)


__all__ = ["plan"]
