"""Duplicates inside each split: exact copies, near-duplicate prompts, conflicting answers.

Exact copies compare whole conversations after normalisation (case, punctuation, whitespace).
Near-duplicates compare whole conversations (prompt and answer) by Jaccard similarity of word
shingles (MinHash/LSH candidates, confirmed exactly; see ``audit/similar.py``), reported as
clusters. A conflict is one normalised
prompt with different normalised answers: the model is taught two answers to one question.
"""

from __future__ import annotations

from collections import defaultdict

from ..context import MAX_EXAMPLES
from ..report import Finding
from ..text import snippet
from . import CHECKS

PARAPHRASE_MIN_WORDS = 5  # shorter answers ("Yes.") are shared by unrelated questions


def _groups(keys) -> list[list[int]]:
    by_key = defaultdict(list)
    for i, k in enumerate(keys):
        by_key[k].append(i)
    return [g for g in by_key.values() if len(g) > 1]


@CHECKS.register("duplicates")
def check(ctx) -> list[Finding]:
    exact, near, conflicts, paraphrases = [], [], [], []
    n_exact = n_near = n_near_examples = n_conflicts = n_shared = 0
    stats = {"threshold": ctx.threshold}
    for name, split in ctx.splits.items():
        examples, prompts, targets = split.examples, ctx.prompts[name], ctx.targets[name]
        turns = ctx.normalised[name]
        dup_groups = _groups(turns)
        n_exact += sum(len(g) - 1 for g in dup_groups)
        for c, g in enumerate(dup_groups):
            exact += [ctx.where(name, i, group=f"{name}-{c + 1}") for i in g]
        conflicting = [g for g in _groups(prompts) if len({targets[i] for i in g}) > 1]
        n_conflicts += len(conflicting)
        for c, g in enumerate(conflicting):
            conflicts += [ctx.where(name, i, group=f"{name}-{c + 1}", answer=snippet(examples[i].target)) for i in g]
        # Clusters made only of exact copies are already reported above.
        clusters = [c for c in ctx.example_similarity.clusters(name)
                    if len({turns[i] for i in c}) > 1]
        n_near += len(clusters)
        n_near_examples += sum(len(c) for c in clusters)
        for c, members in enumerate(clusters):
            near += [ctx.where(name, i, cluster=f"{name}-{c + 1}", prompt=snippet(examples[i].prompt_text))
                     for i in members]
        # Paraphrase groups: one substantial answer given to several different prompts.
        shared = [g for g in _groups(targets) if len(targets[g[0]].split()) >= PARAPHRASE_MIN_WORDS
                  and len({prompts[i] for i in g}) > 1]
        n_shared += len(shared)
        for c, g in enumerate(shared):
            paraphrases += [ctx.where(name, i, group=f"{name}-{c + 1}", prompt=snippet(examples[i].prompt_text))
                            for i in g]
        stats[name] = {"exact_copies": sum(len(g) - 1 for g in dup_groups), "near_duplicate_clusters": len(clusters),
                       "conflicting_prompts": len(conflicting), "shared_answer_groups": len(shared)}
    ctx.stats["duplicates"] = stats
    findings = []
    if n_conflicts:
        findings.append(Finding(
            "duplicates", "warning", "identical prompts with different answers", n_conflicts,
            "the model is taught two answers to one question and learns to hedge or pick at random; "
            "keep the correct answer, or make the prompts differ in the detail that decides the answer",
            conflicts[:MAX_EXAMPLES]))
    if n_exact:
        findings.append(Finding(
            "duplicates", "warning", "exact duplicate examples", n_exact,
            "extra copies weigh those examples more and speed up memorisation; keep one copy of each",
            exact[:MAX_EXAMPLES]))
    if n_near:
        findings.append(Finding(
            "duplicates", "warning", f"near-duplicate example clusters (similarity >= {ctx.threshold:g})", n_near,
            f"{n_near_examples} examples are nearly the same question with nearly the same answer, so those topics "
            "count several times; keep one per cluster, or keep the paraphrases on purpose (they teach robustness)",
            near[:MAX_EXAMPLES]))
    if n_shared:
        findings.append(Finding(
            "duplicates", "info", "one answer to several different prompts", n_shared,
            "paraphrased questions sharing an answer: useful augmentation if deliberate, but they weigh that "
            "answer more, and a paraphrase in validation/test measures recall of the shared answer",
            paraphrases[:MAX_EXAMPLES]))
    return findings
