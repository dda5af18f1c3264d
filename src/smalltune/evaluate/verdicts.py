"""Verdicts: the evaluation and the training log read against documented thresholds, each with
the fix to try. docs/evaluation.md justifies every threshold; change them there and here together.

A verdict rule takes (probes, training) and returns a :class:`Verdict` or None when its inputs are
missing; ``training`` holds ``train_summary.json`` and the evaluation records of ``metrics.jsonl``.
"""

from __future__ import annotations

from typing import Callable

from ..registry import Registry
from .results import Verdict

Rule = Callable[[dict, dict], "Verdict | None"]
RULES: Registry[Rule] = Registry("verdict")

PPL_HEALTHY = (1.5, 4.0)
PPL_PROBLEM = 5.0
ACC_GOOD, ACC_INVESTIGATE = 0.85, 0.75
CONVERGED_PER_EPOCH = 0.1
GAP_GROWTH = 0.1  # nats of train/validation gap growth since the best evaluation
MEMO_WARN, MEMO_PROBLEM = 0.25, 0.6  # rise in the verbatim rate on long training answers
FORGET_WARN, FORGET_PROBLEM = 0.05, 0.15  # relative rise of reference perplexity
QA_WARN, QA_PROBLEM = 0.05, 0.15  # drop of general-question accuracy (absolute)
ROBUST_WARN = 0.2  # fine-tuned quality drop on a perturbation
REPEAT_WARN = 0.2  # share of repeated trigrams in fine-tuned answers


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def _best(training: dict) -> dict | None:
    return _get(training, "summary", "best_metrics")


@RULES.register("validation_perplexity")
def validation_perplexity(probes, training):
    ppl = _get(_best(training) or {}, "eval_ppl")
    if ppl is None:
        return None
    lo, hi = PPL_HEALTHY
    thr = f"healthy {lo}-{hi}, problem > {PPL_PROBLEM}"
    if ppl > PPL_PROBLEM:
        return Verdict("validation_perplexity", "problem", ppl, thr, f"validation perplexity {ppl:.2f} is high: the model has not learned the answers",
                       "train longer or with a higher train.lr; check the audit for inconsistent answers")
    if ppl > hi:
        return Verdict("validation_perplexity", "warn", ppl, thr, f"validation perplexity {ppl:.2f} is above the healthy range",
                       "train a little longer (train.epochs) or raise method.r")
    if ppl < lo:
        return Verdict("validation_perplexity", "warn", ppl, thr, f"validation perplexity {ppl:.2f} is suspiciously low",
                       "check the audit for train/validation leakage (near-duplicate questions)")
    return Verdict("validation_perplexity", "ok", ppl, thr, f"validation perplexity {ppl:.2f} is in the healthy range", "")


@RULES.register("validation_accuracy")
def validation_accuracy(probes, training):
    acc = _get(_best(training) or {}, "eval_token_acc")
    if acc is None:
        return None
    thr = f"good > {ACC_GOOD:.0%}, investigate < {ACC_INVESTIGATE:.0%}"
    if acc < ACC_INVESTIGATE:
        return Verdict("validation_accuracy", "warn", acc, thr, f"validation token accuracy {acc:.1%} is low",
                       "look at the worst validation answers; more epochs or cleaner, more consistent answers")
    word = "good" if acc > ACC_GOOD else "acceptable"
    return Verdict("validation_accuracy", "ok", acc, thr, f"validation token accuracy {acc:.1%} is {word}", "")


def _evals(training) -> list[dict]:
    return [r for r in training.get("evals", []) if r.get("eval_loss") is not None]


@RULES.register("convergence")
def convergence(probes, training):
    evals = _evals(training)
    if len(evals) < 2 or evals[-1].get("epoch") is None:
        return None
    last = evals[-1]
    earlier = [r for r in evals[:-1] if last["epoch"] - r["epoch"] >= 1.0] or evals[:1]
    ref = earlier[-1]
    span = max(last["epoch"] - ref["epoch"], 1e-9)
    change = (last["eval_loss"] - ref["eval_loss"]) / span
    thr = f"|validation loss change| < {CONVERGED_PER_EPOCH} per epoch"
    if abs(change) < CONVERGED_PER_EPOCH:
        return Verdict("convergence", "ok", change, thr, f"validation loss changed {change:+.3f} per epoch at the end: converged", "")
    if change < 0:
        return Verdict("convergence", "warn", change, thr, f"validation loss still falling ({change:+.3f} per epoch)",
                       "train longer: raise train.epochs (early stopping will stop it in time)")
    return Verdict("convergence", "warn", change, thr, f"validation loss rising at the end ({change:+.3f} per epoch)",
                   "the best checkpoint was kept; lower train.epochs or early_stopping.patience to save time")


@RULES.register("overfitting")
def overfitting(probes, training):
    evals = [r for r in _evals(training) if r.get("train_loss") is not None]
    if len(evals) < 2:
        return None
    gaps = [r["eval_loss"] - r["train_loss"] for r in evals]
    best = min(range(len(evals)), key=lambda i: evals[i]["eval_loss"])
    growth = gaps[-1] - gaps[best]
    thr = f"train/validation gap growing by > {GAP_GROWTH} after the best evaluation"
    if growth > GAP_GROWTH and evals[-1]["eval_loss"] > evals[best]["eval_loss"]:
        return Verdict("overfitting", "warn", growth, thr,
                       f"train/validation gap grew by {growth:.3f} after step {evals[best].get('step')} while validation loss rose",
                       "the best checkpoint was kept; for the next run lower train.epochs or train.lr, or raise method.dropout")
    return Verdict("overfitting", "ok", growth, thr, "no growing train/validation gap", "")


