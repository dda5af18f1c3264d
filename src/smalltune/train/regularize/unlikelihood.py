"""Unlikelihood on stale answers: when an example replaces an answer the model learned, push the old one down.

Welleck et al. 2019, "Neural Text Generation with Unlikelihood Training" (arXiv 1908.04319): besides raising the
likelihood of the right continuation, lower that of a known wrong one with ``-log(1 - p(wrong token))``. Here the
wrong continuation is an answer the data itself marks as replaced: ``smalltune update`` sets ``stale_answers`` on a
new example whose question an earlier version answered differently (a changed price or opening hour), and a
correction's ``model_answer`` is the answer a reviewer rejected. Any training record may carry ``stale_answers``.

Only where the stale answer *departs* from the new one is it penalised: the two answers are diffed token by token
(difflib) and each changed stretch of the stale answer contributes its first token, under the stale answer's own
prefix ("A cleaning costs $" -> "9" of "$95" when the new answer says "$110"). The shared words are the new answer's
too, so pushing them down would fight the task loss; and the later tokens of a stale value ("5" after "$9") are the
model's next choice only once it has already gone wrong.

Why: on the continual-update benchmark an update that changes facts spends the lineage's forgetting budget within
10-20 steps while the parent's old value still wins most changed questions (benchmarks/README.md, "Continual
updates"); the cross-entropy on the new answer raises it only indirectly against the old. Each micro-batch adds
``regularize.unlikelihood`` times the mean term over ``regularize.unlikelihood_batch`` stale answers, taken in turn.
Measured there ("Unlikelihood on the stale answers"): where the update published a model, the new value won on 85%
and 100% of the changed-fact questions (without: 33% and 11%; retraining from scratch: 70-81%).
"""

from __future__ import annotations

import difflib
import random

import torch

from ...data import Example
from ...data.batching import collate
from ...data.tokenize import IGNORE, tokenize_examples
from ...errors import DataError
from ..loss import batch_logits, keeps_logits, token_losses
from . import REGULARIZERS, Regularizer

STALE_KEY = "stale_answers"  # a record's answers that this example's answer replaces (list of strings)


def stale_answers(ex: Example) -> list[str]:
    """The answers ``ex`` replaces: its ``stale_answers`` and, for a correction, the ``model_answer``."""
    given = ex.meta.get(STALE_KEY) or []
    out = [given] if isinstance(given, str) else given
    if not isinstance(out, list) or not all(isinstance(a, str) for a in out):
        raise DataError(ex.source, ex.line, f"{STALE_KEY} must be a string or a list of strings")
    out = list(out)
    if ex.meta.get("model_answer"):
        out.append(ex.meta["model_answer"])
    return [a for a in dict.fromkeys(out) if a.strip() and a.strip() != ex.target.strip()]


def departures(stale: list[int], new: list[int]) -> list[int]:
    """Indices into ``stale`` where it departs from ``new``: the first token of every changed stretch.

    >>> departures([5, 9, 5, 7], [5, 1, 1, 0, 7])
    [1]
    """
    ops = difflib.SequenceMatcher(None, stale, new, autojunk=False).get_opcodes()
    return [i1 for tag, i1, _, j1, j2 in ops
            if tag in ("replace", "delete") and not (j1 < j2 and stale[i1] == new[j1])]


def stale_items(tokenizer, examples: list[Example], max_length: int, system_prompt: str | None) -> list:
    """One tokenised stale answer per (example, stale answer): labels only at its departures from the new answer."""
    items, seen = [], set()
    for ex in examples:
        for answer in stale_answers(ex):
            key = (ex.prompt_text, answer)
            if key in seen:  # an update trains a changed example several times (update.changed_repeats)
                continue
            seen.add(key)
            old = Example([*ex.prompt_messages, {"role": "assistant", "content": answer}], f"{ex.id}~stale")
            pair, _ = tokenize_examples(tokenizer, [ex, old], max_length, system_prompt)
            if len(pair) != 2:  # an answer lost to max_length
                continue
            new_item, old_item = pair
            at = [i for i, x in enumerate(old_item.labels) if x != IGNORE]  # the stale answer's positions
            new_ids = [x for x in new_item.labels if x != IGNORE]
            marked = {at[i] for i in departures([old_item.labels[i] for i in at], new_ids)}
            if marked:
                old_item.labels = [x if i in marked else IGNORE for i, x in enumerate(old_item.labels)]
                items.append(old_item)
    return items


def unlikelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean ``-log(1 - p)`` of the labelled tokens (``p`` their probability); 0 when none is labelled."""
    mask = labels[:, 1:] != IGNORE
    p = torch.exp(-token_losses(logits, labels))  # cross-entropy = -log p
    terms = -torch.log1p(-p.clamp(max=1 - 1e-6))
    return (terms * mask).sum() / mask.sum().clamp(min=1)


@REGULARIZERS.register("unlikelihood")
class Unlikelihood(Regularizer):
    """``regularize.unlikelihood``: push down the first token where a stale answer departs from the new one."""

    name = "unlikelihood"
    keys = ("regularize.unlikelihood", "regularize.unlikelihood_batch")

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.regularize.unlikelihood > 0

    def setup(self, env) -> dict:
        reg, d = env.recipe.regularize, env.recipe.data
        self.weight, self.batch = reg.unlikelihood, reg.unlikelihood_batch
        self._items = stale_items(env.tokenizer, env.examples, d.max_length, d.system_prompt)
        random.Random(env.recipe.train.seed).shuffle(self._items)  # a fixed order: --resume continues it
        self._pad, self._device, self._keep = env.tokenizer.pad_token_id, env.device, keeps_logits(env.unwrap(env.model))
        self.cursor = 0  # where --resume left it: load_state_dict runs after setup
        self.last = 0.0
        return {"unlikelihood_answers": len(self._items),
                "unlikelihood_tokens": sum(sum(x != IGNORE for x in t.labels) for t in self._items)}

    def state_dict(self) -> dict:
        return {"cursor": self.cursor}

    def penalty(self, model) -> torch.Tensor | None:
        if not self._items:
            return None
        n = min(self.batch, len(self._items))
        take = [self._items[(self.cursor + k) % len(self._items)] for k in range(n)]
        self.cursor = (self.cursor + n) % len(self._items)
        batch = {k: v.to(self._device) for k, v in collate(take, self._pad).items()}
        value = self.weight * unlikelihood(*batch_logits(model, batch, self._keep))
        self.last = float(value.detach())
        return value

    def metrics(self) -> dict:
        return {"unlikelihood": self.last}
