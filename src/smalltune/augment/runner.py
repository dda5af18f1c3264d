"""``augment()``: new variants of each training prompt, generated in batches, filtered, written with their counts.

The loop shared with ``synth``: jobs go to the generator one batch at a time, every candidate of the
batch goes through the method's filters (near-duplicates against everything kept so far), and the
progress bar shows accepted and rejected counts as they grow. The generator is any function from
conversations to replies (tests inject fixed strings); by default a model loaded by name and run
with :func:`smalltune.generate.generate` (batched greedy decoding).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audit.text import normalise
from ..errors import SmalltuneError
from ..recipe import ModelSection
from .base import METHODS, Generator, Job, Source
from .filters import Candidate, FilterContext, prompt_facts

DEFAULT_MODEL = ModelSection().name  # the generator is the model a default recipe fine-tunes
SHOWN_PER_REASON = 5  # rejected candidates kept per reason in the counts file, to see what went wrong
ROUND_TRIP_FAILURES = ("round_trip", "empty", "echo", "meaning")
HELD_OUT_NAME = re.compile(r"(?:^|[-_.])(?:val|valid|validation|dev|test|eval|heldout|holdout)(?:[-_.]|$)", re.I)


@dataclass
class Options:
    per_example: int = 1
    pivots: list[str] = field(default_factory=lambda: ["French"])
    source_language: str = "English"
    max_pivot_overlap: float = 0.5


@dataclass
class Counts:
    """Candidates, accepted, and rejected per reason (the filter that failed first), with a few samples."""

    candidates: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[dict]] = field(default_factory=dict)

    def add(self, c: Candidate, kept: bool) -> None:
        self.candidates += 1
        if kept:
            self.accepted += 1
            return
        self.rejected[c.reason] = self.rejected.get(c.reason, 0) + 1
        shown = self.samples.setdefault(c.reason, [])
        if len(shown) < SHOWN_PER_REASON:
            shown.append({"source_id": c.source_id, "text": c.text, "detail": c.detail,
                          **({"pivot": c.pivot} if c.pivot is not None else {}),
                          **({"answer": c.answer} if c.passage is not None else {})})

    def to_dict(self) -> dict:
        return {"candidates": self.candidates, "accepted": self.accepted,
                "rejected_total": self.candidates - self.accepted,
                "acceptance_rate": round(self.accepted / self.candidates, 4) if self.candidates else 0.0,
                "rejected": dict(sorted(self.rejected.items(), key=lambda kv: -kv[1])),
                "rejected_samples": self.samples}


@dataclass
class GenerationResult:
    output: Path
    counts_file: Path
    summary: dict  # what the counts file holds
    records: list[dict]  # the generated records written (without originals)
    message: str | None = None  # a plain statement of a generator failure (back-translation)
    audit: Any = None  # synth: the audit report of the written file


def model_generator(name: str, batch_size: int = 16, max_new_tokens: int = 64) -> Generator:
    """A generator backed by a causal LM (built-in name, folder or hub id), batched and greedy."""
    from ..generate import GenerationSettings, generate
    from ..models import load_model

    model, tok = load_model(name)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    return lambda conversations: generate(model, tok, conversations, settings)


def generate_and_filter(jobs: list, produce, generate_fn: Generator, filters, ctx: FilterContext, desc: str,
                        legs: int = 1, batch_size: int = 16, progress: bool = True) -> tuple[list[Candidate], Counts]:
    """Candidates from ``produce(chunk, generate)`` one batch of jobs at a time, judged as they come."""
    from ..console import progress as bar_for

    total = len(jobs) * legs
    bar = bar_for(total, desc=desc, disable=not progress)
    bar.unit = "request"

    def counted(conversations):
        replies = list(generate_fn(conversations))
        if len(replies) != len(conversations):
            raise SmalltuneError(f"the generator returned {len(replies)} replies for {len(conversations)} requests")
        bar.update(len(conversations))
        return replies

    accepted, counts = [], Counts()
    try:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start: start + batch_size]
            candidates = produce(chunk, counted)
            bar.update(max(0, min(total, (start + len(chunk)) * legs) - bar.n))  # legs skipped after a failed check
            ctx.prepare(candidates)
            for c in candidates:
                kept = ctx.judge(c, filters)
                if kept:
                    ctx.accept(c)
                    accepted.append(c)
                counts.add(c, kept)
            bar.set_postfix(accepted=counts.accepted, rejected=counts.candidates - counts.accepted)
    finally:
        bar.close()
    return sorted(accepted, key=lambda c: c.order), counts


def refuse_held_out(data, validation=None, test=None) -> None:
    """Validation and test files are never augmented: their variants in training would make scores measure memory."""
    path = Path(data).resolve()
    for flag, other in (("--validation", validation), ("--test", test)):
        if other and Path(other).resolve() == path:
            raise SmalltuneError(f"{data} is also the {flag} file; validation and test files are never augmented "
                                 "(their variants in training would make held-out scores measure memory)")
    if HELD_OUT_NAME.search(Path(data).stem):
        raise SmalltuneError(f"{data}: the file name says validation/test data, and held-out files are never "
                             "augmented; rename it if it really is training data")


def held_out_prompts(validation=None, test=None) -> tuple[list[str], list[str]]:
    """Normalised prompts of the validation and test files, and where each is (``file:line``)."""
    from ..data import load_examples

    texts, ids = [], []
    for path in (validation, test):
        if path:
            for ex in load_examples(path):
                texts.append(normalise(ex.prompt_text))
                ids.append(f"{Path(path).name}:{ex.line}")
    return texts, ids


def write_summary(path: Path, summary: dict) -> None:
    from ..rundir import atomic_write_json

    atomic_write_json(path, summary)


def augment(data, method: str = "paraphrase", model: str = DEFAULT_MODEL, per_example: int = 1,
            pivot: str = "French", validation=None, test=None, output=None, with_originals: bool = False,
            threshold: float = 0.8, batch_size: int = 16, max_new_tokens: int = 64,
            generate_fn: Generator | None = None, generator: str | None = None,
            progress: bool = True) -> GenerationResult:
    """Variants of every prompt of ``data`` (answers stay the user's), filtered, written as a data file.

    ``generate_fn`` replaces the model (``generator`` then names it in the records). The counts per
    rejection reason go to ``<output stem>.augment.json`` next to the output.

    >>> result = augment("train.jsonl", "paraphrase", per_example=2, validation="val.jsonl")
    >>> result.summary["accepted"], result.summary["rejected"]
    (212, {'meaning': 230, 'copy': 121, ...})
    """
    from ..data import load_examples
    from ..data.readers import read_records
    from ..provenance import provenance
    from . import backtranslate, paraphrase  # noqa: F401  (registers the methods)
    from .records import counts_path, default_output, get_prompt, with_prompt, write_records

    spec = METHODS.get(method, "--method")
    options = Options(per_example, [p.strip() for p in pivot.split(",") if p.strip()])
    if not options.pivots:
        raise SmalltuneError("--pivot: name at least one language, e.g. French")
    most = spec.variants(options)
    if not 1 <= per_example <= most:
        hint = " (one per pivot language: --pivot French,German,...)" if method == "backtranslate" else ""
        raise SmalltuneError(f"--per-example must be between 1 and {most} for {method}{hint}, got {per_example}")
    if not 0 < threshold <= 1:
        raise SmalltuneError(f"--threshold must be in (0, 1], got {threshold}")
    refuse_held_out(data, validation, test)
    examples = load_examples(data)
    raws = [r.value for r in read_records(data)]
    sources = []
    for i, (ex, raw) in enumerate(zip(examples, raws)):
        prompt = get_prompt(raw, ex.shape)
        sources.append(Source(ex, raw, prompt, prompt_facts(prompt, ex.meta.get("key_facts")), i))
    held, held_ids = held_out_prompts(validation, test)
    ctx = FilterContext(threshold=threshold, max_pivot_overlap=options.max_pivot_overlap, held_out=held,
                        held_out_ids=held_ids, kept=[normalise(s.prompt) for s in sources],
                        kept_ids=[f"training example {s.example.id}" for s in sources])
    # Similar lengths in one batch pad less; the output is put back in file order.
    jobs = sorted((Job(s, k) for s in sources for k in range(per_example)), key=lambda j: len(j.source.prompt))
    name = generator or (model if generate_fn is None else "custom")
    generate_fn = generate_fn or model_generator(model, batch_size, max_new_tokens)
    accepted, counts = generate_and_filter(jobs, functools.partial(spec.produce, options=options), generate_fn,
                                           spec.filters, ctx, method, spec.legs, batch_size, progress)
    records = [with_prompt(c.payload.raw, c.payload.example.shape, c.text, id=f"{c.source_id}-{method[:4]}{c.order[1] + 1}",
                           source_id=c.source_id, augment_method=method, generator=name, **c.meta) for c in accepted]
    output = Path(output) if output else default_output(data, method)
    write_records(output, (raws if with_originals else []) + records)
    message = None
    # A round trip fails when the pivot text is no translation, or what comes back is no rephrasing of the source
    # (a copy, a duplicate or a leak is a translation that worked).
    failed = sum(counts.rejected.get(r, 0) for r in ROUND_TRIP_FAILURES) if method == "backtranslate" else 0
    if failed and 2 * failed >= counts.candidates:
        message = f"the generator could not translate ({failed}/{counts.candidates} round trips failed the check)"
    cfile = counts_path(output, "augment")
    summary = {"command": "augment", "method": method, "generator": name, "data": str(data), "output": str(output),
               "counts_file": str(cfile),
               "with_originals": with_originals, "validation": validation, "test": test,
               "settings": {"per_example": per_example, "pivots": options.pivots if method == "backtranslate" else None,
                            "threshold": threshold, "min_kept": ctx.min_kept, "max_pivot_overlap": ctx.max_pivot_overlap,
                            "max_new_tokens": max_new_tokens, "batch_size": batch_size, "filters": list(spec.filters)},
               **counts.to_dict(), "message": message,
               "provenance": provenance(examples=len(examples), generated=len(records))}
    write_summary(cfile, summary)
    return GenerationResult(output, cfile, summary, records, message)


def print_counts(summary: dict) -> None:
    """Accepted and rejected per reason, with one example of each rejection."""
    from rich.markup import escape
    from rich.table import Table

    from ..console import out

    n = summary["candidates"]
    out.print(f"[bold]smalltune {summary['command']}[/bold] ({summary.get('method', 'synth')}, generator "
              f"{summary['generator']}): {summary['accepted']} of {n} candidates accepted "
              f"({summary['acceptance_rate']:.0%})")
    if summary["rejected"]:
        table = Table(show_header=True, title_justify="left")
        table.add_column("rejected because")
        table.add_column("count", justify="right")
        table.add_column("share", justify="right")
        table.add_column("for example")
        for reason, k in summary["rejected"].items():
            sample = summary["rejected_samples"].get(reason, [{}])[0]
            table.add_row(reason, str(k), f"{k / max(n, 1):.0%}",
                          escape(f"{sample.get('text', '')[:60]!r}: {sample.get('detail', '')}"))
        out.print(table)
    out.print(f"  wrote {summary['output']} and {summary['counts_file']}")
