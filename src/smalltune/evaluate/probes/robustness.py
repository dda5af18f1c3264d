"""Robustness: held-out questions perturbed (typos, casing, punctuation, filler words, reordered
clauses, the test set's own rephrasings); the answer quality drop against the clean question.

Quality is key-fact recall where the test item lists key facts, else ROUGE-L against the
reference answer. Each perturbation reports clean, perturbed and drop (clean - perturbed), each in
the metric shape; items where a perturbation does not apply are left out of that perturbation.
"""

from __future__ import annotations

from .. import metrics as M
from ..context import MODELS
from ..perturb import PERTURBATIONS, perturb
from ..results import metric
from . import PROBES, Probe
from .task import answer_limits, answers, test_prompts


def quality(output: str, example) -> float:
    facts = example.meta.get("key_facts") or []
    return M.key_fact_recall(output, facts) if facts else M.rouge_l(output, example.target)


def chosen(ctx) -> list[str]:
    """Perturbations to run: all, or in quick mode the first few that apply to this test set."""
    names = PERTURBATIONS.names()
    if not any(ex.meta.get("rephrasings") for ex in ctx.test):
        names.remove("rephrasings")
    return names[: ctx.caps.perturbations] if ctx.caps.perturbations else names


def _variants(ctx, examples, name: str) -> tuple[list[int], list[str], list[str]]:
    """Perturbed prompts of ``examples`` (seeded per perturbation): their owner, the rendered prompt, the text."""
    rng = ctx.rng(f"perturb:{name}")
    owners, variants, shown = [], [], []
    for i, ex in enumerate(examples):
        for conv in perturb(ex.prompt(ctx.system_prompt), name, rng, ex)[: ctx.caps.variants]:
            owners.append(i)
            variants.append(ctx.render(conv))
            shown.append(conv[-1]["content"])
    return owners, variants, shown


def requests(ctx) -> list[tuple[list[str], list[int]]]:
    examples, prompts = test_prompts(ctx)
    limits = answer_limits(ctx, examples)
    out = [(prompts, limits)]
    for name in chosen(ctx):
        owners, variants, _ = _variants(ctx, examples, name)
        out.append((variants, [limits[i] for i in owners]))  # a variant's answer as long as its question's
    return out


def run(ctx) -> dict:
    examples, prompts = test_prompts(ctx)
    clean = {m: [quality(o, ex) for o, ex in zip(outs, examples)] for m, outs in answers(ctx, examples, prompts).items()}
    limits = answer_limits(ctx, examples)
    res = {"quality": "key_fact_recall where key facts are listed, else rouge_l", "perturbations": {}}
    for name in chosen(ctx):
        owners, variants, shown = _variants(ctx, examples, name)
        if not variants:
            continue
        outs = {m: ctx.generate(variants, m, [limits[i] for i in owners], f"robustness: {name}") for m in MODELS}
        # Per item: mean quality over its variants (several rephrasings count once together).
        per = {m: {} for m in MODELS}
        for m in MODELS:
            for i, o in zip(owners, outs[m]):
                per[m].setdefault(i, []).append(quality(o, examples[i]))
        items = sorted(per["finetuned"])
        pert = {m: [M.mean(per[m][i]) for i in items] for m in MODELS}
        cln = {m: [clean[m][i] for i in items] for m in MODELS}
        res["perturbations"][name] = {
            "clean": metric(cln["base"], cln["finetuned"], seed=ctx.seed),
            "perturbed": metric(pert["base"], pert["finetuned"], seed=ctx.seed),
            "drop": metric([c - p for c, p in zip(cln["base"], pert["base"])],
                           [c - p for c, p in zip(cln["finetuned"], pert["finetuned"])], seed=ctx.seed),
            "variants": len(variants),
            "example": {"clean": examples[owners[0]].prompt_text, "perturbed": shown[0]},
        }
    return res


PROBES.register("robustness")(Probe("quality drop on perturbed questions", run,
                                    lambda ctx: None if ctx.test else "no held-out examples", requests))
