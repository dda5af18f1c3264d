"""Text helpers shared by the checks: normalisation, word shingles, encoding and template patterns.

The mojibake patterns are hand-written because the maintained fixer (ftfy) is not a smalltune
dependency and we only need to *detect* the handful of byte-pair signatures that UTF-8 text
decoded as Latin-1/cp1252 leaves behind ("Ã©" for "é", "â€™" for "’"), not repair them.
"""

from __future__ import annotations

import re
import unicodedata

_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")

# C0 controls except tab/newline/carriage return, DEL, and NUL explicitly.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# UTF-8 multi-byte sequences read as cp1252/Latin-1: lead byte Ã/Â/â/Å/Ð followed by a
# continuation-range character, plus the mis-decoded BOM and the replacement character.
MOJIBAKE = re.compile(r"Ã[\x80-\xbf€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ]|Â[\xa0-\xbf]|â€|ï»¿|Å[\x80-\xbf’“]|\ufffd")

# Prompt-format markers from other tools' templates that leak into content when data is exported
# from one framework to another (Alpaca, ChatML, Llama-2, Vicuna, plain "Human:/Assistant:").
TEMPLATE_ARTEFACTS = re.compile(
    r"###\s*(?:Instruction|Input|Response|Human|Assistant|System)\s*:|<\|im_start\|>|<\|im_end\|>|"
    r"<\|endoftext\|>|<\|eot_id\|>|<\|start_header_id\|>|<\|(?:user|assistant|system)\|>|\[/?INST\]|"
    r"<<SYS>>|</?s>|^\s*(?:Human|Assistant|USER|ASSISTANT)\s*:",
    re.IGNORECASE | re.MULTILINE,
)
# A leading "label:" that marks a prompt template ("Question: ...", "### Instruction: ...").
PROMPT_PREFIX = re.compile(r"^\s*(#{1,4}\s*)?(instruction|question|q|query|input|context|task|prompt|user|human)\s*:",
                           re.IGNORECASE)


def normalise(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive form used for "identical" comparisons.

    >>> normalise("  When are you OPEN?? ")
    'when are you open'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def shingles(text: str) -> set[str]:
    """Word unigrams and bigrams of normalised text: the sets whose Jaccard similarity we threshold.

    Unigrams keep short prompts (support questions are 5-15 words) comparable; bigrams keep
    word order from counting for nothing.
    """
    words = _WORD.findall(text)
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:])}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def approx_tokens(text: str) -> int:
    """Token count without a tokenizer: about 4 characters per token for English BPE vocabularies."""
    return (len(text) + 3) // 4


def strings_in(value, path: str = ""):
    """Yield (path, string) for every string inside a JSON value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings_in(v, f"{path}[{i}]")


def snippet(text: str, width: int = 70) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= width else text[: width - 1] + "…"
