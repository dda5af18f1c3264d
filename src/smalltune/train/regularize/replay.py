"""Replay: mix general data into the training set so the model keeps practising what it knew.

``regularize.replay_ratio`` r is the share of the *mixed* training set that is general data: with
n domain examples, ``round(r * n / (1 - r))`` general items are added and shuffled in with them,
so on average a batch holds that share. The general data is either

* plain Wikipedia text windows from the shipped reference corpus (loss on every token), or
* ``regularize.replay_file``: a general instruction file in any smalltune data format (loss on
  the assistant turns, as for the domain data).

Reference paragraphs that forgetting is *measured* on (the :func:`reference_sample` draws of the
forgetting guard and of evaluation) are never replayed or used for the EWC Fisher, so the
forgetting numbers stay honest.
"""

from __future__ import annotations

import random
from pathlib import Path

from ...data import load_examples, tokenize_examples
from ...data.reference import reference_paragraphs, reference_sample
from ...data.tokenize import Tokenized, tokenize_plain
from ...errors import SmalltuneError

REPLAY_SOURCE = "replay:reference-text"


def general_texts(n: int, seed: int) -> list[str]:
    """``n`` general paragraphs, disjoint from the forgetting-measurement sample.

    >>> len(general_texts(8, seed=0))
    8
    """
    # The samples the forgetting guard and evaluation draw (64 or 24 paragraphs, seed 0 or the run's)
    held_out = {text for k in (24, 64) for s in {0, seed} for text in reference_sample(k, s)}
    pool = [p for p in reference_paragraphs() if p not in held_out]
    random.Random(seed).shuffle(pool)
    return pool[:n]


def replay_count(ratio: float, n_train: int) -> int:
    """General items to add so that they make up ``ratio`` of the mixed set."""
    return round(ratio * n_train / (1 - ratio)) if ratio > 0 else 0


def replay_items(recipe, tokenizer, n_train: int) -> tuple[list[Tokenized], dict]:
    """Tokenised general items for ``n_train`` domain examples, and facts for the run log.

    >>> items, info = replay_items(recipe, tok, len(train))  # recipe.regularize.replay_ratio = 0.2
    """
    reg, d = recipe.regularize, recipe.data
    n = replay_count(reg.replay_ratio, n_train)
    if n == 0:
        return [], {}
    rng = random.Random(recipe.train.seed + 1)
    if reg.replay_file:
        if not Path(reg.replay_file).is_file():
            raise SmalltuneError(f"regularize.replay_file: {reg.replay_file} not found")
        pool, _ = tokenize_examples(tokenizer, load_examples(reg.replay_file), d.max_length, d.system_prompt)
        if not pool:
            raise SmalltuneError(f"regularize.replay_file: {reg.replay_file} has no example with a trainable "
                                 f"assistant token within data.max_length={d.max_length}")
        source = reg.replay_file
    else:
        pool = []
        for text in general_texts(n, recipe.train.seed):  # one window per paragraph: more variety
            pool.extend(tokenize_plain(tokenizer, [text], d.max_length)[:1])
        for k, item in enumerate(pool):
            item.example.source, item.example.id = REPLAY_SOURCE, f"replay-{k}"
        source = "reference text (Wikipedia paragraphs)"
    # Fewer general items than asked: repeat them (a small general file replayed several times).
    chosen = rng.sample(pool, n) if len(pool) >= n else [pool[i % len(pool)] for i in range(n)]
    return chosen, {"replay_examples": n, "replay_source": source, "replay_ratio": reg.replay_ratio}