@RULES.register("memorization")
def memorization(probes, training):
    m = _get(probes, "memorization", "verbatim_rate_long") or {}
    if m.get("delta") is None:
        m = _get(probes, "memorization", "memorized_rate") or {}
    if m.get("delta") is None:
        return None
    d = m["delta"]
    thr = f"rise in verbatim rate on long training answers: warn > {MEMO_WARN:.0%}, problem > {MEMO_PROBLEM:.0%}"
    msg = f"fine-tuned model reproduces {m['finetuned']:.0%} of long training answers verbatim (base {m['base']:.0%})"
    if d > MEMO_PROBLEM:
        return Verdict("memorization", "problem", d, thr, msg, "lower train.epochs or train.lr, raise method.dropout; "
                       "paraphrase answers (augmentation) so no single wording is drilled in")
    if d > MEMO_WARN:
        return Verdict("memorization", "warn", d, thr, msg, "fewer epochs or more varied answers; check the worst examples")
    return Verdict("memorization", "ok", d, thr, msg, "")


@RULES.register("forgetting_perplexity")
def forgetting_perplexity(probes, training):
    rel = _get(probes, "forgetting", "reference_ppl_relative_change", "value")
    if rel is None:
        return None
    thr = f"reference perplexity rise: warn > {FORGET_WARN:.0%}, problem > {FORGET_PROBLEM:.0%}"
    msg = f"perplexity on general reference text changed {rel:+.1%}"
    fix = "lower train.lr or method.r, train fewer epochs, or mix general text into training (replay)"
    if rel > FORGET_PROBLEM:
        return Verdict("forgetting_perplexity", "problem", rel, thr, msg, fix)
    if rel > FORGET_WARN:
        return Verdict("forgetting_perplexity", "warn", rel, thr, msg, fix)
    return Verdict("forgetting_perplexity", "ok", rel, thr, msg, "")


@RULES.register("forgetting_questions")
def forgetting_questions(probes, training):
    m = _get(probes, "forgetting", "general_accuracy") or {}
    if m.get("delta") is None:
        return None
    drop = -m["delta"]
    sure = m["ci"][1] is not None and m["ci"][1] < 0  # the whole CI of the change is below zero
    thr = f"general-question accuracy drop: warn > {QA_WARN:.0%}, problem > {QA_PROBLEM:.0%} with the CI below 0"
    msg = f"general-question accuracy {m['base']:.0%} -> {m['finetuned']:.0%} (n={m['n']})"
    fix = "lower train.lr, fewer epochs, or replay general data; see the forgetting examples"
    if drop > QA_PROBLEM and sure:
        return Verdict("forgetting_questions", "problem", drop, thr, msg, fix)
    if drop > QA_WARN:
        return Verdict("forgetting_questions", "warn", drop, thr, msg + ("" if sure else " (CI includes no change)"), fix)
    return Verdict("forgetting_questions", "ok", drop, thr, msg, "")


@RULES.register("robustness")
def robustness(probes, training):
    per = _get(probes, "robustness", "perturbations") or {}
    drops = {k: v["drop"]["finetuned"] for k, v in per.items() if v["drop"]["finetuned"] is not None}
    if not drops:
        return None
    name, worst = max(drops.items(), key=lambda kv: kv[1])
    thr = f"fine-tuned quality drop on a perturbation: warn > {ROBUST_WARN}"
    msg = f"largest quality drop: {worst:+.2f} on {name}"
    if worst > ROBUST_WARN:
        return Verdict("robustness", "warn", worst, thr, msg,
                       "add varied phrasings of each question to the training data (augmentation), then retrain")
    return Verdict("robustness", "ok", worst, thr, msg, "")


@RULES.register("repetition")
def repetition(probes, training):
    rep = _get(probes, "diversity", "repetition_rate", "finetuned")
    if rep is None:
        return None
    thr = f"repeated trigrams in fine-tuned answers: warn > {REPEAT_WARN:.0%}"
    msg = f"{rep:.1%} of trigrams in fine-tuned answers repeat"
    if rep > REPEAT_WARN:
        return Verdict("repetition", "warn", rep, thr, msg, "answers loop: lower train.epochs, or check training answers for repeats")
    return Verdict("repetition", "ok", rep, thr, msg, "")


def read_training(run) -> dict:
    """``train_summary.json`` and the evaluation records of ``metrics.jsonl`` (empty when missing)."""
    from ..rundir import read_json

    out: dict = {"summary": {}, "evals": []}
    if run.train_summary.exists():
        out["summary"] = read_json(run.train_summary)
    out["evals"] = [r for r in run.read_metrics() if r.get("type") == "eval"]
    return out


def verdicts(probes: dict, training: dict) -> list[Verdict]:
    """Every rule whose inputs exist, in registry order."""
    return [v for _, rule in RULES.items() if (v := rule(probes, training)) is not None]
