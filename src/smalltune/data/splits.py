"""Validation splits sized for small data, stratified by category."""

from __future__ import annotations

import random
from collections import defaultdict

from .example import Example


def auto_validation_fraction(n: int) -> float:
    """Share of n examples to hold out for validation when the user gives no file.

    Small sets need a larger share for a validation loss that is not pure noise (at least ~30
    examples), large sets need less; capped so validation never exceeds ~1,000 examples.
    """
    if n < 150:
        return 0.2
    if n < 1000:
        return 0.15
    if n < 10_000:
        return 0.1
    return max(0.01, min(0.05, 1000 / n))


def carve_validation(
    examples: list[Example], fraction: float | None = None, seed: int = 42
) -> tuple[list[Example], list[Example]]:
    """Split ``examples`` into (train, validation), stratified by ``category`` when present.

    Every category with at least 3 examples contributes at least one validation example, so early
    stopping sees each task. Deterministic for a given seed.
    """
    fraction = auto_validation_fraction(len(examples)) if fraction is None else fraction
    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    by_cat: dict[str | None, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_cat[ex.category].append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for cat in sorted(by_cat, key=str):
        idx = by_cat[cat][:]
        rng.shuffle(idx)
        k = round(len(idx) * fraction)
        if k == 0 and len(idx) >= 3:
            k = 1
        held.update(idx[:k])
    if not held:
        held.add(rng.randrange(len(examples)))
    train = [ex for i, ex in enumerate(examples) if i not in held]
    val = [ex for i, ex in enumerate(examples) if i in held]
    return train, val
