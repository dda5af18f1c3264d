"""Data plugins: change what the model is trained on, once, while the data is prepared (``train/data.py``).

* ``targets.self_distill`` (``self_distill.py``): rewrite answers in the base model's own words
  -- ``transform_examples``, before tokenisation.
* ``targets.stm_threshold`` (``stm.py``): mask tokens the base model finds too surprising --
  ``transform_tokens``, after tokenisation.
* ``regularize.replay_ratio`` (``regularize/replay.py``): general items mixed in -- ``extra_items``.

They share the one plugin protocol (``train/plugins.py``); the first two need the *base* model,
so data is prepared before the fine-tuning method is applied.
"""

from __future__ import annotations

from ...registry import Registry

DATA_PLUGINS: Registry = Registry("data plugin")


def need_model(model, key: str) -> None:
    if model is None:  # a programming error in a caller of prepare_data, not a user error
        raise ValueError(f"{key} needs the base model: pass model= to prepare_data")


# Plugins register themselves on import; this is the one place that imports them.
from . import self_distill, stm  # noqa: E402,F401
from ..regularize import replay  # noqa: E402,F401
