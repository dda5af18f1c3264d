"""From in-memory splits to tokenised train and validation sets.

Order: splits (read once, recorded) -> data plugins on examples (self-distillation) -> tokenise ->
data plugins on tokens (selective token masking) -> extra items (replay). The target plugins score
or rewrite with the *base* model, so ``prepare_data`` runs before the method is applied;
validation keeps the original references, and replayed general data is not masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data import Tokenized, TokenizeStats, tokenize_examples
from ..errors import SmalltuneError
from .plugins import PluginEnv, build_plugins
from .splits import ReferenceRoles, Splits, load_splits, reference_roles


@dataclass
class PreparedData:
    train: list[Tokenized]
    validation: list[Tokenized]
    train_stats: TokenizeStats
    validation_stats: TokenizeStats
    validation_source: str  # the file, or "carved 15% of train (stratified by category)"
    transforms: dict = field(default_factory=dict)  # what data plugins did (counts, shares)
    splits: Splits | None = None
    reference: ReferenceRoles | None = None  # which general paragraphs serve which purpose

    def counts(self) -> dict:
        return {"train_examples": len(self.train), "validation_examples": len(self.validation),
                "train_tokens": self.train_stats.tokens, "train_trainable_tokens": self.train_stats.trainable_tokens,
                **self.transforms}


def prepare_data(recipe, tokenizer, model=None, run_path: Path | None = None, device="cpu",
                 splits: Splits | None = None, reference: ReferenceRoles | None = None) -> PreparedData:
    """Tokenised train / validation sets; ``model`` (the base model) is needed only by target plugins.

    ``splits`` defaults to the recipe's files; tuning and cross-validation pass their own.

    >>> data = prepare_data(recipe, tok, model, run.path)
    >>> data.counts()["train_examples"]
    """
    from .targets import DATA_PLUGINS

    d = recipe.data
    splits = splits or load_splits(recipe)
    reference = reference or reference_roles(recipe)
    plugins = build_plugins(recipe, DATA_PLUGINS)
    env = PluginEnv(model, tokenizer, device, recipe.eval.batch_size, recipe=recipe, run_path=run_path,
                    reference=reference)
    train_ex, transforms = plugins.transform_examples(splits.train, env)
    train, train_stats = tokenize_examples(tokenizer, train_ex, d.max_length, d.system_prompt)
    val, val_stats = tokenize_examples(tokenizer, splits.validation, d.max_length, d.system_prompt)
    if not train:
        raise SmalltuneError(f"{d.train}: no example has a trainable assistant token within data.max_length={d.max_length}")
    if not val:
        raise SmalltuneError("validation set is empty: give data.validation or more training examples")
    train, info = plugins.transform_tokens(train, env)
    transforms.update(info)
    if not train:
        raise SmalltuneError(f"targets.stm_threshold={recipe.targets.stm_threshold} masks every training token; raise it")
    extra, info = plugins.extra_items(len(train), env)
    transforms.update(info)
    return PreparedData(train + extra, val, train_stats, val_stats, splits.validation_source, transforms,
                        splits, reference)
