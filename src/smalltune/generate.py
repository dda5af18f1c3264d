"""Batched greedy generation with a KV cache, used by the demo and by evaluation.

Prompts are left-padded so every row's next token sits in the last column; padding is masked by
the attention mask (SmolLM2's pad token is its end token, so ids cannot tell them apart).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .data.tokenize import render
from .recipe import EvalSection

_EVAL = EvalSection()  # without settings, generate as `smalltune evaluate` does with a default recipe


@dataclass
class GenerationSettings:
    max_new_tokens: int = _EVAL.max_new_tokens
    batch_size: int = _EVAL.batch_size
    do_sample: bool = False  # greedy: reproducible, and what memorization tests need
    seed: int = 0  # sampling only: the draws of each batch are seeded (the global RNG is left untouched)

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
                  progress=None) -> list[str]:
    """Continuations of already rendered prompt strings (e.g. a chat prompt plus the start of an answer).

    >>> generate_text(model, tok, ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello"])
    ['! How can I help you today?']
    """
    s = settings or GenerationSettings()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths, less padding
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    try:
        for start in range(0, len(order), s.batch_size):
            idx = order[start: start + s.batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            # Sampling draws from the model's own distribution: temperature 1 and no top-k/top-p truncation,
            # whatever the model's generation_config suggests for chat.
            sampling = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if s.do_sample else dict(do_sample=False)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(s.seed + start)
                out = model.generate(**enc, max_new_tokens=s.max_new_tokens, **sampling,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            for i, row in zip(idx, new):
                answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
            if progress is not None:
                progress.update(len(idx))
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return answers
