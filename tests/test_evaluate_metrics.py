"""Evaluation metrics, perturbations and verdicts on toy inputs with hand-computed answers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from smalltune.evaluate import metrics as M
from smalltune.evaluate.perturb import PERTURBATIONS, perturb
from smalltune.evaluate.results import metric
from smalltune.evaluate.verdicts import TrainingLog, verdicts
from smalltune.schema import EvalRecord, TrainSummary


def test_exact_match_normalises_case_punctuation_and_space():
    assert M.exact_match("Yes,  we do!", "yes we do") == 1.0
    assert M.exact_match("Yes we do not", "yes we do") == 0.0


def test_rouge_l_by_hand():
    # LCS("the cat sat", "the cat sat down") = 3; P = 3/3, R = 3/4, F = 2*1*0.75/1.75 = 6/7
    assert M.rouge_l("the cat sat", "the cat sat down") == pytest.approx(6 / 7)
    # LCS("a b c d", "a c b d") = 3 (a b d or a c d): P = R = 3/4
    assert M.rouge_l("a b c d", "a c b d") == pytest.approx(0.75)
    assert M.rouge_l("x y", "a b") == 0.0
    assert M.rouge_l("", "") == 1.0 and M.rouge_l("", "a") == 0.0


def test_key_fact_recall():
    assert M.key_fact_recall("We open at 9 am, closed  Sundays", ["9 am", "sunday", "parking"]) == pytest.approx(2 / 3)
    assert M.key_fact_recall("anything", []) is None


def test_edit_similarity_by_hand():
    assert M.edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert M.edit_similarity("same  text", "same text") == 1.0
    assert M.edit_similarity("", "") == 1.0


def test_longest_common_run_and_verbatim_rule():
    assert M.longest_common_run([1, 2, 3, 9, 4, 5], [0, 1, 2, 3, 4, 5]) == 3
    assert M.longest_common_run([], [1]) == 0
    target = list(range(100))
    assert M.is_verbatim([7, 8] + list(range(10, 42)) + [0], target)  # 32 consecutive target tokens
    assert not M.is_verbatim(list(range(10, 41)), target)  # 31 are not enough
    short = [5, 6, 7]
    assert M.is_verbatim([1, 5, 6, 7, 2], short)  # a short target must be reproduced whole
    assert not M.is_verbatim([5, 6], short)


def test_distinct_n_and_repetition_by_hand():
    assert M.distinct_n(["a b a b"], 1) == 0.5  # {a, b} of 4 unigrams
    assert M.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # ab ba ab: 2 unique of 3
    assert M.distinct_n(["a b", "c d"], 2) == 1.0
    assert M.repetition_rate("a b c a b c") == 0.25  # abc bca cab abc: one repeat of four
    assert M.repetition_rate("one two three four") == 0.0
    assert M.repetition_rate("hi") == 0.0


def test_contains_answer_rule():
    assert M.contains_answer("It was Nixon.", "Richard Nixon")
    assert M.contains_answer("Paris, of course", "Paris")
    assert not M.contains_answer("in 1963", "Sputnik 1")  # whole words only: '1' is not in '1963'
    assert M.contains_answer("the USSR and the United States", "The Soviet Union and the United States.")
    assert not M.contains_answer("the United Nations", "The Soviet Union and the United States.")


def test_bootstrap_ci_brackets_the_mean_and_is_deterministic():
    values = [0, 1] * 20
    lo, hi = M.bootstrap_ci(values, seed=3)
    assert lo < 0.5 < hi and hi - lo < 0.5
    assert M.bootstrap_ci(values, seed=3) == [lo, hi]
    assert M.bootstrap_ci([1.0, 1.0, 1.0]) == [1.0, 1.0]
    assert M.bootstrap_ci([2.0]) == [2.0, 2.0]


def test_metric_shape_pairs_items_and_bootstraps_the_delta():
    m = metric([0, 0, 0, 0, None], [1, 1, 1, 0, 1])
    assert (m["base"], m["finetuned"], m["delta"], m["n"]) == (0.0, 0.75, 0.75, 4)
    assert 0 <= m["ci"][0] <= 0.75 <= m["ci"][1] <= 1
    weighted = metric([(2.0, 1), (0.0, 3)], [(1.0, 1), (1.0, 3)], lambda r: r[:, 0].sum() / r[:, 1].sum())
    assert weighted["base"] == pytest.approx(0.5) and weighted["finetuned"] == pytest.approx(0.5)
    assert metric([None], [1])["n"] == 0


def test_perturbations_are_deterministic_and_change_the_text():
    text = "Hello, what are your opening hours on Saturday?"
    for name in ("typos", "casing", "punctuation", "filler", "reorder"):
        a = PERTURBATIONS.get(name)(text, random.Random(1), None)
        b = PERTURBATIONS.get(name)(text, random.Random(1), None)
        assert a == b and a and a[0] != text, name
    assert PERTURBATIONS.get("reorder")("When do you open?", random.Random(0), None) == []
    assert PERTURBATIONS.get("casing")("Do You Open", random.Random(0), None) == ["do you open"]
    conv = [{"role": "system", "content": "S"}, {"role": "user", "content": "Where are you, exactly?"}]
    (variant,) = perturb(conv, "punctuation", random.Random(0))
    assert variant[0] == conv[0] and variant[1]["content"] == "Where are you exactly"


def _training(best: dict, evals: list[dict]) -> TrainingLog:
    """What the verdicts read of training, as train_summary.json and metrics.jsonl would hold it."""
    return TrainingLog(summary=TrainSummary.from_dict({"best_metrics": best}),
                       evals=[EvalRecord.from_dict({"type": "eval", **r}) for r in evals])


def test_verdicts_follow_documented_thresholds():
    training = _training({"eval_ppl": 6.0, "eval_token_acc": 0.9},
                         [{"step": 1, "epoch": 1.0, "eval_loss": 1.0, "train_loss": 1.0},
                          {"step": 2, "epoch": 2.0, "eval_loss": 0.8, "train_loss": 0.6},
                          {"step": 3, "epoch": 3.0, "eval_loss": 1.1, "train_loss": 0.3}])
    probes = {"forgetting": {"reference_ppl_relative_change": {"value": 0.08}},
              "memorization": {"verbatim_rate_long": {"base": 0.0, "finetuned": 0.9, "delta": 0.9}}}
    got = {v.name: v for v in verdicts(probes, training)}
    assert got["validation_perplexity"].status == "problem" and got["validation_perplexity"].fix
    assert got["validation_accuracy"].status == "ok"
    assert got["overfitting"].status == "warn"  # gap 0.8 at the end vs 0.2 at the best step, loss rose
    assert got["convergence"].status == "warn"  # +0.3 per epoch
    assert got["forgetting_perplexity"].status == "warn"
    assert got["memorization"].status == "problem"
    healthy = _training({"eval_ppl": 2.5, "eval_token_acc": 0.7}, [])
    got = {v.name: v for v in verdicts({}, healthy)}
    assert got["validation_perplexity"].status == "ok" and got["validation_accuracy"].status == "warn"
    assert math.isclose(got["validation_perplexity"].value, 2.5)


def test_recentred_bootstrap_brackets_a_corpus_level_statistic():
    texts = [f"answer number {i} is here" for i in range(12)]
    stat = lambda rows: M.distinct_n([texts[int(i)] for i in rows[:, 0]], 2)  # noqa: E731
    rows = [[i] for i in range(12)]
    plain = M.bootstrap_ci(rows, stat, seed=0)
    fixed = M.bootstrap_ci(rows, stat, seed=0, recenter=True)
    point = stat(np.array(rows))
    assert plain[1] < point  # resamples repeat answers: every resampled distinct-2 is lower
    assert fixed[0] <= point <= fixed[1]


def test_distinct_of_pre_split_texts_is_distinct_n_with_repeats():
    """The diversity probe's bootstrap splits each answer once and resamples the splits (repeats included)."""
    texts = ["We open at 9.30 on Mondays.", "we OPEN at 9.30", "", "Call us, call us, call us."]
    for n in (1, 2):
        grams = [M.ngrams(M.words(t), n) for t in texts]
        for pick in ([0, 1, 2, 3], [3, 3, 0], [2], []):
            assert M.distinct_of([grams[i] for i in pick]) == M.distinct_n([texts[i] for i in pick], n)
