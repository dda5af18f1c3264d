"""Replay: mix general data into the training set so the model keeps practising what it knew.

``regularize.replay_ratio`` r is the share of the *mixed* training set that is general data: with
n domain examples, ``round(r * n / (1 - r))`` general items are added and shuffled in with them,
so on average a batch holds that share. The general data is either

* the base model's own answers to general prompts (``replay_source: self``, the default: they
  have low perplexity under the base, so keeping them costs the task little and anchors the
  output distribution; generated once per model and cached, ``data/self_replay.py``),
* plain Wikipedia text windows from the shipped reference corpus (``replay_source: reference``;
  loss on every token), or
* ``regularize.replay_file``: a general instruction file in any smalltune data format (loss on
  the assistant turns, as for the domain data).

General paragraphs come from the training pool of :func:`smalltune.train.splits.reference_roles`,
which never holds a paragraph that forgetting is measured on, whatever the sample sizes.
"""

from __future__ import annotations

import random
from pathlib import Path

from ...data import load_examples, tokenize_examples
from ...data.tokenize import Tokenized, tokenize_plain
from ...errors import SmalltuneError
from ..targets import DATA_PLUGINS
from . import Regularizer

REPLAY_SOURCE = "replay:reference-text"


def replay_count(ratio: float, n_train: int) -> int:
    """General items to add so that they make up ``ratio`` of the mixed set."""
    return round(ratio * n_train / (1 - ratio)) if ratio > 0 else 0


# Generating is the cost of this source: ~6 s per 96-token answer for the 135M model on 2 CPU cores, paid once
# per model (cached). So at most this many distinct answers are generated; the replay share is reached by
# repeating them, as for a small replay_file.
SELF_REPLAY_MAX = 32
SELF_REPLAY_TOKENS = 96


def self_answers(env, n: int) -> list[Tokenized]:
    """Tokenised general prompts with the base model's own answers (cached per model); [] without a model."""
    import sys

    from ...data.self_replay import self_replay_examples

    if env.model is None:
        return []
    d = env.recipe.data
    env.model.to(env.device)
    examples = self_replay_examples(env.model, env.tokenizer, min(n, SELF_REPLAY_MAX), seed=env.recipe.train.seed,
                                    max_new_tokens=SELF_REPLAY_TOKENS, batch_size=env.batch_size,
                                    progress=sys.stderr.isatty())
    items, _ = tokenize_examples(env.tokenizer, examples, d.max_length, d.system_prompt)
    return items


@DATA_PLUGINS.register("replay")
class Replay(Regularizer):
    """``regularize.replay_ratio``: general items mixed into the training set."""

    name = "replay"
    keys = ("regularize.replay_ratio", "regularize.replay_source", "regularize.replay_file")

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.regularize.replay_ratio > 0

    def extra_items(self, n_train: int, env) -> tuple[list[Tokenized], dict]:
        recipe = env.recipe
        reg, d = recipe.regularize, recipe.data
        n = replay_count(reg.replay_ratio, n_train)
        if n == 0:
            return [], {}
        rng = random.Random(recipe.train.seed + 1)
        if reg.replay_file:
            if not Path(reg.replay_file).is_file():
                raise SmalltuneError(f"regularize.replay_file: {reg.replay_file} not found")
            pool, _ = tokenize_examples(env.tokenizer, load_examples(reg.replay_file), d.max_length, d.system_prompt)
            if not pool:
                raise SmalltuneError(f"regularize.replay_file: {reg.replay_file} has no example with a trainable "
                                     f"assistant token within data.max_length={d.max_length}")
            source = reg.replay_file
        elif reg.replay_source == "self" and (pool := self_answers(env, n)):
            source = "the base model's own answers to general prompts (data/general_prompts.txt)"
        else:
            pool = []
            for text in env.reference.take_train("replay", n):  # one window per paragraph: more variety
                pool.extend(tokenize_plain(env.tokenizer, [text], d.max_length)[:1])
            for k, item in enumerate(pool):
                item.example.source, item.example.id = REPLAY_SOURCE, f"replay-{k}"
            source = "reference text (Wikipedia paragraphs, training pool)"
            if reg.replay_source == "self" and env.model is not None:
                source += "; the base model gave no usable answer to the general prompts"
        # Fewer general items than asked: repeat them (a small general file replayed several times).
        chosen = rng.sample(pool, n) if len(pool) >= n else [pool[i % len(pool)] for i in range(n)]
        return chosen, {"replay_examples": n, "replay_source": source, "replay_ratio": reg.replay_ratio}
