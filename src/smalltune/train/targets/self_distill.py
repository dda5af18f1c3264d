"""Self-distilled targets: train on the base model's own wording of each reference answer.

SDFT, "Self-Distillation Bridges Distribution Gap in Language Model Fine-Tuning" (arXiv
2402.13669): answers written in the model's own style are closer to its distribution, so learning
them moves the weights less and forgets less. The base model sees the question *and* the reference
answer and is asked to rewrite the answer; a rewrite is used only when it keeps the key facts
(every number, e-mail / web address and proper noun of the reference, and ``key_facts`` from the
record when present), keeps at least 60% of the reference's content words, and neither parrots
the instruction or the question nor talks about the answer ("The answer is: ..."). Otherwise the
original answer is kept.

Generation is expensive, so the result is cached in the run directory
(``targets/self_distill.jsonl``, written atomically) and reused on ``--resume``; a cache entry
whose reference answer changed is regenerated. The fact and parrot checks are ours (simple,
explainable string rules); generation is :func:`smalltune.generate.generate` (batched, greedy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Callable

from ...data.example import Example
from ..plugins import Plugin
from . import DATA_PLUGINS, need_model

CACHE_NAME = "self_distill.jsonl"
TEMPLATE = (
    "Below is a question and a correct reference answer.\n\n"
    "Question:\n{question}\n\n"
    "Reference answer:\n{answer}\n\n"
    "Rewrite the reference answer in your own words. Keep every fact, number and name from it, "
    "add nothing new, and reply with the rewritten answer only."
)
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_WORD = re.compile(r"[A-Za-z][\w'’-]*")
_TEMPLATE_MARKERS = ("reference answer", "rewrite the", "in your own words", "question:")
_CONTACT = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|https?://[^\s)]+|www\.[^\s)]+")  # emails, web addresses
# Talking *about* the answer instead of giving it ("The answer is:", "Here is the rewritten answer:").
_PREAMBLE = re.compile(r"^[^\n]*\banswer\b[^\n]*:[ \t]*$|\A[^\n]*:[ \t]*\n", re.I | re.M)
STOPWORDS = frozenset("the and for with that this you your our are was were will can from have has not but they "
                      "them their there what when where which who how also just into about than then".split())
MIN_WORD_RECALL = 0.6  # share of the reference's content words a rewrite must keep

Generator = Callable[[list[list[dict]]], list[str]]  # conversations -> answers


def key_facts(example: Example) -> list[str]:
    """What a rewrite must keep: numbers, proper nouns (capitalised words not opening a sentence), ``key_facts``.

    >>> key_facts(Example([{"role": "user", "content": "Price?"},
    ...                    {"role": "assistant", "content": "A checkup at Oak Dental costs $80."}], "x"))
    ['80', 'Oak', 'Dental']
    """
    text = example.target
    facts = [m.rstrip(".,;") for m in _CONTACT.findall(text)]
    facts += _NUMBER.findall(_CONTACT.sub(" ", text))
    for m in _WORD.finditer(text):
        word, before = m.group(), text[: m.start()].rstrip()
        opens_sentence = not before or before[-1] in ".!?:\n\"'“(-"
        if word[0].isupper() and not opens_sentence and word != "I" and word not in facts:
            facts.append(word)
    extra = example.meta.get("key_facts")
    if isinstance(extra, list):
        facts.extend(str(f) for f in extra if str(f).strip())
    return list(dict.fromkeys(facts))  # each once, in order


def _has(text: str, fact: str) -> bool:
    if _NUMBER.fullmatch(fact):  # 80 must not match inside 800 or 8.80
        return re.search(rf"(?<![\d.,]){re.escape(fact)}(?![\d])", text) is not None
    return fact.lower() in text.lower()


def judge(example: Example, rewrite: str) -> str | None:
    """Why ``rewrite`` is rejected (``missing fact '80'``, ``parrots the instruction``, ...), or None to keep it."""
    text = rewrite.strip()
    if not text:
        return "empty"
    if len(text) > 3 * len(example.target) + 200:
        return "too long"
    low = text.lower()
    question = example.prompt_text.strip().lower()
    if any(m in low for m in _TEMPLATE_MARKERS) or (len(question) >= 20 and question in low):
        return "parrots the instruction"
    words = _WORD.findall(low)
    qwords = set(_WORD.findall(question))
    if words and qwords and sum(w in qwords for w in words) / len(words) > 0.8:
        return "parrots the question"
    if _PREAMBLE.search(text):
        return "adds a preamble"
    for fact in key_facts(example):
        if not _has(text, fact):
            return f"missing fact {fact!r}"
    content = {w for w in _WORD.findall(example.target.lower()) if len(w) > 2 and w not in STOPWORDS}
    if content and len(content & set(words)) / len(content) < MIN_WORD_RECALL:
        return "drifts from the reference"
    return None


def rewrite_request(example: Example, system_prompt: str | None = None) -> list[dict]:
    """The conversation that asks the base model to rewrite ``example``'s answer."""
    content = TEMPLATE.format(question=example.prompt_text, answer=example.target)
    return Example([{"role": "user", "content": content}, {"role": "assistant", "content": ""}],
                   example.id).prompt(system_prompt)


