"""``synth()``: question/answer pairs generated from the user's documents, each grounded in its passage.

Two generation legs per pair, both batched: the generator writes a question a user might ask about
a passage, then answers it from the passage alone (in the voice of ``system_prompt`` when given).
Answers that the passage does not support are rejected by the ``grounding`` filter (every number
and name of the answer, and most of its content words, must occur in the passage); questions are
deduplicated and checked for leakage into validation/test like augmented prompts. Every record
keeps its passage, so a person can check any pair by reading two lines. The written file is then
audited like any data file. Generating questions from documents follows e.g. "Generating Training
Data with Language Models" (arXiv 2202.04538); the checks are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SmalltuneError
from .base import clean, request
from .documents import MAX_WORDS, Passage, read_passages
from .filters import FILTERS as RULES
from .filters import Candidate, FilterContext
from .runner import DEFAULT_MODEL, GenerationResult, generate_and_filter, held_out_prompts, model_generator, write_summary

STYLES = (
    "that a customer might ask",
    "that a customer might type quickly in a chat",
    "about one specific detail in it (a time, a price, a name or a number)",
)
QUESTION = "Here is a text from {document}:\n\n{passage}\n\nWrite one question {style} that this text answers. " \
           "Reply with the question only."
ANSWER = ("Answer the question using only the facts in the text below, in one or two sentences. If the text does "
          "not answer it, reply \"not in the text\".\n\nText:\n{passage}\n\nQuestion: {question}")
FILTERS = ("question", "empty", "grounding", "leakage", "duplicate")


@dataclass(frozen=True)
class Job:
    passage: Passage
    index: int  # passage position, for the output order
    variant: int  # picks the question style


def answer_text(reply: str) -> str:
    """The first paragraph of a reply, its lines joined, without a leading label ("Answer: ...")."""
    lines = reply.strip().split("\n\n")[0].splitlines() or [""]
    return " ".join(" ".join([clean(lines[0]), *lines[1:]]).split())


def produce(jobs: list[Job], generate, system_prompt: str | None = None) -> list[Candidate]:
    questions = generate([request(QUESTION.format(document=Path(j.passage.document).name, passage=j.passage.context,
                                                  style=STYLES[j.variant])) for j in jobs])
    out = [Candidate(text=clean(q), source_text=j.passage.text, source_id=j.passage.id, method="synth",
                     passage=j.passage.context, payload=j.passage, order=(j.index, j.variant))
           for j, q in zip(jobs, questions)]
    asked = [c for c in out if RULES.get("question")(c, FilterContext()) is None]  # no answer for a non-question
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    answers = generate([system + request(ANSWER.format(passage=c.passage, question=c.text)) for c in asked])
    for c, a in zip(asked, answers):
        c.answer = answer_text(a)
    return out


def category_of(p: Passage) -> str:
    """The innermost section title, else the document's name: the record's category."""
    return (p.section.split(" > ")[-1] if p.section else Path(p.document).stem).strip().lower()


def synth(docs, model: str = DEFAULT_MODEL, per_passage: int = 1, output="synth.jsonl", validation=None, test=None,
          max_words: int = MAX_WORDS, system_prompt: str | None = None, threshold: float = 0.8,
          batch_size: int = 16, max_new_tokens: int = 96, run_audit: bool = True, generate_fn=None,
          generator: str | None = None, progress: bool = True) -> GenerationResult:
    """Grounded question/answer pairs from documents (.md, .txt, .html), written as a chat JSONL file.

    >>> result = synth(["docs/faq.md", "docs/visit.html"], per_passage=2, test="test.jsonl")
    >>> result.summary["accepted"], result.audit.exit_code()
    """
    from ..provenance import provenance
    from .records import counts_path, write_records

    if not docs:
        raise SmalltuneError("synth: name at least one document (.md, .txt or .html)")
    if not 1 <= per_passage <= len(STYLES):
        raise SmalltuneError(f"--per-passage must be between 1 and {len(STYLES)}, got {per_passage}")
    if not 0 < threshold <= 1:
        raise SmalltuneError(f"--threshold must be in (0, 1], got {threshold}")
    passages = read_passages(docs, max_words)
    held, held_ids = held_out_prompts(validation, test)
    ctx = FilterContext(threshold=threshold, held_out=held, held_out_ids=held_ids)
    jobs = sorted((Job(p, i, k) for i, p in enumerate(passages) for k in range(per_passage)),
                  key=lambda j: len(j.passage.context))
    name = generator or (model if generate_fn is None else "custom")
    generate_fn = generate_fn or model_generator(model, batch_size, max_new_tokens)
    accepted, counts = generate_and_filter(jobs, lambda chunk, gen: produce(chunk, gen, system_prompt), generate_fn,
                                           FILTERS, ctx, "synth", 2, batch_size, progress)
    records = [{"id": f"synth-{n + 1:04d}", "category": category_of(c.payload),
                "messages": [{"role": "user", "content": c.text}, {"role": "assistant", "content": c.answer}],
                "source_id": c.source_id, "augment_method": "synth", "generator": name,
                "passage": c.payload.text, "section": c.payload.section, "source_document": c.payload.document}
               for n, c in enumerate(accepted)]
    output = Path(output)
    write_records(output, records)
    cfile = counts_path(output, "synth")
    summary = {"command": "synth", "method": "synth", "generator": name, "documents": [str(d) for d in docs],
               "passages": len(passages), "output": str(output), "counts_file": str(cfile),
               "validation": validation, "test": test,
               "settings": {"per_passage": per_passage, "max_words": max_words, "threshold": threshold,
                            "min_support": ctx.min_support, "system_prompt": system_prompt,
                            "max_new_tokens": max_new_tokens, "batch_size": batch_size, "filters": list(FILTERS)},
               **counts.to_dict(), "provenance": provenance(passages=len(passages), generated=len(records))}
    write_summary(cfile, summary)
    report = None
    if run_audit and records:
        from ..audit import audit

        report = audit(output, validation, test, progress=False)
    return GenerationResult(output, cfile, summary, records, audit=report)
