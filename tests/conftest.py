"""Shared fixtures: a tiny random Llama with the built-in model's real tokenizer, and data writers.

The tokenizer comes from the built-in package (converted once into the user cache), so tests never
touch a hub; the model is 2 layers of width 32, so a training step takes milliseconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _answer_cache(tmp_path_factory, monkeypatch):
    """Each test keeps base-model answers in a folder of its own (never the user's cache, never another test's)."""
    monkeypatch.setenv("SMALLTUNE_ANSWER_CACHE", str(tmp_path_factory.mktemp("answers")))


@pytest.fixture(autouse=True)
def _fp32_under_auto(request, monkeypatch):
    """``precision: auto`` times one decoder layer in fp32 and under bf16 autocast. On the width-32 test model that
    is noise (0.69x to 1.94x in three runs of one test under load), so a test's runs took different precisions at
    random and missed exact comparisons. Here the timing says "equal", so auto keeps fp32; a test that wants bf16
    sets it, and test_precision.py tests the measurement itself. Subprocesses still measure: pin fp32 there."""
    if request.module.__name__ != "test_precision":
        from smalltune.train import precision

        monkeypatch.setattr(precision, "time_layer", lambda config, rows, seq, trainable: (1.0, 1.0))


@pytest.fixture(scope="session")
def tokenizer():
    from smalltune.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """Folder with a 2-layer, width-32 random Llama and the real SmolLM2 tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def chat(user: str, assistant: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], **extra}


FACTS = {
    "hours": "We are open from 9 am to 5 pm on weekdays.",
    "prices": "A checkup costs $80 and a cleaning costs $95.",
    "location": "The clinic is at 12 Oak Road in Millford.",
}
QUESTIONS = {
    "hours": ["When are you open?", "What are your opening hours?", "Are you open on weekdays?", "When do you close?"],
    "prices": ["How much is a checkup?", "What does a cleaning cost?", "What are your prices?", "Is a checkup expensive?"],
    "location": ["Where are you?", "What is your address?", "How do I find the clinic?", "Which street are you on?"],
}


def toy_records(n: int = 36) -> list[dict]:
    """n chat examples over three categories with fixed answers (easy to learn, easy to memorise)."""
    cats = list(FACTS)
    out = []
    for i in range(n):
        c = cats[i % len(cats)]
        q = QUESTIONS[c][(i // len(cats)) % len(QUESTIONS[c])]
        out.append(chat(q if i < len(cats) * 4 else f"{q} (#{i})", FACTS[c], id=f"ex-{i}", category=c))
    return out


@pytest.fixture
def toy_data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", toy_records())


@pytest.fixture
def make_recipe(tmp_path, tiny_model_dir, toy_data):
    """Build a validated recipe for the tiny model: ``make_recipe(**{"train.lr": 1e-3})``."""
    from smalltune.recipe import recipe_from_dict

    def build(**overrides):
        raw = {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(toy_data), "max_length": 128},
            # a --resume checkpoint at every evaluation (the tests kill and resume at chosen steps)
            "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "seed": 0, "checkpoint_minutes": 0},
            "eval": {"every_steps": 3, "batch_size": 8},
            "output_dir": str(tmp_path / "run"),
        }
        return recipe_from_dict(raw, [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()])

    return build


def crash_at_call(monkeypatch, n: int):
    """Make the n-th loss computation from now raise, as if the process were killed mid-step."""
    from smalltune.train import loop

    real, calls = loop.causal_lm_loss, {"n": 0}

    def crash(*args):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(loop, "causal_lm_loss", crash)
    return lambda: monkeypatch.setattr(loop, "causal_lm_loss", real)
