"""Verdicts: the evaluation and the training log read against documented thresholds, each with
the fix to try. docs/evaluation.md justifies every threshold; change them there and here together.

A verdict rule takes (probes, training) and returns a :class:`Verdict` or None when its inputs are
missing; ``training`` is a :class:`TrainingLog`: ``train_summary.json`` and the evaluation records of
``metrics.jsonl``, read through :mod:`smalltune.schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..registry import Registry
from ..schema import EvalRecord, TrainSummary, Verdict, estimate_at, metric_at, probe_value

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


@dataclass
class TrainingLog:
    """What the verdicts read of training: the summary (None when training did not finish) and its evaluations."""

    summary: TrainSummary | None = None
    evals: list[EvalRecord] = field(default_factory=list)

    @property
    def best(self) -> EvalRecord | None:
        return self.summary.best if self.summary is not None else None


@RULES.register("validation_perplexity")
def validation_perplexity(probes, training: TrainingLog):
    ppl = training.best.eval_ppl if training.best else None
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
def validation_accuracy(probes, training: TrainingLog):
    acc = training.best.eval_token_acc if training.best else None
    if acc is None:
        return None
    thr = f"good > {ACC_GOOD:.0%}, investigate < {ACC_INVESTIGATE:.0%}"
    if acc < ACC_INVESTIGATE:
        return Verdict("validation_accuracy", "warn", acc, thr, f"validation token accuracy {acc:.1%} is low",
                       "look at the worst validation answers; more epochs or cleaner, more consistent answers")
    word = "good" if acc > ACC_GOOD else "acceptable"
    return Verdict("validation_accuracy", "ok", acc, thr, f"validation token accuracy {acc:.1%} is {word}", "")


def _evals(training: TrainingLog) -> list[EvalRecord]:
    return [r for r in training.evals if r.eval_loss is not None]


@RULES.register("convergence")
def convergence(probes, training: TrainingLog):
    evals = [r for r in _evals(training) if r.epoch is not None]
    if len(evals) < 2:
        return None
    last = evals[-1]
    earlier = [r for r in evals[:-1] if last.epoch - r.epoch >= 1.0] or evals[:1]
    ref = earlier[-1]
    span = max(last.epoch - ref.epoch, 1e-9)
    change = (last.eval_loss - ref.eval_loss) / span
    thr = f"|validation loss change| < {CONVERGED_PER_EPOCH} per epoch"
    if abs(change) < CONVERGED_PER_EPOCH:
        return Verdict("convergence", "ok", change, thr, f"validation loss changed {change:+.3f} per epoch at the end: converged", "")
    if change < 0:
        return Verdict("convergence", "warn", change, thr, f"validation loss still falling ({change:+.3f} per epoch)",
                       "train longer: raise train.epochs (early stopping will stop it in time)")
    return Verdict("convergence", "warn", change, thr, f"validation loss rising at the end ({change:+.3f} per epoch)",
                   "the best checkpoint was kept; lower train.epochs or early_stopping.patience to save time")


@RULES.register("overfitting")
def overfitting(probes, training: TrainingLog):
    evals = [r for r in _evals(training) if r.train_loss is not None]
    if len(evals) < 2:
        return None
    gaps = [r.eval_loss - r.train_loss for r in evals]
    best = min(range(len(evals)), key=lambda i: evals[i].eval_loss)
    growth = gaps[-1] - gaps[best]
    thr = f"train/validation gap growing by > {GAP_GROWTH} after the best evaluation"
    if growth > GAP_GROWTH and evals[-1].eval_loss > evals[best].eval_loss:
        return Verdict("overfitting", "warn", growth, thr,
                       f"train/validation gap grew by {growth:.3f} after step {evals[best].step} while validation loss rose",
                       "the best checkpoint was kept; for the next run lower train.epochs or train.lr, or raise method.dropout")
    return Verdict("overfitting", "ok", growth, thr, "no growing train/validation gap", "")


@RULES.register("memorization")
def memorization(probes, training):
    m = metric_at(probes, "memorization", "verbatim_rate_long")
    if m is None or m.delta is None:
        m = metric_at(probes, "memorization", "memorized_rate")
    if m is None or m.delta is None:
        return None
    d = m.delta
    thr = f"rise in verbatim rate on long training answers: warn > {MEMO_WARN:.0%}, problem > {MEMO_PROBLEM:.0%}"
    msg = f"fine-tuned model reproduces {m.finetuned:.0%} of long training answers verbatim (base {m.base:.0%})"
    if d > MEMO_PROBLEM:
        return Verdict("memorization", "problem", d, thr, msg, "lower train.epochs or train.lr, raise method.dropout; "
                       "paraphrase answers (augmentation) so no single wording is drilled in")
    if d > MEMO_WARN:
        return Verdict("memorization", "warn", d, thr, msg, "fewer epochs or more varied answers; check the worst examples")
    return Verdict("memorization", "ok", d, thr, msg, "")


@RULES.register("forgetting_perplexity")
def forgetting_perplexity(probes, training):
    change = estimate_at(probes, "forgetting", "reference_ppl_relative_change")
    rel = change.value if change else None
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
    m = metric_at(probes, "forgetting", "general_accuracy")
    if m is None or m.delta is None:
        return None
    drop = -m.delta
    sure = m.ci_high is not None and m.ci_high < 0  # the whole CI of the change is below zero
    thr = f"general-question accuracy drop: warn > {QA_WARN:.0%}, problem > {QA_PROBLEM:.0%} with the CI below 0"
    msg = f"general-question accuracy {m.base:.0%} -> {m.finetuned:.0%} (n={m.n})"
    fix = "lower train.lr, fewer epochs, or replay general data; see the forgetting examples"
    if drop > QA_PROBLEM and sure:
        return Verdict("forgetting_questions", "problem", drop, thr, msg, fix)
    if drop > QA_WARN:
        return Verdict("forgetting_questions", "warn", drop, thr, msg + ("" if sure else " (CI includes no change)"), fix)
    return Verdict("forgetting_questions", "ok", drop, thr, msg, "")


@RULES.register("robustness")
def robustness(probes, training):
    per = {k: metric_at(probes, "robustness", "perturbations", k, "drop")
           for k in (probe_value(probes, "robustness", "perturbations") or {})}
    drops = {k: m.finetuned for k, m in per.items() if m is not None and m.finetuned is not None}
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
    m = metric_at(probes, "diversity", "repetition_rate")
    rep = m.finetuned if m else None
    if rep is None:
        return None
    thr = f"repeated trigrams in fine-tuned answers: warn > {REPEAT_WARN:.0%}"
    msg = f"{rep:.1%} of trigrams in fine-tuned answers repeat"
    if rep > REPEAT_WARN:
        return Verdict("repetition", "warn", rep, thr, msg, "answers loop: lower train.epochs, or check training answers for repeats")
    return Verdict("repetition", "ok", rep, thr, msg, "")


def read_training(run) -> TrainingLog:
    """``train_summary.json`` and the evaluation records of ``metrics.jsonl`` (empty when missing)."""
    from ..schema import read_metrics, read_train_summary

    summary = read_train_summary(run.train_summary) if run.train_summary.exists() else None
    return TrainingLog(summary=summary, evals=read_metrics(run.metrics).evals)


def verdicts(probes: dict, training: TrainingLog) -> list[Verdict]:
    """Every rule whose inputs exist, in registry order."""
    return [v for _, rule in RULES.items() if (v := rule(probes, training)) is not None]
