"""k folds of the training data: stratified by category, grouped by the audit's near-duplicate clusters.

Paraphrases of one question must stay in one fold, or a fold's held-out score partly measures recall
of a question the model trained on (the leakage the audit reports between files). So the groups are
the clusters the audit itself finds (``audit/similar.py``, through :class:`~smalltune.audit.context.
AuditContext`): near-duplicate *prompts* (the leakage index) joined with near-duplicate *whole
conversations* (the duplicates index), at the audit's threshold. scikit-learn's
``StratifiedGroupKFold`` then deals whole groups to folds while keeping each fold's category mix
close to the data's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from ..audit.similar import UnionFind
from ..data import Example
from ..errors import SmalltuneError

NO_CATEGORY = "(none)"


@dataclass
class Fold:
    index: int  # 1-based, as the folder fold-<index>/ shows it
    train: list[Example]
    validation: list[Example]  # the held-out fold: validates training and is what the fold is evaluated on
    clusters: list[list[str]]  # ids of the near-duplicate clusters held out together in this fold

    def record(self) -> dict:
        return {"fold": self.index, "train": len(self.train), "validation": len(self.validation),
                "validation_ids": [e.id for e in self.validation], "clusters": self.clusters}


def near_duplicate_groups(examples: list[Example], threshold: float = 0.8, source: str = "train") -> list[int]:
    """A group number per example: examples the audit calls near-duplicates (prompt or whole
    conversation) share one; every other example is its own group.

    >>> near_duplicate_groups(examples)[:4]
    [0, 0, 1, 2]
    """
    from ..audit.context import AuditContext
    from ..audit.loading import SplitData

    ctx = AuditContext({"train": SplitData("train", Path(source), len(examples), list(examples))}, threshold=threshold)
    uf = UnionFind(len(examples))
    for cluster in ctx.similarity.clusters("train") + ctx.example_similarity.clusters("train"):
        for i in cluster[1:]:
            uf.union(cluster[0], i)
    roots = [uf.find(i) for i in range(len(examples))]
    number = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return [number[r] for r in roots]


def make_folds(examples: list[Example], k: int, seed: int, threshold: float = 0.8, source: str = "train") -> list[Fold]:
    """``k`` folds; every example is held out exactly once, and no near-duplicate cluster is split.

    >>> folds = make_folds(load_examples("train.jsonl"), k=5, seed=0)
    >>> sum(len(f.validation) for f in folds) == len(examples)
    True
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if k < 2:
        raise SmalltuneError(f"--folds must be at least 2, got {k}")
    seen: dict[str, Example] = {}
    for e in examples:
        if e.id in seen:
            raise SmalltuneError(f"{e.where}: example id {e.id!r} repeats the one at line {seen[e.id].line}; "
                                 "cross-validation records folds by id, so ids must be unique")
        seen[e.id] = e
    groups = near_duplicate_groups(examples, threshold, source)
    if len(set(groups)) < k:
        raise SmalltuneError(f"{source}: only {len(set(groups))} groups of distinct questions (near-duplicates count "
                             f"as one) for {k} folds; use --folds {max(2, len(set(groups)))} or fewer")
    labels = [e.category or NO_CATEGORY for e in examples]
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a category smaller than k cannot be in every fold; the fold table shows it
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        parts = list(splitter.split(examples, labels, groups))
    members: dict[int, list[str]] = {}
    for e, g in zip(examples, groups):
        members.setdefault(g, []).append(e.id)
    folds = [Fold(n + 1, [examples[i] for i in sorted(tr)], [examples[i] for i in sorted(va)],
                  [members[g] for g in dict.fromkeys(groups[i] for i in sorted(va)) if len(members[g]) > 1])
             for n, (tr, va) in enumerate(parts)]
    empty = [f.index for f in folds if not f.validation or not f.train]
    if empty:
        raise SmalltuneError(f"{source}: fold {empty[0]} came out empty ({len(set(groups))} groups for {k} folds); "
                             "use fewer folds")
    return folds
