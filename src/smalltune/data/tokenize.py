"""Tokenise conversations with the model's chat template; loss on assistant tokens only.

Assistant spans are found by rendering the template on growing prefixes of the conversation:
the characters an assistant turn adds (its content and end-of-turn marker) are the trainable
span, and the fast tokenizer's offsets map those characters to tokens. This works for any chat
template whose rendering of a prefix is a prefix of the full rendering, which we check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SmalltuneError
from .example import Example

IGNORE = -100  # label value that the loss skips


@dataclass
class Tokenized:
    example: Example
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss is taken
    truncated_tokens: int = 0  # tokens cut by max_length
    truncated_trainable: int = 0  # of those, how many carried loss

    @property
    def n_trainable(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenizeStats:
    examples: int = 0
    tokens: int = 0
    trainable_tokens: int = 0
    truncated_examples: int = 0
    truncated_tokens: int = 0
    truncated_trainable: int = 0
    dropped: list[str] = field(default_factory=list)  # "file:line (id)" of examples left with no trainable token

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Full rendered text and the character spans of assistant turns that carry loss."""
    full = render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("weight", 1) == 0:
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if not (full.startswith(before) and full.startswith(upto.rstrip())):
            raise SmalltuneError("the model's chat template does not render conversations prefix by prefix; "
                                 "smalltune cannot locate assistant tokens for it")
        spans.append((len(before), len(upto.rstrip())))  # trailing newline after the end marker: no loss
    return full, spans


# Only the first max_length tokens are kept, so only a head of a long text is tokenised: a 1 MB
# answer would otherwise be tokenised whole (seconds and hundreds of MB per pass, for tokens that are
# thrown away). Texts up to EXACT_CHARS are tokenised whole, so their cut counts are exact. Beyond,
# the head starts at CHARS_PER_TOKEN characters per wanted token and grows until it yields MARGIN
# tokens more than kept, so the kept tokens are exactly those of the whole text (the pre-tokenizer
# splits locally; the margin absorbs the token the cut falls into).
EXACT_CHARS = 32_768
CHARS_PER_TOKEN = 8
MARGIN = 16


def _encode_head(tokenizer, text: str, max_length: int) -> tuple[list[int], list[tuple[int, int]], int]:
    """(ids, offsets, characters tokenised) of a head of ``text`` long enough for ``max_length`` tokens."""
    limit = max((max_length + MARGIN) * CHARS_PER_TOKEN, EXACT_CHARS)
    while True:
        head = text[:limit]
        enc = tokenizer(head, add_special_tokens=False, return_offsets_mapping=True)
        if limit >= len(text) or len(enc["input_ids"]) > max_length + MARGIN:
            return enc["input_ids"], enc["offset_mapping"], len(head)
        limit *= 4


def tokenize_example(tokenizer, example: Example, max_length: int, system_prompt: str | None = None) -> Tokenized:
    """Chat-template tokens of one example, cut at ``max_length``; labels only on assistant tokens.

    When the text is far longer than ``max_length`` tokens, the tail is never tokenised and the cut
    counts (``truncated_tokens``, ``truncated_trainable``) are estimated from the head's
    characters per token.
    """
    text, spans = assistant_spans(tokenizer, example.with_system(system_prompt))
    ids, offsets, seen = _encode_head(tokenizer, text, max_length)
    labels = [
        tok if any(s <= start and end <= e and end > start for s, e in spans) else IGNORE
        for tok, (start, end) in zip(ids, offsets)
    ]
    cut = max(0, len(ids) - max_length)
    cut_trainable = sum(1 for x in labels[max_length:] if x != IGNORE)
    if seen < len(text):  # the untokenised tail, at the tokens per character of the head's second half
        mid = seen // 2
        rate = sum(1 for start, _ in offsets if start >= mid) / max(seen - mid, 1)
        trainable_chars = sum(max(0, e - max(s, seen)) for s, e in spans)
        cut += round((len(text) - seen) * rate)
        cut_trainable += round(trainable_chars * rate)
    return Tokenized(
        example=example,
        input_ids=ids[:max_length],
        labels=labels[:max_length],
        truncated_tokens=cut,
        truncated_trainable=cut_trainable,
    )


def tokenize_examples(tokenizer, examples: list[Example], max_length: int, system_prompt: str | None = None):
    """Tokenise all examples; those left without trainable tokens are reported in stats and left out.

    Returns ``(kept, stats)``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise SmalltuneError("smalltune needs a fast tokenizer (character offsets locate the assistant tokens)")
    stats, kept = TokenizeStats(), []
    for ex in examples:
        t = tokenize_example(tokenizer, ex, max_length, system_prompt)
        stats.examples += 1
        stats.truncated_examples += t.truncated_tokens > 0
        stats.truncated_tokens += t.truncated_tokens
        stats.truncated_trainable += t.truncated_trainable
        if t.n_trainable == 0:
            stats.dropped.append(f"{ex.where} ({ex.id})")
            continue
        stats.tokens += len(t)
        stats.trainable_tokens += t.n_trainable
        kept.append(t)
    return kept, stats


def tokenize_plain(tokenizer, texts: list[str], max_length: int) -> list[Tokenized]:
    """Plain text (no chat template), every token trainable: for reference-text perplexity.

    Long texts are cut into consecutive ``max_length`` windows so no token is dropped.
    """
    from .example import Example

    items = []
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), max_length):
            window = ids[start: start + max_length]
            if len(window) > 1:
                ex = Example(messages=[{"role": "assistant", "content": text}], id=f"text-{i}", shape="text")
                items.append(Tokenized(ex, window, list(window)))
    return items
