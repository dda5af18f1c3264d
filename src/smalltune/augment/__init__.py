"""Growing a small dataset honestly: paraphrase and back-translation variants, synthetic examples from documents.

``augment(data, method)`` writes new variants of each training prompt (answers stay the user's);
``synth(docs)`` writes question/answer pairs grounded in passages of the user's documents. Both
generate in batches, pass every candidate through the filters in ``filters.py`` (copies,
near-duplicates, lost meaning, leakage into validation/test, ungrounded answers), and save the
acceptance counts per reason next to the output. Importing this package loads no model.

>>> from smalltune.augment import augment
>>> result = augment("examples/dental/train.jsonl", "paraphrase", validation="examples/dental/validation.jsonl")
>>> result.summary["accepted"], result.summary["rejected"]
"""

from __future__ import annotations


# The functions share their modules' names (like ``smalltune.audit``): importing binds the function.
from .runner import augment  # noqa: E402
from .synth import synth  # noqa: E402

__all__ = ["augment", "synth"]
