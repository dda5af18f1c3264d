"""Data: read files, normalise to :class:`Example`, tokenise with loss masks, split, batch."""

from .example import Example
from .formats import load_examples, record_problems
from .splits import auto_validation_fraction, carve_validation
from .tokenize import IGNORE, Tokenized, TokenizeStats, tokenize_examples

__all__ = [
    "Example", "load_examples", "record_problems", "auto_validation_fraction", "carve_validation",
    "IGNORE", "Tokenized", "TokenizeStats", "tokenize_examples",
]
