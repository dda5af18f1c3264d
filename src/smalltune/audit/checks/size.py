"""Size and balance: examples per task/category against the 1,000-per-task rule of thumb.

The method table follows the usual parameter-efficient fine-tuning guidance: with few examples only
a small number of trainable parameters can be fitted without memorising (LoRA, prefix tuning); more
data supports bottleneck adapters or partial fine-tuning, and full fine-tuning needs roughly 100k+.
"""

from __future__ import annotations

from collections import Counter

from ..context import MAX_EXAMPLES
from ..report import Finding
from . import CHECKS

PER_TASK = 1000  # rule of thumb: examples per task for solid task performance
IMBALANCE = 10  # largest / smallest category at which sampling becomes a problem
NO_CATEGORY = "(no category)"

METHODS = (  # (upper bound, what that size calls for)
    (1_000, "LoRA or prefix tuning (few trainable parameters, strong regularisation, early stopping)"),
    (10_000, "LoRA or bottleneck adapters"),
    (100_000, "bottleneck adapters or partial fine-tuning"),
    (float("inf"), "full fine-tuning is viable"),
)


def method_for(n: int) -> str:
    """What a dataset of ``n`` examples calls for.

    >>> method_for(300)
    'LoRA or prefix tuning (few trainable parameters, strong regularisation, early stopping)'
    """
    return next(text for bound, text in METHODS if n < bound)


@CHECKS.register("size")
def check(ctx) -> list[Finding]:
    if "train" not in ctx.splits:
        return []
    train = ctx.splits["train"]
    counts = Counter(ex.category or NO_CATEGORY for ex in train.examples)
    first = {}  # category -> pointer to its first example
    for ex in train.examples:
        first.setdefault(ex.category or NO_CATEGORY, {"file": ex.source, "line": ex.line})
    at = lambda c, k: {**first.get(c, {"file": train.file}), "category": c, "examples": k}  # noqa: E731
    n = sum(counts.values())
    ctx.stats["size"] = {"train_examples": n, "categories": dict(counts.most_common()), "method": method_for(n)}
    if n == 0:  # every record had a problem: the format findings say which; nothing here to size
        return [Finding("size", "error", "no usable training examples", 0,
                        "every record of the training file has a problem (listed above); training would stop at "
                        "the first one", [{"file": train.file, "line": 1, "examples": 0}])]
    findings = [Finding("size", "info", f"{n:,} training examples", n,
                        f"this size calls for {method_for(n)}; more data is the surest way to a better model",
                        [{"file": train.file, "line": 1, "examples": n}])]
    small = {c: k for c, k in counts.items() if k < PER_TASK}
    if small:
        tasks = "the task" if len(counts) == 1 else f"{len(small)} of {len(counts)} categories"
        findings.append(Finding(
            "size", "info", f"fewer than {PER_TASK:,} examples per task", len(small),
            f"{tasks} below the {PER_TASK:,}-per-task rule of thumb: expect the model to learn style and facts it "
            "sees often, not robust skills; prefer LoRA with early stopping, and augment the smallest categories",
            [at(c, k) for c, k in sorted(small.items(), key=lambda x: x[1])]))
    if len(counts) > 1:
        (big, nbig), (tiny, ntiny) = counts.most_common()[0], counts.most_common()[-1]
        if nbig >= IMBALANCE * ntiny:
            findings.append(Finding(
                "size", "warning", "unbalanced categories", len(counts),
                f"{big!r} has {nbig} examples, {tiny!r} only {ntiny}: the model will favour the large categories; "
                "add examples to the small ones (augmentation) or cap the large ones",
                [at(c, k) for c, k in counts.most_common()]))
    seen = set(counts)
    for name in ("validation", "test"):
        if name in ctx.splits:
            absent = [ex for ex in ctx.splits[name].examples if ex.category and ex.category not in seen]
            missing = Counter(ex.category for ex in absent)
            if missing:
                findings.append(Finding(
                    "size", "warning", f"{name} categories absent from train", len(missing),
                    f"{name} asks about categories train never shows; add training examples for them or "
                    "expect low scores there",
                    [{"file": ex.source, "line": ex.line, "category": ex.category} for ex in absent][:MAX_EXAMPLES]))
    return findings
