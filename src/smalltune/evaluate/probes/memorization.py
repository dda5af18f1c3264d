"""Verbatim memorization of training answers, and the train vs held-out loss gap.

Each training prompt is answered greedily; an answer is *verbatim* when it reproduces at least
32 consecutive target tokens (the whole target when it is shorter) and *near-verbatim* when its
normalised edit similarity to the target is >= 0.9. A second pass gives the model the first half
of each answer and checks whether it completes the rest (the extraction test of "Quantifying
Memorization Across Neural Language Models", arXiv 2202.07646). Short targets are reproduced
trivially, so rates are also given for targets of >= 16 tokens and per length bin. Each answer is
generated up to its own target's (or suffix's) length plus ``SLACK`` tokens.
"""

from __future__ import annotations

import numpy as np

from ...data import tokenize_examples
from .. import metrics as M
from ..context import MODELS, weighted_loss
from ..results import _clean, metric
from . import PROBES, Probe

MIN_RUN = 32  # consecutive target tokens that count as verbatim
NEAR = 0.9  # normalised edit similarity that counts as near-verbatim
LONG = 16  # targets at least this many tokens long are not trivially reproduced
BINS = ((0, 8), (8, 16), (16, 32), (32, 64), (64, None))
WORST = 5
SLACK = 8  # tokens generated past the target's length


def training_examples(recipe, run_path=None) -> list:
    """The examples the run actually trained on (its recorded split; the validation examples left out)."""
    from ...train.splits import load_splits, recorded_splits

    return (recorded_splits(run_path, recipe) if run_path else load_splits(recipe)).train


def _tokens(tok, text: str) -> list[int]:
    # A leading space makes the first word tokenise the same whether or not it started the text.
    return tok(" " + " ".join(text.split()), add_special_tokens=False)["input_ids"]


def _score(tok, output: str, target: str) -> dict:
    out_t, tgt_t = _tokens(tok, output), _tokens(tok, target)
    run = M.longest_common_run(out_t, tgt_t)
    sim = M.edit_similarity(output, target)
    verbatim = run >= min(MIN_RUN, len(tgt_t))
    return {"overlap": run, "similarity": sim, "verbatim": float(verbatim), "near": float(sim >= NEAR),
            "memorized": float(verbatim or sim >= NEAR), "length": len(tgt_t)}


def _inputs(ctx):
    """(sampled training examples, their prompts, targets, new tokens per prompt, prefix prompts, their suffixes,
    new tokens per prefix prompt)."""
    tok = ctx.tokenizer
    examples = ctx.sample(training_examples(ctx.recipe, ctx.run_dir), ctx.caps.memorization, "memorization")
    prompts = [ctx.render(ex.prompt(ctx.system_prompt)) for ex in examples]
    targets = [ex.target for ex in examples]
    # Each answer is generated up to its own target's length plus SLACK tokens: a reproduction needs no more,
    # and a longer answer only adds decoding steps (a prefix prompt's answer is compared with half a target).
    budget = lambda text: min(len(_tokens(tok, text)) + SLACK, _cap(ctx))  # noqa: E731
    # Prefix extraction: the first half of the answer is given, the rest must follow.
    pre_prompts, suffixes = [], []
    for p, t in zip(prompts[: ctx.caps.prefix], targets[: ctx.caps.prefix]):
        ids = _tokens(tok, t)
        if len(ids) >= 8:
            half = len(ids) // 2
            pre_prompts.append(p + tok.decode(ids[:half]).lstrip())
            suffixes.append(tok.decode(ids[half:]))
    return (examples, prompts, targets, [budget(t) for t in targets], pre_prompts, suffixes,
            [budget(s) for s in suffixes])


def _cap(ctx) -> int:
    return max(ctx.caps.max_new_tokens, MIN_RUN + 8)


def requests(ctx) -> list[tuple[list[str], list[int]]]:
    _, prompts, _, new, pre_prompts, _, pre_new = _inputs(ctx)
    return [(prompts, new), (pre_prompts, pre_new)]


