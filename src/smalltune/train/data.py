"""From the recipe's data section to tokenised train and validation sets.

Order: read -> split -> target transforms on examples (self-distillation) -> tokenise -> target
transforms on tokens (selective token masking) -> replay mixing. The target transforms score or
rewrite with the *base* model, so ``prepare_data`` runs before the method is applied; validation
keeps the original references, and replayed general data is not masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data import Tokenized, TokenizeStats, carve_validation, load_examples, tokenize_examples
from ..errors import SmalltuneError
from .regularize.replay import replay_items
from .targets import transform_examples, transform_tokens


@dataclass
class PreparedData:
    train: list[Tokenized]
    validation: list[Tokenized]
    train_stats: TokenizeStats
    validation_stats: TokenizeStats
    validation_source: str  # the file, or "carved 15% of train (stratified by category)"
    transforms: dict = field(default_factory=dict)  # what target transforms and replay did (counts, shares)

    def counts(self) -> dict:
        return {"train_examples": len(self.train), "validation_examples": len(self.validation),
                "train_tokens": self.train_stats.tokens, "train_trainable_tokens": self.train_stats.trainable_tokens,
                **self.transforms}


def prepare_data(recipe, tokenizer, model=None, run_path: Path | None = None, device="cpu") -> PreparedData:
    """Tokenised train / validation sets; ``model`` (the base model) is needed only by target transforms.

    >>> data = prepare_data(recipe, tok, model, run.path)
    >>> data.counts()["train_examples"]
    """
    d = recipe.data
    examples = load_examples(d.train)
    if d.validation:
        train_ex, val_ex = examples, load_examples(d.validation)
        source = d.validation
    else:
        train_ex, val_ex = carve_validation(examples, d.validation_fraction, recipe.train.seed)
        share = len(val_ex) / len(examples)
        stratified = " (stratified by category)" if any(e.category for e in examples) else ""
        source = f"carved {len(val_ex)} of {len(examples)} training examples ({share:.0%}){stratified}"
    transforms: dict = {}
    train_ex, info = transform_examples(recipe, train_ex, model, tokenizer, run_path, device)
    transforms.update(info)
    train, train_stats = tokenize_examples(tokenizer, train_ex, d.max_length, d.system_prompt)
    val, val_stats = tokenize_examples(tokenizer, val_ex, d.max_length, d.system_prompt)
    if not train:
        raise SmalltuneError(f"{d.train}: no example has a trainable assistant token within data.max_length={d.max_length}")
    if not val:
        raise SmalltuneError("validation set is empty: give data.validation or more training examples")
    train, info = transform_tokens(recipe, train, model, tokenizer, device)
    transforms.update(info)
    if not train:
        raise SmalltuneError(f"targets.stm_threshold={recipe.targets.stm_threshold} masks every training token; raise it")
    replay, info = replay_items(recipe, tokenizer, len(train))
    transforms.update(info)
    return PreparedData(train + replay, val, train_stats, val_stats, source, transforms)
