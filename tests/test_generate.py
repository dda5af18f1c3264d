"""Batched generation: the shared chat-template opening runs once, and every answer is the one the
prompt gets alone (greedy), for a plain model, a LoRA model and its base, and prompt tuning."""

from __future__ import annotations

import pytest
import torch

from smalltune.data.tokenize import render
from smalltune.generate import GenerationSettings, generate_text
from smalltune.prompt_batch import MIN_SHARED_PREFIX, batch_rows

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


def alone(model, tokenizer, text, n=12, eos=None) -> list[int]:
    """One prompt through ``model.generate`` (the reference: no batching, no row dropping); its new token ids."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        row = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id if eos is None else eos)[0, ids.shape[1]:]
    return row.tolist()


def one_by_one(model, tokenizer, texts, n=12, eos=None):
    end = tokenizer.eos_token_id if eos is None else eos
    return [tokenizer.decode([i for i in alone(model, tokenizer, t, n, eos) if i != end],
                             skip_special_tokens=True).strip() for t in texts]


def test_shared_prefix_is_run_once_and_padding_sits_after_it(tokenizer):
    rows = [tokenizer(t, add_special_tokens=False).input_ids for t in prompts(tokenizer)]
    batch = batch_rows(rows, tokenizer.pad_token_id, "cpu")
    shared = batch["prefix"].shape[1]
    assert shared >= MIN_SHARED_PREFIX and all(r[:shared] == rows[0][:shared] for r in rows)
    for row, r in zip(range(len(rows)), rows):
        mask, ids = batch["attention_mask"][row], batch["input_ids"][row]
        assert int(mask.sum()) == len(r) and ids[mask.bool()].tolist() == r  # every own token, in order
        assert mask[:shared].all() and mask[-1] == 1  # the next token is in the last column
    assert batch_rows(rows, tokenizer.pad_token_id, "cpu", share=False)["prefix"].shape[1] == 0


def test_batched_answers_equal_one_prompt_at_a_time(tiny, tokenizer):
    texts = prompts(tokenizer)
    batched = generate_text(tiny, tokenizer, texts, GenerationSettings(max_new_tokens=12, batch_size=8))
    assert batched == one_by_one(tiny, tokenizer, texts)


@pytest.fixture(scope="module")
def varied(tokenizer):
    """A random model with large weights, which answers varied tokens (the fixture's repeats one), and a tokenizer
    whose end token is one that several of its answers produce: they end early, at different steps."""
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=1.0, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    counts = {}
    for row in (alone(model, tokenizer, t, eos=tokenizer.eos_token_id) for t in prompts(tokenizer)):
        for t in set(row):
            counts[t] = counts.get(t, 0) + 1
    eos = max(counts, key=counts.get)
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = tok.convert_ids_to_tokens(eos)
    return model, tok, eos


LIMITS = [3, 12, 5, 1, 8]  # each prompt's own cap


def test_rows_that_end_early_or_reach_their_cap_leave_the_batch_and_the_others_answer_as_alone(varied):
    model, tok, eos = varied
    texts = prompts(tok)
    lengths = {len(alone(model, tok, t, eos=eos)) for t in texts}
    assert len(lengths) > 1 and min(lengths) < 12  # rows end at different steps
    batched = generate_text(model, tok, texts, GenerationSettings(max_new_tokens=12, batch_size=8))
    assert batched == one_by_one(model, tok, texts, eos=eos)

    # Rows capped at their own lengths in one pass answer as alone with that cap, on both decoding paths.
    alone_capped = [one_by_one(model, tok, [t], n, eos=eos)[0] for t, n in zip(texts, LIMITS)]
    for drop in (True, False):
        settings = GenerationSettings(max_new_tokens=12, batch_size=8, drop_finished=drop)
        assert generate_text(model, tok, texts, settings, limits=LIMITS) == alone_capped
    assert alone_capped != batched  # the caps cut some answers short


@pytest.mark.parametrize("continuous", [True, False])
@pytest.mark.parametrize("batch_size", [2, 3])
def test_ended_answers_give_their_places_to_the_next_prompts_and_every_answer_is_alone(varied, monkeypatch,
                                                                                       continuous, batch_size):
    from smalltune import greedy
    from smalltune.kv_cache import GrowingCache

    model, tok, eos = varied
    texts = prompts(tok)
    joins, trims = [], []
    join, trim = greedy._Places.join, GrowingCache.trim
    monkeypatch.setattr(greedy._Places, "join", lambda self, chunk: joins.append(len(chunk.owners)) or join(self, chunk))
    monkeypatch.setattr(GrowingCache, "trim", lambda self, n: trims.append(n) or trim(self, n))
    settings = GenerationSettings(max_new_tokens=12, batch_size=batch_size, continuous=continuous)
    assert generate_text(model, tok, texts, settings, limits=LIMITS) == \
        [one_by_one(model, tok, [t], n, eos=eos)[0] for t, n in zip(texts, LIMITS)]
    if continuous:  # prompts joined a running batch, and positions nobody attended to any more left the window
        assert sum(joins) == len(texts) - batch_size and trims
    else:
        assert not joins and not trims


def test_a_longer_prompt_joining_widens_the_window_ahead(varied, monkeypatch):
    from smalltune import greedy

    model, tok, eos = varied
    short = prompts(tok)[3]  # "Hi"
    system = {"role": "system", "content": "You are the receptionist at Brightside Dental."}  # one opening: by length
    long = render(tok, [system, {"role": "user", "content": " ".join(QUESTIONS * 3)}], add_generation_prompt=True)
    widths = []
    join = greedy._Places.join
    monkeypatch.setattr(greedy._Places, "join",
                        lambda self, chunk: widths.append((chunk.mask.shape[1], self.mask.shape[1])) or join(self, chunk))
    texts, limits = [short, short + " Hello", long], [1, 6, 4]  # the first ends at once: the long one joins
    settings = GenerationSettings(max_new_tokens=12, batch_size=2)
    assert generate_text(model, tok, texts, settings, limits=limits) == \
        [one_by_one(model, tok, [t], n, eos=eos)[0] for t, n in zip(texts, limits)]
    assert widths and widths[0][0] > widths[0][1]  # wider than the window it joined


@pytest.mark.parametrize("method", ["lora", "prompt"])
def test_adapters_and_their_base_answer_as_alone(tiny, tokenizer, method):
    import copy

    from peft import LoraConfig, PromptTuningConfig, get_peft_model

    config = (LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False) if method == "lora"
              else PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    model = get_peft_model(copy.deepcopy(tiny), config)
    texts = prompts(tokenizer)
    # own caps and two places: answers end at different steps and the next prompts take their places
    settings = GenerationSettings(max_new_tokens=12, batch_size=2)
    alone_capped = lambda: [one_by_one(model, tokenizer, [t], n)[0] for t, n in zip(texts, LIMITS)]  # noqa: E731
    assert generate_text(model, tokenizer, texts, settings, limits=LIMITS) == alone_capped()
    with model.disable_adapter():
        assert generate_text(model, tokenizer, texts, settings, limits=LIMITS) == alone_capped()


# --- the KV cache that grows by doubling (kv_cache.py) ----------------------------------------------------------
def test_growing_layer_holds_what_dynamic_layer_holds_through_growth_row_drops_and_repeats():
    from transformers.cache_utils import DynamicLayer

    from smalltune.kv_cache import MIN_ROOM, GrowingLayer

    torch.manual_seed(0)
    grow, ref = GrowingLayer(), DynamicLayer()
    steps = [torch.randn(1, 3, 9, 4)]  # a shared prefix of 9 positions, then repeated for 4 rows
    for layer in (grow, ref):
        layer.update(steps[0], steps[0] * 2)
        layer.batch_repeat_interleave(4)
    for n in range(2 * MIN_ROOM):  # past two regrowths, with rows leaving on the way
        k = torch.randn(grow.keys.shape[0], 3, 1, 4)
        out = [layer.update(k, -k) for layer in (grow, ref)]
        assert all(torch.equal(a, b) for a, b in zip(*out))
        if n in (5, 70):
            keep = torch.tensor([0, 2]) if n == 5 else torch.tensor([1])
            for layer in (grow, ref):
                layer.batch_select_indices(keep)
    assert grow.get_seq_length() == ref.get_seq_length() == 9 + 2 * MIN_ROOM
    assert torch.equal(grow.keys, ref.keys) and torch.equal(grow.values, ref.values)
    assert grow.key_room.shape[-2] >= 2 * MIN_ROOM  # it grew instead of concatenating


def test_growing_layer_trims_its_window_and_places_other_rows_at_its_end():
    from smalltune.kv_cache import GrowingLayer

    torch.manual_seed(0)
    layer = GrowingLayer()
    first = torch.randn(3, 2, 5, 4)
    layer.update(first, -first)
    layer.trim(2)
    assert layer.get_seq_length() == 3 and torch.equal(layer.keys, first[..., 2:, :])
    other = torch.randn(2, 2, 2, 4)  # narrower than the window: rows 0 and 2 take its last two positions
    layer.place(torch.tensor([0, 2]), other, -other)
    assert torch.equal(layer.keys[[0, 2], :, 1:], other) and torch.equal(layer.values[[0, 2], :, 1:], -other)
    assert torch.equal(layer.keys[1], first[1, :, 2:]) and torch.equal(layer.keys[[0, 2], :, :1], first[[0, 2], :, 2:3])
    wide = torch.randn(1, 2, 7, 4)  # wider: the window widens ahead of the old rows (finite there: they are masked)
    layer.place(torch.tensor([1]), wide, -wide)
    assert layer.get_seq_length() == 7 and torch.equal(layer.keys[1], wide[0])
    assert torch.equal(layer.keys[[0, 2], :, 4:], torch.cat([first[[0, 2], :, 2:3], other], dim=2))
    assert torch.isfinite(layer.keys).all()
    step = torch.randn(3, 2, 1, 4)
    keys, values = layer.update(step, -step)
    assert keys.shape[-2] == 8 and torch.equal(keys[..., -1:, :], step) and torch.equal(values[..., -1:, :], -step)


def test_greedy_decoding_fills_a_growing_cache_where_it_fits(tiny, tokenizer, monkeypatch):
    from transformers import MistralConfig

    import smalltune.prompt_batch as G
    from smalltune.kv_cache import GrowingCache, fits

    made = []
    monkeypatch.setattr(G, "GrowingCache", lambda: made.append(GrowingCache()) or made[-1])
    texts = prompts(tokenizer)
    assert generate_text(tiny, tokenizer, texts, GenerationSettings(max_new_tokens=12, batch_size=8)) == \
        one_by_one(tiny, tokenizer, texts)
    assert made and made[0].get_seq_length() > 0  # the batch's cache was a growing one
    made.clear()
    settings = GenerationSettings(max_new_tokens=12, batch_size=8, grow_cache=False)  # transformers' own cache
    assert generate_text(tiny, tokenizer, texts, settings) == one_by_one(tiny, tokenizer, texts) and not made
    assert fits(tiny) and not fits(type("M", (), {"config": MistralConfig(sliding_window=16)})())


def test_under_autocast_the_growing_cache_holds_bf16_and_the_logits_are_those_of_an_fp32_cache(varied, monkeypatch):
    """Attention under autocast reads keys and values in bf16: the cache keeps them so (rounded once, when they
    enter) instead of holding fp32 keys that autocast casts again at every step, and every logit is the same."""
    from smalltune import kv_cache

    model, tok, _ = varied
    ids = tok(prompts(tok)[2], add_special_tokens=False, return_tensors="pt").input_ids

    def decode(cast):
        monkeypatch.setattr(kv_cache, "_as_attended", cast)
        cache, logits, step = kv_cache.GrowingCache(), [], ids
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for _ in range(4):
                out = model(input_ids=step, past_key_values=cache, use_cache=True)
                logits.append(out.logits[:, -1])
                step = out.logits[:, -1:].argmax(-1)
        return cache.layers[0].keys.dtype, cache.layers[0].values.dtype, torch.stack(logits)

    kept = decode(kv_cache._as_attended)
    plain = decode(lambda states: states)
    assert kept[:2] == (torch.bfloat16, torch.bfloat16) and plain[0] == torch.float32  # rotary keys leave in fp32
    assert torch.equal(kept[2], plain[2])


def test_prompts_batch_by_opening_then_by_length(tokenizer):
    from smalltune.prompt_batch import by_opening

    general = [render(tokenizer, [{"role": "user", "content": q}], add_generation_prompt=True) for q in QUESTIONS]
    texts = [t for pair in zip(prompts(tokenizer), general) for t in pair]  # the two openings interleaved
    rows = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    order = by_opening(rows)
    assert sorted(order) == list(range(len(rows)))
    groups = [order[:len(QUESTIONS)], order[len(QUESTIONS):]]
    assert {frozenset(g) for g in groups} == {frozenset(range(0, 10, 2)), frozenset(range(1, 10, 2))}
    for group in groups:  # within an opening, by length
        assert [len(rows[i]) for i in group] == sorted(len(rows[i]) for i in group)


def test_a_shared_opening_runs_once_per_pass_and_its_copies_hold_the_same_keys(tiny, tokenizer):
    from smalltune.prompt_batch import prefix_cache

    prefix = tokenizer(prompts(tokenizer)[0], add_special_tokens=False, return_tensors="pt").input_ids[:, :12]
    runs = []
    forward = tiny.forward
    tiny.forward = lambda *a, **k: runs.append(1) or forward(*a, **k)
    try:
        openings = {}
        with torch.no_grad():
            first = next(iter(prefix_cache(tiny, prefix, 3, openings=openings).values()))
            second = next(iter(prefix_cache(tiny, prefix, 2, openings=openings).values()))
            alone = next(iter(prefix_cache(tiny, prefix, 2).values()))
    finally:
        del tiny.forward
    assert len(runs) == 2  # once for the two batches that share it, once without ``openings``
    assert first.layers[0].keys.shape[0] == 3 and second.layers[0].keys.shape[0] == 2
    kept = next(iter(openings.values()))[1]
    assert kept.layers[0].keys.shape[0] == 1  # the kept opening stays one row
    assert all(torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
               for a, b in zip(second.layers, alone.layers))
