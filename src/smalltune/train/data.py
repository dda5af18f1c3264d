"""From the recipe's data section to tokenised train and validation sets."""

from __future__ import annotations

from dataclasses import dataclass

from ..data import Tokenized, TokenizeStats, carve_validation, load_examples, tokenize_examples
from ..errors import SmalltuneError


@dataclass
class PreparedData:
    train: list[Tokenized]
    validation: list[Tokenized]
    train_stats: TokenizeStats
    validation_stats: TokenizeStats
    validation_source: str  # the file, or "carved 15% of train (stratified by category)"

    def counts(self) -> dict:
        return {"train_examples": len(self.train), "validation_examples": len(self.validation),
                "train_tokens": self.train_stats.tokens, "train_trainable_tokens": self.train_stats.trainable_tokens}


def prepare_data(recipe, tokenizer) -> PreparedData:
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
    train, train_stats = tokenize_examples(tokenizer, train_ex, d.max_length, d.system_prompt)
    val, val_stats = tokenize_examples(tokenizer, val_ex, d.max_length, d.system_prompt)
    if not train:
        raise SmalltuneError(f"{d.train}: no example has a trainable assistant token within data.max_length={d.max_length}")
    if not val:
        raise SmalltuneError("validation set is empty: give data.validation or more training examples")
    return PreparedData(train, val, train_stats, val_stats, source)
