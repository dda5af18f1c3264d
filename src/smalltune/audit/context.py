"""What every check receives: the loaded splits, the settings, and lazily computed shared work.

Work two checks need (tokenising, the similarity index, normalised prompts) is computed once here,
on first use, so the order of the checks does not matter and an unused one costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .loading import SplitData
from .text import normalise

SPLITS = ("train", "validation", "test")
MAX_EXAMPLES = 20  # occurrences listed per finding (its count says how many there are)


@dataclass
class AuditContext:
    splits: dict[str, SplitData]  # only the splits that were given, in SPLITS order
    model: str | None = None
    max_length: int = 512
    threshold: float = 0.8
    system_prompt: str | None = None
    progress: bool = True
    stats: dict[str, Any] = field(default_factory=dict)  # checks add their statistics here

    @cached_property
    def tokenizer(self):
        """The model's tokenizer, or None without a model (checks then approximate)."""
        if not self.model:
            return None
        from ..models import load_tokenizer

        return load_tokenizer(self.model)

    @cached_property
    def tokenized(self) -> dict[str, list]:
        """split -> one ``Tokenized`` per example (truncated to max_length; none dropped)."""
        from ..data.tokenize import tokenize_example

        tok = self.tokenizer
        return {name: [tokenize_example(tok, ex, self.max_length, self.system_prompt) for ex in s.examples]
                for name, s in self.splits.items()}

    @cached_property
    def normalised(self) -> dict[str, list[tuple[tuple[str, str], ...]]]:
        """split -> per example, its (role, normalised content) turns: computed once, used by several checks."""
        return {name: [tuple((m["role"], normalise(m["content"])) for m in ex.messages) for ex in s.examples]
                for name, s in self.splits.items()}

    @cached_property
    def prompts(self) -> dict[str, list[str]]:
        """split -> normalised user turns before the answer (a shared system prompt would make all alike)."""
        def prompt(turns):
            last = max(i for i, (role, _) in enumerate(turns) if role == "assistant")
            return " ".join(text for role, text in turns[:last] if role == "user")

        return {name: [prompt(t) for t in turns] for name, turns in self.normalised.items()}

    @cached_property
    def targets(self) -> dict[str, list[str]]:
        """split -> normalised last assistant turn."""
        return {name: [next(text for role, text in reversed(t) if role == "assistant") for t in turns]
                for name, turns in self.normalised.items()}

    @cached_property
    def similarity(self):
        """Near-duplicate index over prompts (leakage: the same question in two splits)."""
        from .similar import SimilarityIndex

        return SimilarityIndex.build(self.prompts, self.threshold)

    @cached_property
    def example_similarity(self):
        """Near-duplicate index over whole conversations (duplicates: the same example twice in a split)."""
        from .similar import SimilarityIndex

        texts = {name: [" ".join(text for _, text in t) for t in turns] for name, turns in self.normalised.items()}
        return SimilarityIndex.build(texts, self.threshold)

    def where(self, split: str, i: int, **extra) -> dict[str, Any]:
        """An example pointer for a finding: file, 1-based line, id, and anything extra."""
        ex = self.splits[split].examples[i]
        return {"file": ex.source, "line": ex.line, "id": ex.id, **extra}
