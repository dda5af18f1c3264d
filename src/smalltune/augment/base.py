"""What the augmentation methods share: the source of a variant, the method shape and its registry.

A method turns a chunk of jobs (a source prompt and a variant number) into candidates, calling the
generator once per leg with the whole chunk, so generation stays batched. Each method registers
itself once, in its own module, in :data:`METHODS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from ..data.example import Example
from ..registry import Registry
from .filters import Candidate

Generator = Callable[[list[list[dict]]], list[str]]  # conversations -> generated replies, same order


@dataclass
class Source:
    """One training example to vary: its record as read, and the prompt text a variant replaces."""

    example: Example
    raw: dict  # the record exactly as in the file (the writer keeps its shape)
    prompt: str  # the user text being rephrased (last user turn, ``prompt`` or ``instruction``)
    facts: list[str]  # names, numbers and key facts a variant must keep
    index: int  # position in the file


@dataclass(frozen=True)
class Job:
    source: Source
    variant: int  # 0 .. per_example - 1: picks the style or pivot language


@dataclass(frozen=True)
class Method:
    produce: Callable[[list[Job], Generator, Any], list[Candidate]]  # (jobs, generate, options) -> candidates
    legs: int  # generation requests per candidate (the progress bar's total)
    filters: tuple[str, ...]  # filter names, in the order they run
    variants: Callable[[Any], int]  # options -> most variants per example it can make distinct


METHODS: Registry[Method] = Registry("augmentation method")

_LABEL = re.compile(r"^\s*(?:[-*•]|\d+[.)]|(?:[A-Z][\w ]{0,30}):)\s*")


def request(text: str) -> list[dict]:
    """A one-turn conversation asking the generator ``text``."""
    return [{"role": "user", "content": text}]


def clean(reply: str) -> str:
    """The first non-empty line of a reply, without a leading label or list marker and without quotes.

    >>> clean('Rewritten question: "When do you open on Saturday?"\\nHope this helps!')
    'When do you open on Saturday?'
    """
    line = next((x.strip() for x in reply.splitlines() if x.strip()), "")
    line = _LABEL.sub("", line, count=1).strip()
    if len(line) > 1 and line[0] in "\"'“«" and line[-1] in "\"'”»":
        line = line[1:-1].strip()
    return line


def candidate(job: Job, text: str, method: str, pivot: str | None = None) -> Candidate:
    s = job.source
    return Candidate(text=text, source_text=s.prompt, source_id=s.example.id, method=method, answer=s.example.target,
                     pivot=pivot, facts=s.facts, payload=s, order=(s.index, job.variant))
