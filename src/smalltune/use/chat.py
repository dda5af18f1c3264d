"""Talk to a run: an interactive terminal chat, and batched one-shot answers for scripts.

The chat streams the fine-tuned model's tokens as they come, in the run's chat template and with
its ``data.system_prompt``; ``/base`` switches to the base model and ``/compare`` shows both
models' answers side by side. The conversation is kept inside the model's context: when it no
longer fits beside the answer, the oldest exchanges are left out (and the chat says so).

Answers are greedy, like evaluation's, so what the chat shows is what ``eval.json`` measured.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from ..errors import DataError, SmalltuneError
from .session import LABELS, MODELS, Session, open_session

COMMANDS = {
    "/base": "switch between the fine-tuned model and the base model",
    "/compare": "switch side-by-side answers of both models on or off",
    "/reset": "forget the conversation so far",
    "/help": "list these commands",
    "/quit": "leave the chat (also /exit or Ctrl-D)",
}


def repl(session: Session, lines: Iterable[str] | None = None, out: TextIO | None = None,
         which: str = "finetuned", compare: bool = False) -> list[dict]:
    """Run the chat loop over ``lines`` (default: the terminal) and return the conversation kept.

    >>> repl(open_session("runs/try1"), ["When are you open?", "/base", "When are you open?"])
    """
    out = out or sys.stdout
    history: list[dict] = []
    _banner(session, out)
    for raw in _read(lines):
        text = raw.strip()
        if not text:
            continue
        if text.startswith("/"):
            command = text.split()[0].lower()
            if command in ("/quit", "/exit"):
                break
            if command == "/base":
                which = "base" if which == "finetuned" else "finetuned"
                out.write(f"now answering: {LABELS[which]}\n")
            elif command == "/compare":
                compare = not compare
                out.write(f"side-by-side answers {'on' if compare else 'off'}\n")
            elif command == "/reset":
                history = []
                out.write("conversation cleared\n")
            elif command == "/help":
                out.write("".join(f"  {c:<9} {h}\n" for c, h in COMMANDS.items()))
            else:
                out.write(f"unknown command {command}; commands: {', '.join(COMMANDS)}\n")
            continue
        history.append({"role": "user", "content": text})
        try:
            messages, dropped = session.fit(history)
        except SmalltuneError as e:
            history.pop()
            out.write(f"{e}\n")
            continue
        if dropped:
            history = history[dropped:]
            out.write(f"(left out the {dropped} oldest messages to stay within the {session.context}-token context)\n")
        if compare:
            both = {m: session.answers([messages], m)[0] for m in MODELS}
            _side_by_side(both, out)
            reply = both[which]
        else:
            out.write(f"{LABELS[which]}> ")
            out.flush()
            reply = session.stream(messages, which, out)
        history.append({"role": "assistant", "content": reply})
    return history


def _read(lines: Iterable[str] | None) -> Iterator[str]:
    if lines is not None:
        yield from lines
        return
    while True:
        try:
            yield input("you> ")
        except EOFError:
            print()
            return


def _banner(session: Session, out: TextIO) -> None:
    r = session.recipe
    out.write(f"smalltune chat: {session.run_dir} ({r.method.name} on {r.model.name}); "
              f"context {session.context} tokens, answers up to {session.settings.max_new_tokens}\n")
    if session.system_prompt:
        out.write(f"system prompt: {session.system_prompt}\n")
    out.write("type a message; /help lists the commands\n")


def _side_by_side(answers: dict[str, str], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(expand=True, show_lines=False)
    for m in answers:
        table.add_column(LABELS[m], ratio=1, overflow="fold")
    table.add_row(*(Text(a) for a in answers.values()))  # Text: answers are not rich markup
    Console(file=out, highlight=False, soft_wrap=False).print(table)


def read_prompts(path: str | Path) -> list[dict]:
    """Prompts from a JSONL, JSON or CSV file: one per record, as ``{"id", "messages", "reference"}``.

    A record is a string, or any training/test shape (``messages``, ``prompt``, ``instruction`` +
    ``input``); a trailing assistant turn (``completion``, ``output``) is kept as the reference, so a
    test file can be asked directly.
    """
    from ..data.readers import read_records

    path = Path(path)
    items = []
    for rec in read_records(path):
        if rec.error:
            raise DataError(path, rec.line, rec.error)
        try:
            items.append(_prompt_item(rec.value, len(items)))
        except ValueError as e:
            raise DataError(path, rec.line, str(e)) from None
    if not items:
        raise DataError(path, None, "no prompts found")
    return items


def _prompt_item(value, index: int) -> dict:
    reference = None
    if isinstance(value, str):
        messages = [{"role": "user", "content": value}]
    elif isinstance(value, dict) and isinstance(value.get("messages"), list):
        messages = [m for m in value["messages"] if isinstance(m, dict)]
        if len(messages) != len(value["messages"]) or any(
                m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str)
                for m in messages):
            raise ValueError("messages must be a list of {role: system|user|assistant, content: text}")
        while messages and messages[-1]["role"] == "assistant":
            reference = reference or messages[-1]["content"]
            messages = messages[:-1]
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    elif isinstance(value, dict) and isinstance(value.get("prompt"), str):
        messages, reference = [{"role": "user", "content": value["prompt"]}], value.get("completion")
    elif isinstance(value, dict) and isinstance(value.get("instruction"), str):
        extra = value.get("input")
        user = f"{value['instruction']}\n\n{extra}" if isinstance(extra, str) and extra.strip() else value["instruction"]
        messages, reference = [{"role": "user", "content": user}], value.get("output")
    else:
        raise ValueError("expected a string or an object with messages, prompt or instruction")
    if not messages or messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise ValueError("the prompt must end with a non-empty user turn")
    item = {"id": str(value.get("id", index + 1)) if isinstance(value, dict) else str(index + 1), "messages": messages}
    if isinstance(reference, str):
        item["reference"] = reference
    return item


def answer(run_dir: str | Path | None, prompts: list, models: tuple[str, ...] = ("finetuned",),
           session: Session | None = None, **session_kwargs) -> list[dict]:
    """Batched greedy answers: one dict per prompt with ``prompt`` and one key per model in ``models``.

    ``prompts`` are strings or items from :func:`read_prompts`.

    >>> answer("runs/try1", ["When are you open?"], models=("finetuned", "base"))
    [{'id': '1', 'prompt': 'When are you open?', 'finetuned': '...', 'base': '...'}]
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SmalltuneError(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    items = [_prompt_item(p, i) if isinstance(p, str) else p for i, p in enumerate(prompts)]
    session = session or open_session(run_dir, **session_kwargs)
    rows = [{"id": it["id"], "prompt": it["messages"][-1]["content"]} for it in items]
    for it, row in zip(items, rows):
        if "reference" in it:
            row["reference"] = it["reference"]
    for m in models:
        for row, text in zip(rows, session.answers([it["messages"] for it in items], m)):
            row[m] = text
    return rows


def chat(run_dir: str | Path, lines: Iterable[str] | None = None, out: TextIO | None = None,
         which: str = "finetuned", compare: bool = False, **session_kwargs) -> list[dict]:
    """Load a run and chat with it (see :func:`repl`)."""
    return repl(open_session(run_dir, **session_kwargs), lines, out, which, compare)
