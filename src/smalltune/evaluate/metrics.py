"""Pure text metrics: strings (or token lists) in, numbers out. No model, no I/O.

ROUGE-L and the longest common token run are computed with rapidfuzz (LCS) and the standard
library's ``difflib`` (longest matching block) rather than hand-written dynamic programming; the
``rouge-score`` package would add a dependency (and nltk) for one formula. The bootstrap is a
few lines of numpy because scipy's BCa interval returns NaN on the constant 0/1 samples that tiny
evaluation sets produce all the time.

>>> rouge_l("the cat sat", "the cat sat down")
0.857...
"""

from __future__ import annotations

import difflib
import math
import re
import string
from collections import Counter
from typing import Callable, Sequence

import numpy as np
from rapidfuzz.distance import LCSseq, Levenshtein

_WORD = re.compile(r"\w+(?:[.,']\w+)*", re.UNICODE)
STOPWORDS = frozenset(
    "a an the of and or in on at to for from by with is are was were be been it its this that what which who "
    "whom whose as into than then there their they he she his her our your you we i".split()
)


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed (SQuAD-style answer normalisation)."""
    text = text.lower().translate(str.maketrans({c: " " for c in string.punctuation}))
    return " ".join(text.split())


def words(text: str) -> list[str]:
    """Lower-cased word tokens (numbers like 9.30 and $80 keep their digits together)."""
    return _WORD.findall(text.lower())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised texts are equal.

    >>> exact_match("Yes, we do!", "yes we do")
    1.0
    """
    return float(normalize(prediction) == normalize(reference))


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over words (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries").

    >>> round(rouge_l("the cat sat", "the cat sat down"), 3)   # LCS 3, P 3/3, R 3/4
    0.857
    """
    p, r = words(prediction), words(reference)
    if not p or not r:
        return float(p == r)
    lcs = LCSseq.similarity(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def key_fact_recall(prediction: str, facts: Sequence[str]) -> float | None:
    """Share of ``facts`` found in the prediction (case-insensitive substring); None without facts.

    >>> key_fact_recall("We open at 9 am, closed Sundays", ["9 am", "Sunday", "parking"])
    0.666...
    """
    if not facts:
        return None
    low = " ".join(prediction.lower().split())
    return sum(" ".join(f.lower().split()) in low for f in facts) / len(facts)


def edit_similarity(a: str, b: str) -> float:
    """Normalised Levenshtein similarity of the whitespace-collapsed texts: 1 - distance / max length.

    >>> edit_similarity("kitten", "sitting")   # distance 3, longer length 7
    0.571...
    """
    a, b = " ".join(a.split()), " ".join(b.split())
    if not a and not b:
        return 1.0
    return Levenshtein.normalized_similarity(a, b)


def longest_common_run(output: Sequence, target: Sequence) -> int:
    """Length of the longest run of consecutive items (tokens) shared by ``output`` and ``target``.

    >>> longest_common_run([1, 2, 3, 9, 4, 5], [0, 1, 2, 3, 4, 5])
    3
    """
    if not output or not target:
        return 0
    m = difflib.SequenceMatcher(None, list(output), list(target), autojunk=False)
    return m.find_longest_match(0, len(output), 0, len(target)).size


def is_verbatim(output: Sequence, target: Sequence, min_run: int = 32) -> bool:
    """True when ``output`` reproduces ``min_run`` consecutive target tokens, or the whole target if shorter."""
    if not target:
        return False
    return longest_common_run(output, target) >= min(min_run, len(target))


def ngrams(tokens: Sequence[str], n: int) -> list[tuple]:
    return [tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams across ``texts`` (Li et al. 2016, arXiv 1510.03055).

    >>> distinct_n(["a b a b"], 1)   # 2 unique of 4
    0.5
    """
    return distinct_of([ngrams(words(t), n) for t in texts])


def distinct_of(gram_lists: Sequence[Sequence[tuple]]) -> float:
    """:func:`distinct_n` of texts already split into n-grams: a bootstrap resamples the same texts 1,000 times,
    so the diversity probe splits each once (2.5 s of an evaluation before, most of it splitting)."""
    total = sum(len(g) for g in gram_lists)
    return len(set().union(*gram_lists)) / total if total else 0.0


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of a text's word n-grams that repeat an earlier n-gram of the same text (loops score high).

    >>> repetition_rate("a b c a b c")   # trigrams abc bca cab abc: the last repeats
    0.25
    """
    grams = ngrams(words(text), n)
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)


def content_words(text: str) -> list[str]:
    """Words of ``text`` without stop words: the key words a short factual answer must contain."""
    return [w for w in words(text) if w not in STOPWORDS]


def contains_answer(prediction: str, reference: str) -> bool:
    """Lenient short-answer match: at least half (rounded up) of the reference's content words appear.

    'Richard Nixon' is matched by '... it was Nixon'; 'The Soviet Union and the United States' needs
    two of its four content words. Whole-word match, so '1' does not match '1963'.

    >>> contains_answer("It was Nixon.", "Richard Nixon")
    True
    """
    keys = content_words(reference) or words(reference)
    if not keys:
        return False
    have = set(words(prediction))
    return sum(k in have for k in keys) >= math.ceil(len(keys) / 2)


def bootstrap_ci(values: Sequence[float] | np.ndarray, statistic: Callable | None = None, n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0, recenter: bool = False) -> list[float]:
    """Percentile bootstrap confidence interval of ``statistic`` (default: mean) over resampled rows.

    ``values`` may be 2-D (rows = items, columns = paired quantities) so a statistic can combine
    them, e.g. a token-weighted perplexity ``lambda rows: exp(rows[:, 0].sum() / rows[:, 1].sum())``.
    Returns [lo, hi]; [x, x] for a single item. ``recenter`` shifts the interval by the bootstrap
    bias (statistic on all rows minus the mean of the resampled statistics): corpus-level statistics
    such as distinct-n are biased low on resamples, which repeat rows.

    >>> bootstrap_ci([0, 0, 1, 1])   # mean 0.5
    [0.0, 1.0]
    """
    arr = np.asarray(values, dtype=float)
    if len(arr) == 0:
        return [float("nan"), float("nan")]
    stat = statistic or (lambda a: float(np.mean(a)))
    if len(arr) == 1:
        v = float(stat(arr))
        return [v, v]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(arr), size=(n_boot, len(arr)))
    stats = np.array([stat(arr[i]) for i in idx], dtype=float)
    lo, hi = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
    if recenter:
        shift = float(stat(arr)) - float(np.nanmean(stats))
        lo, hi = lo + shift, hi + shift
    return [float(lo), float(hi)]


def mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None]
    return float(sum(vals) / len(vals)) if vals else float("nan")
