"""Consistency: mixed prompt templates, template artefacts in content, inconsistent answer style.

Fine-tuning copies style as eagerly as content: if 30% of answers end with a sign-off, the model
signs off 30% of the time, at random; a stray ``### Response:`` in the data becomes a stray
``### Response:`` in the output.
"""

from __future__ import annotations

from collections import Counter

from ..context import MAX_EXAMPLES
from ..report import Finding
from ..text import PROMPT_PREFIX, TEMPLATE_ARTEFACTS, normalise, snippet
from . import CHECKS

SIGN_OFF_MIN, SIGN_OFF_MAX = 0.1, 0.9  # a closing line this common but not universal is inconsistent
MINORITY = 0.25  # a style used by fewer than this share of answers is the odd one out


def _last_sentence(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    parts = [p for p in last.replace("!", ".").replace("?", ".").split(".") if p.strip()]
    return normalise(parts[-1]) if parts else ""


def _special_tokens(ctx) -> list[str]:
    tok = ctx.tokenizer
    return [t for t in getattr(tok, "all_special_tokens", []) if len(t) > 2] if tok is not None else []


@CHECKS.register("consistency")
def check(ctx) -> list[Finding]:
    findings, specials = [], _special_tokens(ctx)
    artefacts, templates, spacing, lower = [], Counter(), [], []
    prefixed = {}
    answers = []  # (split, index, text)
    for name, split in ctx.splits.items():
        for i, ex in enumerate(split.examples):
            for m in ex.messages:
                text = m["content"]
                hit = TEMPLATE_ARTEFACTS.search(text) or next((s for s in specials if s in text), None)
                if hit:
                    artefacts.append(ctx.where(name, i, role=m["role"], artefact=hit if isinstance(hit, str) else hit.group()))
                    break
            user = next((m["content"] for m in ex.messages if m["role"] == "user"), "")
            prefix = PROMPT_PREFIX.match(user)
            label = normalise(prefix.group(0)) + ":" if prefix else "(plain)"
            templates[label] += 1
            prefixed.setdefault(label, ctx.where(name, i, template=label))
            for m in ex.messages:
                if m["role"] == "assistant":
                    answers.append((name, i, m["content"]))
    if artefacts:
        findings.append(Finding(
            "consistency", "warning", "template markers inside content", len(artefacts),
            "prompt-format markers or special tokens from another template sit inside the text, and the model "
            "will learn to print them; strip them (the chat template adds the real ones)", artefacts[:MAX_EXAMPLES]))
    if len(templates) > 1:
        findings.append(Finding(
            "consistency", "warning", "mixed prompt templates", len(templates),
            f"user turns use {len(templates)} styles ({', '.join(f'{k} {v}' for k, v in templates.most_common())}); "
            "mixed templates usually mean merged sources; use one style (plain questions suit chat models)",
            list(prefixed.values())))
    for name, i, text in answers:
        if text != text.strip() or "  " in text.strip() or "\t" in text:
            spacing.append(ctx.where(name, i, answer=snippet(repr(text), 60)))
        first = text.strip()[:1]
        if first.isalpha():
            lower.append((name, i, first.islower()))
    if spacing:
        findings.append(Finding(
            "consistency", "info", "stray whitespace in answers", len(spacing),
            "leading/trailing or repeated spaces in answers are learned too; strip them", spacing[:MAX_EXAMPLES]))
    n_lower = sum(1 for *_, low in lower if low)
    odd = [x for x in lower if x[2] == (n_lower < len(lower) / 2)]
    if lower and 0 < len(odd) < MINORITY * len(lower):
        case = "lowercase" if n_lower < len(lower) / 2 else "uppercase"
        findings.append(Finding(
            "consistency", "info", f"answers starting in {case}", len(odd),
            f"{len(odd)} of {len(lower)} answers start in {case}, unlike the rest; make the casing consistent",
            [ctx.where(name, i) for name, i, _ in odd[:MAX_EXAMPLES]]))
    # Only answers with more than one sentence can carry a sign-off ("Yes." is not one).
    endings = Counter(e for *_, text in answers if (e := _last_sentence(text)) != normalise(text))
    if answers and endings:
        ending, k = endings.most_common(1)[0]
        share = k / len(answers)
        if ending and k >= 3 and SIGN_OFF_MIN <= share < SIGN_OFF_MAX:
            where = [ctx.where(name, i) for name, i, text in answers if _last_sentence(text) == ending]
            findings.append(Finding(
                "consistency", "warning", "inconsistent sign-off", k,
                f"{share:.0%} of answers end with '{ending}': the model will add it at random; "
                "use it in every answer or in none", where[:MAX_EXAMPLES]))
    return findings
