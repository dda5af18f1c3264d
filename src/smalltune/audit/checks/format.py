"""Format: every schema and encoding problem of every record, grouped by kind.

Reading (``audit/loading.py``) already collected the problems line by line; this check names
them, ranks them and says how to fix each kind.
"""

from __future__ import annotations

from collections import defaultdict

from ...data.readers import NUL_FIX
from ..report import Finding
from . import CHECKS

MAX_LINES = 1000  # every problem is counted; the JSON lists up to this many lines per kind

# kind -> (severity, title, explanation + fix)
KINDS = {
    "json": ("error", "malformed records", "these lines are not valid JSON/CSV records; fix the syntax (a .jsonl file holds one JSON object per line)"),
    "invalid_utf8": ("error", "invalid UTF-8", "bytes that are not UTF-8 (often a cp1252/Latin-1 export); re-save the file as UTF-8, e.g. `iconv -f cp1252 -t utf-8`"),
    "nul": ("error", "NUL bytes in the file", "training refuses a file with NUL bytes: " + NUL_FIX),
    # a warning because training accepts them (they are text, only invisible): say what they cost
    "control": ("warning", "control or NUL characters", "invisible control characters in the text (backspace, form feed, an escaped NUL) train as they are, so the model may learn to write them; remove them unless they are meant (they are usually copy-paste, PDF or export debris)"),
    "mojibake": ("warning", "mojibake (wrong-encoding text)", "text like 'Ã©' or 'â€™' is UTF-8 that was decoded as cp1252 at some point; repair it (e.g. ftfy.fix_text) or re-export the source as UTF-8"),
    "wrong_type": ("error", "wrong value types", "a field has the wrong JSON type; every message is {\"role\": ..., \"content\": \"text\"} inside a \"messages\" list"),
    "unknown_role": ("error", "unknown roles", "roles must be system, user or assistant; rename the others (e.g. human -> user, bot/gpt -> assistant)"),
    "role_order": ("error", "wrong turn order", "conversations go [system,] user, assistant, user, assistant ...; merge consecutive turns of one role and drop trailing user turns"),
    "empty_turn": ("error", "empty turns", "a turn has empty or whitespace-only content; fill it or drop the example"),
    "missing_assistant": ("error", "no assistant turn to learn from", "an example without an assistant answer (or with every answer weight 0) trains nothing; add the answer or drop it"),
    "shape": ("error", "unrecognised record shape", "use messages, prompt/completion or instruction/output fields (see the README's Data section)"),
    "weight": ("error", "invalid weights", "weight is 0 or 1 and only on assistant turns"),
    "schema": ("error", "schema problems", "fix the fields named in the examples"),
    "mixed_shapes": ("warning", "mixed record formats in one file", "one file mixes record shapes, usually a sign of concatenated exports with different templates; convert all records to one shape"),
}

_SCHEMA_KINDS = [  # record_problems message fragment -> kind (first match wins)
    ("is not one of", "unknown_role"),
    ("empty or whitespace-only", "empty_turn"),
    ("missing assistant turn", "missing_assistant"),
    ("has weight 0", "missing_assistant"),
    ("weight", "weight"),
    ("system turn may only", "role_order"),
    ("must start with a user", "role_order"),
    ("must alternate", "role_order"),
    ("last turn must", "role_order"),
    ("unrecognised record shape", "shape"),
    ("must be", "wrong_type"),
    ("expected an object", "wrong_type"),
]


def classify(problem) -> str:
    if problem.kind != "schema":
        return problem.kind
    return next((kind for frag, kind in _SCHEMA_KINDS if frag in problem.detail), "schema")


@CHECKS.register("format")
def check(ctx) -> list[Finding]:
    found: dict[str, list[dict]] = defaultdict(list)
    for split in ctx.splits.values():
        for p in split.problems:
            found[classify(p)].append({"file": split.file, "line": p.line, "problem": p.detail})
        ctx.stats.setdefault("splits", {})[split.name] = {
            "file": split.file, "records": split.records, "examples": len(split.examples),
            "invalid": split.records - len(split.examples), "shapes": dict(split.shapes),
        }
    findings = []
    for kind, where in found.items():
        severity, title, message = KINDS[kind]
        lines = len({(w["file"], w["line"]) for w in where})
        findings.append(Finding("format", severity, title, lines, message, where[:MAX_LINES]))
    return findings
