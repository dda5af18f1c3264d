"""Self-generated replay: the base model's own answers to general instructions, as chat examples.

Replay mixes general examples into fine-tuning so the model keeps practising what it could do. The
examples here are the *base model's own* answers to ``general_prompts.txt`` (about 200
hand-written everyday instructions), **sampled** from its distribution (temperature 1, no top-k or
top-p): the cross-entropy on samples of the base model is, in expectation, the divergence from the
base on those prompts, so replaying them pulls the fine-tuned model back towards the base's whole
distribution. Greedy answers are its mode instead: training on them sharpens the distribution, and
in benchmarks/README.md "1c" 20% greedy self-replay *raised* general-text perplexity (+12.1% vs +4.2%
without replay, full fine-tuning at 1e-4, seed 0). Two reasons to use the base model's own answers
rather than general text written by someone else:

* They have low perplexity under the base model by construction, so training on them asks for
  almost no weight change: they cost little learning capacity and pull the output distribution back
  towards the base model's, not towards a third party's style. "Self-Distillation Bridges
  Distribution Gap in Language Model Fine-Tuning" (arXiv 2402.13669) shows that fine-tuning on the
  model's own wording forgets less than on foreign targets; rehearsing on what the model generates
  itself is "LAMOL" (arXiv 1909.03329) and "Mitigating Catastrophic Forgetting in Large Language
  Models with Self-Synthesized Rehearsal" (arXiv 2403.01244), which keeps general ability without
  the original training data, the situation of every user of a released checkpoint.
* They are not what forgetting is measured on. The capitals file and chatterbot-corpus trivia
  (``data/reference.py``) are measurement-only; general-text perplexity is measured on Wikipedia
  paragraphs, so replaying other Wikipedia paragraphs would flatter that number. The prompts name
  no country or capital and ask none of the measured questions (a test checks it).

The answers are generated once per model and cached in ``cache_dir()/replay/<model>-<key>.jsonl``;
the key covers the model's name and a checksum of its embedding weights, the prompt set (a hash of
the file) and the generation settings, so a changed model, prompt file or budget never reuses stale
answers. The cache grows as more prompts are asked for and is rewritten atomically. Answers cut off
by the token budget are trimmed to their last full sentence (a cut answer would teach the model to
stop mid-sentence); answers left empty or looping are skipped and the next prompt is used instead.

>>> examples = self_replay_examples(model, tokenizer, n=40, seed=0)
>>> examples[0].source
'replay:self-generated'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
from functools import lru_cache
from pathlib import Path

from ..generate import GenerationSettings, generate_text
from .example import Example

SOURCE = "replay:self-generated"
PROMPTS_FILE = Path(__file__).with_name("general_prompts.txt")
MIN_ANSWER_CHARS = 20  # shorter than this after trimming: not a useful answer
MAX_REPETITION = 0.3  # share of repeated word trigrams above which an answer is a loop


@lru_cache(maxsize=1)
def general_prompts() -> tuple[str, ...]:
    """The shipped general instructions (comments and blank lines dropped), in file order."""
    lines = PROMPTS_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(dict.fromkeys(ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")))


def prompt_set_version() -> str:
    """A short hash of the prompt set: any edit to the prompts gives new cache keys."""
    return hashlib.sha256("\n".join(general_prompts()).encode()).hexdigest()[:12]


def _model_identity(model) -> tuple[str, str]:
    """(name, weights checksum): the name alone cannot tell two trainings saved to one folder apart."""
    config = getattr(model, "config", None)
    name = str(getattr(config, "_name_or_path", "") or getattr(model, "name_or_path", "") or "model")
    import torch

    emb = model.get_input_embeddings().weight.detach()
    rows = emb[:: max(1, emb.shape[0] // 4096)]  # a strided subset keeps it cheap
    total, spread = emb.sum(dtype=torch.float64).item(), rows.abs().sum(dtype=torch.float64).item()
    checksum = f"{total:.10e}:{spread:.10e}:{emb.dtype}"
    return name, checksum


def cache_path(model, settings: GenerationSettings) -> Path:
    """Where ``model``'s answers with ``settings`` are cached."""
    from ..models import cache_dir

    name, checksum = _model_identity(model)
    key = json.dumps({"model": name, "weights": checksum, "prompt_set": prompt_set_version(),
                      "generation": {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample}},
                     sort_keys=True)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name.rstrip("/\\")).name or "model").strip("-.") or "model"
    return cache_dir() / "replay" / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"


