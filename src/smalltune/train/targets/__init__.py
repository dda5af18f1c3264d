"""Training-target transforms, applied once while the data is prepared (``train/data.py``).

* ``targets.self_distill`` (``self_distill.py``): rewrite answers in the base model's own words
  -- works on :class:`Example` objects, before tokenisation.
* ``targets.stm_threshold`` (``stm.py``): mask tokens the base model finds too surprising -- works
  on tokenised items, after tokenisation.

Both need the *base* model, so they run before the fine-tuning method is applied.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ... import console
from ...data.example import Example
from ...data.tokenize import Tokenized


def transform_examples(recipe, examples: list[Example], model, tokenizer, run_path: Path | None,
                       device) -> tuple[list[Example], dict]:
    """Training examples after the recipe's example-level transforms (self-distillation), and facts to log."""
    tg = recipe.targets
    if not tg.self_distill:
        return examples, {}
    from ...generate import GenerationSettings, generate
    from .self_distill import self_distill

    _need_model(model, "targets.self_distill")
    settings = GenerationSettings(max_new_tokens=tg.self_distill_max_new_tokens, batch_size=recipe.eval.batch_size)
    model.to(device)

    def rewrite(conversations):
        # generation is the slow part of data preparation: show it (on a terminal only, not in logs)
        with console.progress(len(conversations), disable=not sys.stderr.isatty(), desc="self-distilling") as bar:
            return generate(model, tokenizer, conversations, settings, progress=bar)

    return self_distill(examples, rewrite, run_path / "targets" if run_path else None, recipe.data.system_prompt)


def transform_tokens(recipe, items: list[Tokenized], model, tokenizer, device) -> tuple[list[Tokenized], dict]:
    """Tokenised training items after token-level transforms (selective token masking), and facts to log."""
    tau = recipe.targets.stm_threshold
    if tau is None:
        return items, {}
    from .stm import selective_token_mask

    _need_model(model, "targets.stm_threshold")
    model.to(device)
    return selective_token_mask(model, items, tau, device, tokenizer.pad_token_id, recipe.eval.batch_size)


def _need_model(model, key: str) -> None:
    if model is None:  # a programming error in a caller of prepare_data, not a user error
        raise ValueError(f"{key} needs the base model: pass model= to prepare_data")
