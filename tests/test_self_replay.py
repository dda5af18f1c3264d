"""Self-generated replay: prompts apart from the measurement data, answers cached per model and
reused, well-formed chat examples."""

from __future__ import annotations

import pytest

from smalltune.data import self_replay as sr
from smalltune.data.reference import _package_file, capital_pairs, general_questions
from smalltune.evaluate import metrics as M


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMALLTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from smalltune.models import load_model

    return load_model(str(tiny_model_dir))[0]


class FakeGenerator:
    """Stands in for generate_text: records the prompts it is asked, answers with a sentence per prompt."""

    def __init__(self, loop_on: str = ""):
        self.calls: list[list[str]] = []
        self.loop_on = loop_on

    def __call__(self, model, tokenizer, prompts, settings, progress=None):
        self.calls.append(list(prompts))
        if progress is not None:
            progress.update(len(prompts))
        return ["yes no " * 20 if self.loop_on and self.loop_on in p else f"A careful answer, number {len(p)}."
                for p in prompts]

    @property
    def asked(self) -> int:
        return sum(len(c) for c in self.calls)


def _chatterbot_questions() -> set[str]:
    import yaml

    out = set()
    for f in _package_file("chatterbot_corpus", "data", "english").glob("*.yml"):
        for conv in (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("conversations", []):
            out |= {M.normalize(x) for x in conv if isinstance(x, str)}
    return out


def test_prompts_are_apart_from_what_forgetting_is_measured_on():
    prompts = sr.general_prompts()
    assert 150 <= len(prompts) <= 300 and len(set(map(M.normalize, prompts))) == len(prompts)
    measured = [set(M.content_words(q)) for _, q, _ in general_questions()]
    chatter = _chatterbot_questions()
    places = {w.lower() for pair in capital_pairs() for w in pair}
    for p in prompts:
        words = set(M.content_words(p))
        assert M.normalize(p) not in chatter, p
        assert not words & places, (p, words & places)
        # no measured question asked in other words: at most half of either's key words shared
        assert all(len(words & q) <= 0.5 * min(len(words), len(q)) for q in measured if q), p


def test_cache_is_reused_and_grows_only_by_the_missing_prompts(tiny, tokenizer, monkeypatch):
    fake = FakeGenerator()
    monkeypatch.setattr(sr, "generate_text", fake)
    first = sr.self_replay_examples(tiny, tokenizer, n=5, seed=1, max_new_tokens=16, progress=False)
    assert fake.asked == 5 and len(first) == 5
    path = sr.cache_path(tiny, sr.GenerationSettings(max_new_tokens=16, do_sample=True))
    assert path.parent.name == "replay" and path.suffix == ".jsonl" and path.exists()

    again = sr.self_replay_examples(tiny, tokenizer, n=5, seed=1, max_new_tokens=16, progress=False)
    assert fake.asked == 5  # served from the cache: the generator was not called again
    assert [e.messages for e in again] == [e.messages for e in first]

    more = sr.self_replay_examples(tiny, tokenizer, n=8, seed=1, max_new_tokens=16, progress=False)
    assert fake.asked == 8  # the same seed draws the same first five, so only three were new
    assert [e.messages for e in more[:5]] == [e.messages for e in first]


def test_cache_is_keyed_by_model_and_settings(tiny, tiny_model_dir, tokenizer, monkeypatch):
    import torch

    from smalltune.models import load_model

    other, _ = load_model(str(tiny_model_dir))  # same name, retrained weights
    with torch.no_grad():
        other.get_input_embeddings().weight.add_(0.01)
    s16, s32 = sr.GenerationSettings(max_new_tokens=16), sr.GenerationSettings(max_new_tokens=32)
    assert len({sr.cache_path(tiny, s16), sr.cache_path(other, s16), sr.cache_path(tiny, s32)}) == 3
    assert sr.cache_path(tiny, s16) == sr.cache_path(load_model(str(tiny_model_dir))[0], s16)

    fake = FakeGenerator()
    monkeypatch.setattr(sr, "generate_text", fake)
    sr.self_replay_examples(tiny, tokenizer, n=3, seed=0, max_new_tokens=16, progress=False)
    sr.self_replay_examples(other, tokenizer, n=3, seed=0, max_new_tokens=16, progress=False)
    assert fake.asked == 6  # the other model's answers are its own


def test_examples_are_well_formed_chat_examples(tiny, tokenizer, monkeypatch):
    from smalltune.data import tokenize_examples

    monkeypatch.setattr(sr, "generate_text", FakeGenerator())
    examples = sr.self_replay_examples(tiny, tokenizer, n=12, seed=0, max_new_tokens=16, progress=False)
    assert len(examples) == 12 and len({e.id for e in examples}) == 12
    for e in examples:
        assert e.source == sr.SOURCE == "replay:self-generated"
        assert [m["role"] for m in e.messages] == ["user", "assistant"]
        assert e.messages[0]["content"] in sr.general_prompts() and e.target.startswith("A careful answer")
    items, stats = tokenize_examples(tokenizer, examples, 128)
    assert len(items) == 12 and all(t.n_trainable > 0 for t in items)


def test_bad_answers_are_trimmed_or_replaced(tiny, tokenizer, monkeypatch):
    assert sr.clean_answer("Ice is less dense than water. So it floa", truncated=True) == "Ice is less dense than water."
    assert sr.clean_answer("Ice is less dense than water. So it floa", truncated=False) is not None
    assert sr.clean_answer("no sentence ever ends here and it goes on", truncated=True) is None
    assert sr.clean_answer("the cat the cat the cat the cat the cat the cat.", truncated=False) is None

    import random

    order = list(sr.general_prompts())
    random.Random(0).shuffle(order)
    monkeypatch.setattr(sr, "generate_text", FakeGenerator(loop_on=order[1]))
    examples = sr.self_replay_examples(tiny, tokenizer, n=4, seed=0, max_new_tokens=16, progress=False)
    assert [e.messages[0]["content"] for e in examples] == [order[0], *order[2:5]]  # the looping one replaced


def test_real_generation_uses_the_base_model_under_an_adapter(tiny, tokenizer, cache, monkeypatch):
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from smalltune.data.tokenize import render

    # A random model rarely ends a sentence, so most answers are dropped: keep the prompt set small.
    few = sr.general_prompts()[:6]
    monkeypatch.setattr(sr, "general_prompts", lambda: few)
    settings = sr.GenerationSettings(max_new_tokens=8, do_sample=True)
    plain = sr.self_replay_examples(tiny, tokenizer, n=3, seed=0, max_new_tokens=8, progress=False)
    base_rows = sr._read_cache(sr.cache_path(tiny, settings))
    assert set(base_rows) <= set(few) and len(base_rows) >= 3 and all(e.source == sr.SOURCE for e in plain)

    tuned = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)  # an adapter that changes the answers
    rendered = [render(tokenizer, [{"role": "user", "content": p}], add_generation_prompt=True) for p in base_rows]
    with_adapter = sr.generate_text(tuned, tokenizer, rendered, settings)
    assert with_adapter != [r["answer"] for r in base_rows.values()]

    monkeypatch.setenv("SMALLTUNE_CACHE", str(cache.parent / "cache-adapter"))
    sr.self_replay_examples(tuned, tokenizer, n=3, seed=0, max_new_tokens=8, progress=False)
    adapter_rows = sr._read_cache(sr.cache_path(tuned, settings))
    assert set(adapter_rows) == set(base_rows)
    assert all(base_rows[p]["answer"] == adapter_rows[p]["answer"] for p in base_rows)  # the base answered


