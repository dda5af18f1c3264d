"""Batched generation: the shared chat-template opening runs once, and every answer is the one the
prompt gets alone (greedy), for a plain model, a LoRA model and its base, and prompt tuning."""

from __future__ import annotations

import pytest
import torch

from smalltune.data.tokenize import render
from smalltune.generate import MIN_SHARED_PREFIX, GenerationSettings, _batch, generate_text

QUESTIONS = ["When are you open?", "How much is a cleaning?", "Where is the clinic, and is there parking nearby?",
             "Hi", "Do you take new patients on Saturdays or only on weekdays?"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def prompts(tokenizer) -> list[str]:
    system = {"role": "system", "content": "You are the receptionist at Brightside Dental."}
    return [render(tokenizer, [system, {"role": "user", "content": q}], add_generation_prompt=True) for q in QUESTIONS]


def one_by_one(model, tokenizer, texts, n=12):
    return [generate_text(model, tokenizer, [t], GenerationSettings(max_new_tokens=n))[0] for t in texts]


def test_shared_prefix_is_run_once_and_padding_sits_after_it(tokenizer):
    rows = [tokenizer(t, add_special_tokens=False).input_ids for t in prompts(tokenizer)]
    batch = _batch(rows, tokenizer.pad_token_id, "cpu")
    shared = batch["prefix"].shape[1]
    assert shared >= MIN_SHARED_PREFIX and all(r[:shared] == rows[0][:shared] for r in rows)
    for row, r in zip(range(len(rows)), rows):
        mask, ids = batch["attention_mask"][row], batch["input_ids"][row]
        assert int(mask.sum()) == len(r) and ids[mask.bool()].tolist() == r  # every own token, in order
        assert mask[:shared].all() and mask[-1] == 1  # the next token is in the last column
    assert _batch(rows, tokenizer.pad_token_id, "cpu", share=False)["prefix"].shape[1] == 0


def test_batched_answers_equal_one_prompt_at_a_time(tiny, tokenizer):
    texts = prompts(tokenizer)
    batched = generate_text(tiny, tokenizer, texts, GenerationSettings(max_new_tokens=12, batch_size=8))
    assert batched == one_by_one(tiny, tokenizer, texts)


@pytest.mark.parametrize("method", ["lora", "prompt"])
def test_adapters_and_their_base_answer_as_alone(tiny, tokenizer, method):
    import copy

    from peft import LoraConfig, PromptTuningConfig, get_peft_model

    config = (LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False) if method == "lora"
              else PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    model = get_peft_model(copy.deepcopy(tiny), config)
    texts = prompts(tokenizer)
    settings = GenerationSettings(max_new_tokens=12, batch_size=8)
    tuned = generate_text(model, tokenizer, texts, settings)
    assert tuned == one_by_one(model, tokenizer, texts)
    with model.disable_adapter():
        assert generate_text(model, tokenizer, texts, settings) == one_by_one(model, tokenizer, texts)
