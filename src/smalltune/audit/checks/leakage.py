"""Leakage: prompts of validation/test that also appear (exactly or nearly) in an earlier split.

A validation or test question the model trained on measures memory, not generalisation: the
scores look better than the model is. Exact = identical normalised prompt; near = Jaccard of word
shingles at or above the threshold (the same index as the duplicates check).
"""

from __future__ import annotations

from ..context import MAX_EXAMPLES
from ..report import Finding
from ..text import snippet
from . import CHECKS

PAIRS = (("validation", "train"), ("test", "train"), ("test", "validation"))


@CHECKS.register("leakage")
def check(ctx) -> list[Finding]:
    exact, near, stats = [], [], {}
    for split, other in PAIRS:
        if split not in ctx.splits or other not in ctx.splits:
            continue
        mine, theirs = ctx.prompts[split], ctx.prompts[other]
        matches = ctx.similarity.matches(split, other)
        n_exact = n_near = 0
        for i, (j, sim) in sorted(matches.items()):
            there = ctx.splits[other].examples[j]
            pointer = ctx.where(split, i, match=f"{there.source}:{there.line}", similarity=round(sim, 3),
                                prompt=snippet(ctx.splits[split].examples[i].prompt_text))
            if mine[i] == theirs[j]:
                n_exact += 1
                exact.append(pointer)
            else:
                n_near += 1
                near.append(pointer)
        stats[f"{split}_in_{other}"] = {"exact": n_exact, "near": n_near}
    ctx.stats["leakage"] = stats
    findings = []
    if exact:
        findings.append(Finding(
            "leakage", "error", "prompts shared across splits", len(exact),
            "these validation/test prompts also occur in an earlier split, so their scores measure memory; "
            "move each to one split only (remove it from validation/test, or from train)", exact[:MAX_EXAMPLES]))
    if near:
        findings.append(Finding(
            "leakage", "warning", f"near-duplicate prompts across splits (similarity >= {ctx.threshold:g})", len(near),
            "these validation/test prompts are close paraphrases of training prompts and inflate scores; "
            "drop or rewrite them, or keep them only as a deliberate paraphrase test", near[:MAX_EXAMPLES]))
    return findings