def test_a_model_that_never_finishes_an_answer_is_not_asked_every_prompt(tiny, tokenizer, monkeypatch):
    fake = FakeGenerator(loop_on=" ")  # every prompt has a space: every answer loops
    monkeypatch.setattr(sr, "generate_text", fake)
    assert sr.self_replay_examples(tiny, tokenizer, n=4, seed=0, max_new_tokens=16, progress=False) == []
    assert fake.asked == 2 * 4 + 32 < len(sr.general_prompts())


def test_self_replay_samples_the_base_distribution_reproducibly(tiny, tokenizer):
    """Replayed answers are samples of the base model (temperature 1), not its greedy mode; each batch's
    draws are seeded, so a cache built twice holds the same answers, and the caller's RNG is untouched."""
    import torch

    from smalltune.data.tokenize import render

    rendered = [render(tokenizer, [{"role": "user", "content": p}], add_generation_prompt=True)
                for p in sr.general_prompts()[:6]]
    sampled = sr.GenerationSettings(max_new_tokens=12, do_sample=True)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = sr.generate_text(tiny, tokenizer, rendered, sampled)
    assert torch.equal(torch.get_rng_state(), before)
    assert sr.generate_text(tiny, tokenizer, rendered, sampled) == first
    other_seed = sr.generate_text(tiny, tokenizer, rendered, sr.GenerationSettings(max_new_tokens=12, do_sample=True, seed=7))
    greedy = sr.generate_text(tiny, tokenizer, rendered, sr.GenerationSettings(max_new_tokens=12))
    assert other_seed != first and greedy != first
