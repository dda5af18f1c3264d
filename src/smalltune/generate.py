"""Batched greedy generation with a KV cache, used by the demo and by evaluation.

Prompts are sorted by length and batched; in a batch, the tokens every prompt starts with (a chat
template's opening) are run once, and each row's own tokens are right-aligned after masked padding so
every row's next token sits in the last column (SmolLM2's pad token is its end token, so ids cannot
tell padding apart: the attention mask does; prompt_batch.py). Greedy decoding keeps its batch full: an
answer that ends gives its place to the next prompt (greedy.py). Answers are those of one prompt at a time
(benchmarks/README.md, "The shared opening run once": 200/200 identical greedy answers, 1.5x faster;
"Finished rows leave the batch"; "Continuous batching").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .data.tokenize import render
from .greedy import greedy
from .models import prompt_learning
from .prompt_batch import by_opening, model_batch
from .recipe import EvalSection

_EVAL = EvalSection()  # without settings, generate as `smalltune evaluate` does with a default recipe


@dataclass
class GenerationSettings:
    max_new_tokens: int = _EVAL.max_new_tokens
    batch_size: int = _EVAL.batch_size
    do_sample: bool = False  # greedy: reproducible, and what memorization tests need
    seed: int = 0  # sampling only: the draws of each batch are seeded (the global RNG is left untouched)
    share_prefix: bool = True  # run a batch's common opening once (same answers; False: plain left padding)
    drop_finished: bool = True  # greedy: a row leaves the batch when it ends (same answers; False: model.generate)
    grow_cache: bool = True  # greedy: the KV cache grows by doubling (kv_cache.py; same answers; False: by torch.cat)
    continuous: bool = True  # greedy, growing cache: ended answers' places go to the next prompts (greedy.py; same
    # answers; False: one batch after another)

    def to_dict(self) -> dict:
        return asdict(self)


def generate(model, tokenizer, conversations: list[list[dict]], settings: GenerationSettings | None = None,
             progress=None) -> list[str]:
    """Answers (decoded, special tokens stripped) to each conversation's next assistant turn.

    >>> generate(model, tok, [[{"role": "user", "content": "Hi"}]])
    ['Hello! How can I help you today?']
    """
    prompts = [render(tokenizer, conv, add_generation_prompt=True) for conv in conversations]
    return generate_text(model, tokenizer, prompts, settings, progress)


@torch.no_grad()
def generate_text(model, tokenizer, prompts: list[str], settings: GenerationSettings | None = None,
                  progress=None, limits: list[int] | None = None) -> list[str]:
    """Continuations of already rendered prompt strings (e.g. a chat prompt plus the start of an answer).

    ``limits`` caps each prompt's new tokens on its own (default: ``settings.max_new_tokens`` for all), so
    prompts that need answers of different lengths share one pass: a greedy answer capped at k tokens is the
    first k tokens of a longer one, and greedy rows leave the batch at their own cap.

    >>> generate_text(model, tok, ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello"])
    ['! How can I help you today?']
    """
    s = settings or GenerationSettings()
    limits = list(limits) if limits is not None else [s.max_new_tokens] * len(prompts)
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    order = by_opening(ids)
    was_training = model.training
    model.eval()
    # peft's prefix and prompt tuning put their virtual tokens into the first step's cache or inputs themselves
    learning = prompt_learning(model)
    share = s.share_prefix and not learning
    try:
        if s.do_sample or not s.drop_finished or learning:
            new = []
            for start in range(0, len(order), s.batch_size):
                idx = order[start: start + s.batch_size]
                new += _generate_batch(model, tokenizer, [ids[i] for i in idx], [limits[i] for i in idx], s, share,
                                       seed=s.seed + start)
                if progress is not None:
                    progress.update(len(idx))
        else:
            new = greedy(model, [ids[i] for i in order], [limits[i] for i in order], tokenizer.eos_token_id,
                         tokenizer.pad_token_id, s.batch_size, share=share, grow=s.grow_cache,
                         continuous=s.continuous, progress=progress)
    finally:
        if was_training:
            model.train()
    answers: list[str] = [""] * len(prompts)
    for i, row in zip(order, new):
        answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return answers


def _generate_batch(model, tokenizer, rows: list[list[int]], caps: list[int], s: GenerationSettings, share: bool,
                    seed: int) -> list[list[int]]:
    """One batch through ``model.generate`` (sampling, prompt learning, or ``drop_finished: false``): each row's new
    token ids up to its end token and its own cap, as :func:`~smalltune.greedy.greedy` returns them."""
    # Sampling draws from the model's own distribution: temperature 1 and no top-k/top-p truncation,
    # whatever the model's generation_config suggests for chat.
    sampling = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if s.do_sample else dict(do_sample=False)
    device = next(model.parameters()).device
    batch = model_batch(model, rows, tokenizer.pad_token_id, share, s.grow_cache)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.generate(**batch, max_new_tokens=max(caps), **sampling, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    end = tokenizer.eos_token_id
    return [(row[:row.index(end)] if end in row else row)[:cap]
            for row, cap in zip(out[:, batch["input_ids"].shape[1]:].tolist(), caps)]
