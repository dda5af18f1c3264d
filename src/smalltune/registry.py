"""Name -> plugin registries with "did you mean" on a misspelled name.

Methods, audit checks, evaluation probes and guards each have one registry; a plugin registers
itself once, in its own module, with the ``register`` decorator.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import SmalltuneError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of plugins of one shape.

    >>> checks = Registry("audit check")
    >>> @checks.register("length")
    ... def length_check(ctx): ...
    >>> checks.get("lenght")
    Traceback (most recent call last):
    smalltune.errors.SmalltuneError: unknown audit check 'lenght' (did you mean 'length'?) ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = item
            return item

        return add

    def get(self, name: str, key: str | None = None) -> T:
        """Return the plugin called ``name``; ``key`` names the recipe key for the error."""
        if name in self._items:
            return self._items[name]
        raise SmalltuneError(self.unknown_message(name, key))

    def unknown_message(self, name: str, key: str | None = None) -> str:
        close = difflib.get_close_matches(str(name), self._items, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = f"{key}: " if key else ""
        return f"{where}unknown {self.kind} {name!r}{hint}; choose from {', '.join(sorted(self._items))}"

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self):
        return self._items.items()

    def names(self) -> list[str]:
        return list(self._items)
