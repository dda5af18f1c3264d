"""The one normalised example type every stage works with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    """A conversation plus where it came from.

    ``messages`` are ``{"role", "content"}`` dicts; an assistant turn may carry ``weight`` 0 to
    exclude it from the loss (the OpenAI fine-tuning convention). ``meta`` keeps any other fields
    of the record (``key_facts``, ``rephrasings``, ...) for evaluation.
    """

    messages: list[dict[str, Any]]
    id: str
    source: str = ""  # file the example was read from
    line: int = 0  # 1-based line of the record in that file
    category: str | None = None
    shape: str = "messages"  # the input shape it was normalised from
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source

    @property
    def prompt_messages(self) -> list[dict[str, Any]]:
        """Every turn before the last assistant turn: what the model is asked."""
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return self.messages[:last]

    def prompt(self, system_prompt: str | None = None) -> list[dict[str, Any]]:
        """The prompt turns, with ``system_prompt`` first when the conversation has no system turn."""
        return Example(self.prompt_messages, self.id).with_system(system_prompt)

    @property
    def target(self) -> str:
        """The last assistant turn: the reference answer."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "assistant")

    @property
    def prompt_text(self) -> str:
        """The user turns joined: used for duplicate and leakage checks."""
        return "\n".join(m["content"] for m in self.prompt_messages if m["role"] == "user")

    def with_system(self, system_prompt: str | None) -> list[dict[str, Any]]:
        """Messages with ``system_prompt`` prepended when the conversation has no system turn."""
        if system_prompt and self.messages[0]["role"] != "system":
            return [{"role": "system", "content": system_prompt}, *self.messages]
        return self.messages

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "messages": self.messages}
        if self.category is not None:
            out["category"] = self.category
        return {**out, **self.meta}