def run(ctx) -> dict:
    tok = ctx.tokenizer
    examples, prompts, targets, new, pre_prompts, suffixes, pre_new = _inputs(ctx)
    outputs = {m: ctx.generate(prompts, m, new, "memorization") for m in MODELS}
    scores = {m: [_score(tok, o, t) for o, t in zip(outputs[m], targets)] for m in MODELS}
    pre = {m: [_score(tok, o, s) for o, s in zip(ctx.generate(pre_prompts, m, pre_new, "prefix extraction"), suffixes)]
           for m in MODELS} if pre_prompts else {m: [] for m in MODELS}

    def col(rows, key, keep=lambda r: True):
        return [r[key] if keep(r) else None for r in rows]

    seed = ctx.seed
    res = {name: metric(col(scores["base"], key), col(scores["finetuned"], key), seed=seed)
           for name, key in (("verbatim_rate", "verbatim"), ("near_verbatim_rate", "near"),
                             ("memorized_rate", "memorized"))}
    long = lambda r: r["length"] >= LONG  # noqa: E731
    res["verbatim_rate_long"] = metric(col(scores["base"], "memorized", long),
                                       col(scores["finetuned"], "memorized", long), seed=seed)
    res["prefix_verbatim_rate"] = metric(col(pre["base"], "verbatim"), col(pre["finetuned"], "verbatim"), seed=seed)
    res["long_min_tokens"] = LONG
    res["by_length"] = {}
    for lo, hi in BINS:
        inside = lambda r, lo=lo, hi=hi: r["length"] >= lo and (hi is None or r["length"] < hi)  # noqa: E731
        m = metric(col(scores["base"], "memorized", inside), col(scores["finetuned"], "memorized", inside), seed=seed)
        if m["n"]:
            res["by_length"][f"{lo}-{hi - 1}" if hi else f"{lo}+"] = m
    res["by_category"] = {}
    for cat in sorted({ex.category for ex in examples if ex.category}):
        inside = [ex.category == cat for ex in examples]
        res["by_category"][cat] = metric([r["memorized"] if k else None for r, k in zip(scores["base"], inside)],
                                         [r["memorized"] if k else None for r, k in zip(scores["finetuned"], inside)],
                                         seed=seed)
    order = sorted(range(len(examples)), key=lambda i: (-scores["finetuned"][i]["overlap"] / max(scores["finetuned"][i]["length"], 1),
                                                        -scores["finetuned"][i]["similarity"]))
    res["worst"] = [{"id": examples[i].id, "prompt": examples[i].prompt_text, "target": targets[i],
                     "output": outputs["finetuned"][i], "overlap_tokens": scores["finetuned"][i]["overlap"],
                     "similarity": round(scores["finetuned"][i]["similarity"], 4)} for i in order[:WORST]]
    res.update(loss_gap(ctx, examples))
    res["criteria"] = {"min_run_tokens": MIN_RUN, "near_similarity": NEAR,  # answers: target tokens + slack
                       "slack_tokens": SLACK, "max_new_tokens": _cap(ctx)}
    return res


def loss_gap(ctx, train_examples) -> dict:
    """Held-out loss minus training loss, per model, with a two-sample bootstrap CI of the change."""
    L = ctx.recipe.data.max_length
    tr, _ = tokenize_examples(ctx.tokenizer, train_examples, L, ctx.system_prompt)
    heldout = ctx.sample(ctx.test, ctx.caps.test, "test")  # the task probe's questions
    te, _ = tokenize_examples(ctx.tokenizer, heldout, L, ctx.system_prompt)
    rows = {(split, m): np.array(ctx.item_losses(items, m), dtype=float)
            for split, items in (("train", tr), ("heldout", te)) for m in MODELS}
    out = {"train_loss": metric(rows["train", "base"], rows["train", "finetuned"], weighted_loss, ctx.seed),
           "heldout_loss": metric(rows["heldout", "base"], rows["heldout", "finetuned"], weighted_loss, ctx.seed)}
    gap = {m: weighted_loss(rows["heldout", m]) - weighted_loss(rows["train", m]) for m in MODELS}
    rng = np.random.default_rng(ctx.seed)
    deltas = []
    for _ in range(1000):
        i = rng.integers(0, len(tr), len(tr))
        j = rng.integers(0, len(te), len(te))
        g = {m: weighted_loss(rows["heldout", m][j]) - weighted_loss(rows["train", m][i]) for m in MODELS}
        deltas.append(g["finetuned"] - g["base"])
    lo, hi = np.quantile(deltas, [0.025, 0.975])
    out["loss_gap"] = {"base": _clean(gap["base"]), "finetuned": _clean(gap["finetuned"]),
                       "delta": _clean(gap["finetuned"] - gap["base"]), "ci": [_clean(lo), _clean(hi)],
                       "n": len(tr) + len(te)}
    return out


PROBES.register("memorization")(Probe("verbatim reproduction of training answers", run, prompts=requests))