def _fingerprint(example: Example) -> str:
    """Cache key: a changed question or reference answer means a new rewrite."""
    return hashlib.sha256(json.dumps([example.id, example.prompt_text, example.target]).encode()).hexdigest()[:16]


def _read_cache(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["fingerprint"]] = rec
    return out


def self_distill(examples: list[Example], generate_fn: Generator, cache_dir: Path | None = None,
                 system_prompt: str | None = None) -> tuple[list[Example], dict]:
    """Examples with accepted rewrites as targets, and counts (kept share, rejection reasons).

    >>> new, info = self_distill(train, lambda convs: generate(model, tok, convs), run.path / "targets")
    >>> info["self_distill_kept_share"]
    0.74
    """
    cache_path = cache_dir / CACHE_NAME if cache_dir else None
    cache = _read_cache(cache_path) if cache_path else {}
    todo = [ex for ex in examples if _fingerprint(ex) not in cache]
    if todo:
        answers = generate_fn([rewrite_request(ex, system_prompt) for ex in todo])
        for ex, answer in zip(todo, answers):
            reason = judge(ex, answer)
            cache[_fingerprint(ex)] = {"id": ex.id, "fingerprint": _fingerprint(ex), "rewrite": answer.strip(),
                            "kept": reason is None, "reason": reason or ""}
    records = [cache[_fingerprint(ex)] for ex in examples]
    if cache_path and todo:
        from ...rundir import atomic_write_text

        atomic_write_text(cache_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    out, reasons = [], {}
    for ex, rec in zip(examples, records):
        if rec["kept"]:
            out.append(_with_target(ex, rec["rewrite"]))
        else:
            out.append(ex)
            key = rec["reason"].split(" '")[0]  # "missing fact '80'" -> "missing fact"
            reasons[key] = reasons.get(key, 0) + 1
    kept = sum(r["kept"] for r in records)
    info = {"self_distill_kept": kept, "self_distill_examples": len(examples),
            "self_distill_kept_share": round(kept / len(examples), 4) if examples else 0.0,
            "self_distill_rejected": reasons, "self_distill_generated": len(todo)}
    return out, info


def _with_target(example: Example, answer: str) -> Example:
    last = max(i for i, m in enumerate(example.messages) if m["role"] == "assistant")
    messages = [dict(m) for m in example.messages]
    messages[last]["content"] = answer
    return dataclasses.replace(example, messages=messages, meta={**example.meta, "original_target": example.target})



@DATA_PLUGINS.register("self_distill")
class SelfDistill(Plugin):
    """``targets.self_distill``: answers rewritten in the base model's words, cached in the run directory."""

    name = "self_distill"
    keys = ("targets.self_distill", "targets.self_distill_max_new_tokens")
    order = 10

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.targets.self_distill

    def transform_examples(self, examples, env):
        import sys

        from ... import console
        from ...generate import GenerationSettings, generate

        need_model(env.model, "targets.self_distill")
        recipe = env.recipe
        settings = GenerationSettings(max_new_tokens=recipe.targets.self_distill_max_new_tokens,
                                      batch_size=recipe.eval.batch_size)
        env.model.to(env.device)

        def rewrite(conversations):
            # generation is the slow part of data preparation: show it (on a terminal only, not in logs)
            with console.progress(len(conversations), disable=not sys.stderr.isatty(), desc="self-distilling") as bar:
                return generate(env.model, env.tokenizer, conversations, settings, progress=bar)

        cache = Path(env.run_path) / "targets" if env.run_path else None
        return self_distill(examples, rewrite, cache, recipe.data.system_prompt)
