"""A finished run, loaded and ready to answer: the fine-tuned model, the base model on demand, the run's
chat template and system prompt, and the context budget that keeps a conversation inside the model.

The base model comes from :class:`~smalltune.train.artifact.ModelPair`, exactly as evaluation gets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import SmalltuneError
from ..generate import GenerationSettings, generate_text
from ..models import prompt_learning
from ..train.artifact import ModelPair

MODELS = ("finetuned", "base")
LABELS = {"finetuned": "fine-tuned", "base": "base model"}


@dataclass
class Session:
    model: Any  # the fine-tuned model (a PeftModel for adapter methods), eval mode
    tokenizer: Any
    recipe: Any
    run_dir: Path
    context: int  # tokens the model attends to: prompt and answer together
    settings: GenerationSettings
    _models: ModelPair = field(init=False, repr=False)

    def __post_init__(self):
        self._models = ModelPair(self.model, self.recipe)

    @property
    def system_prompt(self) -> str | None:
        return self.recipe.data.system_prompt

    @property
    def device(self):
        return next(self.model.parameters()).device

    def use(self, which: str):
        """A context yielding the model called ``which`` ("finetuned" or "base") ready for inference."""
        return self._models.use(which)

    def render(self, messages: list[dict]) -> str:
        from ..data.tokenize import render

        return render(self.tokenizer, messages, add_generation_prompt=True)

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def fit(self, history: list[dict]) -> tuple[list[dict], int]:
        """The messages to send (system prompt, then the newest turns that fit beside the answer's
        ``max_new_tokens``) and how many old messages were left out.

        >>> session.fit([{"role": "user", "content": "Hi"}])
        ([{'role': 'system', ...}, {'role': 'user', 'content': 'Hi'}], 0)
        """
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        if history and history[0]["role"] == "system":
            system, history = history[:1], history[1:]
        budget = self.context - self.settings.max_new_tokens
        start = 0
        # Drop whole exchanges (a user turn and its answer) from the front so roles keep alternating.
        while True:
            messages = system + history[start:]
            used = self.n_tokens(self.render(messages))
            if used <= budget:
                return messages, start
            if len(history) - start <= 1:
                raise SmalltuneError(
                    f"the message takes {used} tokens with the chat template, but the model's context of "
                    f"{self.context} tokens leaves {max(budget, 0)} beside {self.settings.max_new_tokens} tokens "
                    "for the answer; shorten it or lower --max-new-tokens")
            start += 2

    def stream(self, messages: list[dict], which: str, out: TextIO) -> str:
        """Answer ``messages`` with one model, writing tokens to ``out`` as they come; return the answer."""
        from transformers import TextStreamer

        started = []

        class Echo(TextStreamer):  # TextStreamer prints to stdout; ours writes where we are told
            def on_finalized_text(self, text: str, stream_end: bool = False):
                if not started:  # leading whitespace is stripped from the answer too
                    text = text.lstrip()
                    started.extend([True] if text else [])
                out.write(text + ("\n" if stream_end else ""))
                out.flush()

        enc = self.tokenizer(self.render(messages), return_tensors="pt", add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        s = self.settings
        with self.use(which) as model:
            ids = model.generate(**enc, max_new_tokens=s.max_new_tokens, do_sample=s.do_sample,
                                 streamer=Echo(self.tokenizer, skip_prompt=True, skip_special_tokens=True),
                                 pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    def answers(self, conversations: list[list[dict]], which: str) -> list[str]:
        """Greedy answers to many conversations at once (batched, each fitted to the context)."""
        prompts = [self.render(self.fit(conv)[0]) for conv in conversations]
        with self.use(which) as model:
            return generate_text(model, self.tokenizer, prompts, self.settings)


def model_context(model, tokenizer) -> int:
    """Tokens the model can attend to: the smaller of its position limit and the tokenizer's, less any
    virtual tokens a prompt-learning adapter prepends."""
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 10**8]  # tokenizers say 1e30 for "no limit"
    context = min(limits) if limits else 2048
    if peft_config := prompt_learning(model):
        context -= int(peft_config.num_virtual_tokens)
    return context


def open_session(run_dir: str | Path, max_new_tokens: int = 256, context: int | None = None,
                 batch_size: int = 8) -> Session:
    """Load a finished run for answering (every method), on the GPU when there is one.

    >>> s = open_session("runs/try1")
    >>> s.answers([[{"role": "user", "content": "When are you open?"}]], "finetuned")
    """
    import torch

    from ..train import load_trained

    model, tok, recipe = load_trained(run_dir)
    if torch.cuda.is_available():
        model.to("cuda")
    limit = model_context(model, tok)
    if context is not None and context > limit:
        raise SmalltuneError(f"--context {context} exceeds the model's context of {limit} tokens")
    ctx = context or limit
    if max_new_tokens >= ctx:
        raise SmalltuneError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in a context of {ctx} tokens")
    return Session(model=model, tokenizer=tok, recipe=recipe, run_dir=Path(run_dir), context=ctx,
                   settings=GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size))