def _read_cache(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:  # first line: what the key covers
        try:
            row = json.loads(line)
            rows[row["prompt"]] = row
        except (json.JSONDecodeError, KeyError, TypeError):
            return {}  # a damaged cache is regenerated, never trusted
    return rows


def _write_cache(path: Path, model, settings: GenerationSettings, rows: dict[str, dict]) -> None:
    from ..rundir import atomic_write_text

    name, checksum = _model_identity(model)
    header = {"model": name, "weights": checksum, "prompt_set": prompt_set_version(),
              "generation": settings.to_dict(), "source": SOURCE}
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [header, *rows.values()]))


def clean_answer(text: str, truncated: bool) -> str | None:
    """The answer to keep, or None: cut answers end at their last full sentence; loops are dropped.

    >>> clean_answer("Ice is less dense than water. So it", truncated=True)
    'Ice is less dense than water.'
    """
    from ..evaluate.metrics import repetition_rate

    text = text.strip()
    if truncated:
        ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)|\n", text)]
        text = text[: ends[-1]].strip() if ends else ""
    if len(text) < MIN_ANSWER_CHARS or repetition_rate(text) > MAX_REPETITION:
        return None
    return text


def _generate(model, tokenizer, prompts: list[str], settings: GenerationSettings, progress: bool) -> list[dict]:
    """Raw sampled answers of the base model (adapter switched off if ``model`` has one)."""
    import sys

    from tqdm.auto import tqdm

    from .tokenize import render

    rendered = [render(tokenizer, [{"role": "user", "content": p}], add_generation_prompt=True) for p in prompts]
    off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    with tqdm(total=len(prompts), desc="self-replay answers (base model)", unit="prompt", disable=not progress,
              file=sys.stderr, dynamic_ncols=True, mininterval=0.5, leave=False) as bar, off:
        answers = generate_text(model, tokenizer, rendered, settings, progress=bar)
    rows = []
    for p, a in zip(prompts, answers):
        # Decoding drops the end token, so a cut answer is one that used (nearly) the whole budget.
        used = len(tokenizer(a, add_special_tokens=False)["input_ids"])
        rows.append({"prompt": p, "answer": a, "truncated": used >= settings.max_new_tokens - 2})
    return rows


def self_replay_examples(model, tokenizer, n: int, seed: int = 0, max_new_tokens: int = 128, batch_size: int = 16,
                         progress: bool = True) -> list[Example]:
    """Up to ``n`` chat examples: a seeded choice of general prompts with the base model's own answers.

    Answers are generated only for prompts not yet in the cache (batched, with a progress bar). Fewer
    than ``n`` come back when the prompt set runs out (about 200 prompts; repeat them if more are needed)
    or when the model leaves too many answers unusable (at most ``2n + 32`` prompts are tried).

    >>> ex = self_replay_examples(model, tok, n=2, seed=0)
    >>> [m["role"] for m in ex[0].messages], ex[0].source
    (['user', 'assistant'], 'replay:self-generated')
    """
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=True)
    order = list(general_prompts())
    random.Random(seed).shuffle(order)
    path = cache_path(model, settings)
    rows = _read_cache(path)
    kept: list[tuple[str, str]] = []
    nxt, budget = 0, min(len(order), 2 * n + 32)  # a model that rarely finishes an answer is not asked everything
    while len(kept) < n and nxt < budget:
        batch = order[nxt: min(budget, nxt + (n - len(kept)))]
        nxt += len(batch)
        missing = [p for p in batch if p not in rows]
        if missing:
            for row in _generate(model, tokenizer, missing, settings, progress):
                rows[row["prompt"]] = row
            _write_cache(path, model, settings, rows)
        for p in batch:
            answer = clean_answer(rows[p]["answer"], rows[p]["truncated"])
            if answer is not None:
                kept.append((p, answer))
    version = prompt_set_version()
    return [Example(messages=[{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                    id=f"self-replay-{k}", source=SOURCE, meta={"prompt_set": version})
            for k, (p, a) in enumerate(kept)]
