"""After training: talk to a run, ship it, and put runs side by side.

- :func:`chat` / :func:`answer`: the fine-tuned model (or its base) answering in the run's chat
  template and system prompt, interactively or in batches.
- :func:`export`: the adapter with a model card, optionally merged into a plain transformers
  folder (checked against the adapter's logits) and converted to GGUF.
- :func:`compare` / :func:`compare_markdown`: several runs' learning vs forgetting on one HTML page, or
  as a Markdown table.

Import-light like the other stages: torch, transformers and matplotlib load only when used.

>>> from smalltune.use import answer, export, compare
>>> answer("runs/try1", ["When are you open?"])
"""

from __future__ import annotations


def chat(run_dir, **kwargs):
    """Interactive chat with a run in the terminal (see :func:`smalltune.use.chat.repl`)."""
    from .chat import chat as _chat

    return _chat(run_dir, **kwargs)


def answer(run_dir, prompts, **kwargs):
    """Batched one-shot answers (see :func:`smalltune.use.chat.answer`)."""
    from .chat import answer as _answer

    return _answer(run_dir, prompts, **kwargs)


def export(run_dir, to, **kwargs):
    """Export a run (see :func:`smalltune.use.export.export`)."""
    from .export import export as _export

    return _export(run_dir, to, **kwargs)


def compare(run_dirs, **kwargs):
    """Compare runs on one page (see :func:`smalltune.use.compare.compare`)."""
    from .compare import compare as _compare

    return _compare(run_dirs, **kwargs)


def compare_markdown(run_dirs, **kwargs):
    """The comparison as a Markdown table (see :func:`smalltune.use.compare.compare_markdown`)."""
    from .compare import compare_markdown as _compare_markdown

    return _compare_markdown(run_dirs, **kwargs)


__all__ = ["chat", "answer", "export", "compare", "compare_markdown"]
