"""``train.precision: auto`` (issue 19): measured on a CPU at the model's shapes, cached, logged.

Timings are injected wherever a decision is asserted: the rule is tested, never that something is fast.
"""

from __future__ import annotations

import pytest
import torch

from smalltune import train
from smalltune.rundir import RunDir
from smalltune.train import precision as P
from smalltune.train.setup import resolve_precision


@pytest.fixture
def on_cpu(monkeypatch):
    """A CPU training device and an empty decision cache; returns the list of timed (rows, seq) shapes."""
    monkeypatch.setattr(P, "training_device", lambda: "cpu")
    monkeypatch.setattr(P, "_DECISIONS", {})
    return []


def timings(monkeypatch, calls: list, fp32: float, bf16: float) -> None:
    def fake(config, rows, seq, trainable):
        calls.append((rows, seq))
        return fp32, bf16

    monkeypatch.setattr(P, "time_layer", fake)


def test_the_rule_takes_bf16_only_when_clearly_faster():
    assert P.decide(1.0, 0.5) == ("bf16", "auto: bf16 autocast measured 2.00x, at least 1.15x")
    assert P.decide(1.0, 1 / 1.04) == ("fp32", "auto: bf16 autocast measured 1.04x, below 1.15x")
    assert P.decide(1.0, 1.25)[0] == "fp32"  # slower


@pytest.mark.parametrize("fp32, bf16, expected, mixed", [(1.0, 0.5, "bf16", "bf16"), (1.0, 1.5, "fp32", "no")])
def test_auto_follows_the_measurement_at_the_recipes_shapes(make_recipe, on_cpu, monkeypatch, fp32, bf16, expected,
                                                           mixed):
    timings(monkeypatch, on_cpu, fp32, bf16)
    recipe = make_recipe(**{"train.batch_size": 4, "data.max_length": 128})
    choice = P.choose_precision("auto", recipe)
    assert (choice.precision, choice.requested, choice.device) == (expected, "auto", "cpu")
    assert choice.ratio == pytest.approx(fp32 / bf16) and choice.to_dict()["ratio"] == round(fp32 / bf16, 3)
    assert choice.shape == {"batch": 4, "seq": 128, "rows": 4, "trainable": False, "hidden": 32}  # LoRA: frozen base
    assert resolve_precision("auto", recipe) == mixed  # accelerate's mixed_precision, from the same decision


def test_explicit_precisions_are_never_measured(make_recipe, on_cpu, monkeypatch):
    timings(monkeypatch, on_cpu, 1.0, 0.1)
    recipe = make_recipe()
    assert [resolve_precision(p, recipe) for p in ("fp32", "bf16", "fp16")] == ["no", "bf16", "fp16"]
    assert P.choose_precision("fp32", recipe).to_dict() == {"precision": "fp32", "requested": "fp32",
                                                              "reason": "set in the recipe", "device": ""}
    assert on_cpu == []


def test_the_decision_is_measured_once_per_model_and_batch_shape(make_recipe, on_cpu, monkeypatch):
    timings(monkeypatch, on_cpu, 1.0, 0.5)
    recipe = make_recipe()
    first = P.choose_precision("auto", recipe)
    assert P.choose_precision("auto", make_recipe()) is first  # a tuning trial or a fold: same shapes
    assert len(on_cpu) == 1
    P.choose_precision("auto", make_recipe(**{"train.batch_size": 2}))  # another batch shape: measured again
    assert on_cpu == [(4, 128), (2, 128)]


def test_nothing_is_measured_without_one_process_and_a_readable_model(make_recipe, on_cpu, monkeypatch, tmp_path):
    timings(monkeypatch, on_cpu, 1.0, 0.5)
    missing = P.choose_precision("auto", make_recipe(**{"model.name": str(tmp_path / "nowhere")}))
    assert missing.precision == "fp32" and missing.reason.startswith("auto: fp32, not measured (SmalltuneError:")
    assert P.choose_precision("auto").reason == "auto: fp32 (no model given to measure)"
    monkeypatch.setenv("WORLD_SIZE", "2")
    several = P.choose_precision("auto", make_recipe())
    assert (several.precision, several.reason) == ("fp32", "auto: fp32 with 2 processes (measured in one-process "
                                                           "runs only)")
    assert on_cpu == []


def test_the_real_measurement_times_one_layer_and_leaves_the_seeded_rng_alone(make_recipe, on_cpu):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    choice = P.choose_precision("auto", make_recipe(**{"method.name": "full"}))
    assert torch.equal(torch.rand(3), expected)  # random init of the measured layer drew from a forked RNG
    assert choice.precision in ("fp32", "bf16") and choice.fp32_seconds > 0 and choice.bf16_seconds > 0
    assert choice.shape["trainable"] and choice.reason.startswith("auto: bf16 autocast measured ")


def test_the_choice_and_its_ratio_are_in_the_start_event_and_the_header(make_recipe, on_cpu, monkeypatch, capsys):
    timings(monkeypatch, on_cpu, 1.0, 0.5)
    result = train(make_recipe(**{"train.max_steps": 2}), progress=False)
    start = next(r for r in RunDir(result.run_dir).read_metrics() if r.kind == "event" and r.event == "start")
    assert start.extra["precision"] == {
        "precision": "bf16", "requested": "auto", "reason": "auto: bf16 autocast measured 2.00x, at least 1.15x",
        "device": "cpu", "fp32_seconds": 1.0, "bf16_seconds": 0.5,
        "shape": {"batch": 4, "seq": 128, "rows": 4, "trainable": False, "hidden": 32}, "ratio": 2.0}
    header = " ".join(capsys.readouterr().err.split())
    assert "precision bf16 (auto: bf16 autocast measured 2.00x, at least 1.15x)" in header
    assert on_cpu == [(4, 128)]  # make_accelerator measured; the start event reused its decision


def test_a_resumed_run_keeps_the_precision_it_started_with(make_recipe, on_cpu, monkeypatch):
    """A new measurement on resume could cross the threshold and switch precision halfway through a run."""
    timings(monkeypatch, on_cpu, 1.0, 2.0)  # bf16 slower: the run starts in fp32
    recipe = make_recipe(**{"train.max_steps": 4, "eval.every_steps": 2})
    result = train(recipe, progress=False)
    P._DECISIONS.clear()  # a new process
    timings(monkeypatch, on_cpu, 1.0, 0.5)  # now bf16 would measure faster
    assert resolve_precision("auto", recipe) == "bf16"
    P._DECISIONS.clear()
    P.keep_recorded(recipe, result.run_dir)
    assert resolve_precision("auto", recipe) == "no"
    assert P.choose_precision("auto", recipe).reason.endswith("(when the run started; kept on resume)")
    assert len(on_cpu) == 2  # the start and the one new measurement above; keep_recorded measured nothing


# --- attention in fp32 under CPU bf16 autocast (train/attention.py) ------------------------------------------
def test_bf16_training_on_a_cpu_runs_attention_in_fp32_and_saves_a_plain_config(make_recipe, monkeypatch):
    import json
    from pathlib import Path

    import torch.nn.functional as F

    from smalltune.train.attention import NAME
    from smalltune.train.data import prepare_data
    from smalltune.train.setup import Base, setup

    seen = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda q, k, v, *a, **kw: seen.append((q.dtype, k.dtype, v.dtype)) or sdpa(q, k, v, *a, **kw))
    for precision, attention in (("fp32", "sdpa"), ("bf16", NAME)):
        recipe = make_recipe(**{"train.precision": precision, "method.name": "full", "train.max_steps": 1})
        base = Base.load(recipe)
        model, tok = base.fresh()
        parts = setup(recipe, model, tok, prepare_data(recipe, tok, model))
        assert parts.unwrapped.config._attn_implementation == attention, precision
    seen.clear()
    batch = next(iter(parts.loader))
    with parts.accelerator.autocast():
        logits = parts.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits.float().sum().backward()
    assert seen and all(dtypes == (torch.float32,) * 3 for dtypes in seen)  # under bf16 autocast
    result = train(make_recipe(**{"train.precision": "bf16", "method.name": "full", "train.max_steps": 2}),
                   progress=False)
    config = json.loads((Path(result.run_dir) / "model" / "config.json").read_text())
    assert NAME not in json.dumps(config)  # the saved model loads anywhere with its usual attention


def test_fp32_attention_leaves_other_attentions_and_fp32_alone(tiny_model_dir):
    from smalltune.models import load_model
    from smalltune.train.attention import fp32_attention

    model, _ = load_model(str(tiny_model_dir))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    before = model(input_ids=ids).logits
    assert fp32_attention(model)
    assert torch.equal(model(input_ids=ids).logits, before)  # without autocast: transformers' own SDPA call
    model.set_attn_implementation("eager")
    assert not fp32_attention(model) and model.config._attn_implementation == "eager"


def test_right_padded_batches_run_the_causal_kernel_with_the_same_outputs(tiny_model_dir, monkeypatch):
    """train/attention.py: a right-padded batch gets SDPA's is_causal instead of an explicit mask; every real
    position's logits stay what they were with the mask. Left padding (generation) and a KV cache keep the mask."""
    import torch.nn.functional as F

    from smalltune.models import load_model
    from smalltune.train.attention import fp32_attention, right_padded

    model, _ = load_model(str(tiny_model_dir))
    model.eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])
    right = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    left = right.flip(1)
    masked = model(input_ids=ids, attention_mask=right).logits  # transformers' own SDPA and mask
    masked_left = model(input_ids=ids.flip(1), attention_mask=left).logits
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append((kw.get("attn_mask") is None, kw.get("is_causal"))) or sdpa(*a, **kw))
    assert fp32_attention(model)
    causal = model(input_ids=ids, attention_mask=right).logits
    assert calls and all(calls_ == (True, True) for calls_ in calls)  # no mask: the causal kernel
    real = right.bool()
    assert torch.allclose(causal[real], masked[real], atol=1e-5)
    calls.clear()
    assert torch.allclose(model(input_ids=ids.flip(1), attention_mask=left).logits[left.bool()],
                          masked_left[left.bool()], atol=1e-5)
    assert calls and not any(no_mask for no_mask, _ in calls)  # left padding keeps its mask
    assert right_padded(right) and not right_padded(left) and not right_padded(torch.tensor([[1, 0, 1]]))
    plain, _ = load_model(str(tiny_model_dir))
    prompts = {"input_ids": ids.flip(1), "attention_mask": left}  # generation pads on the left, with a KV cache
    assert torch.equal(model.generate(**prompts, max_new_tokens=4, do_sample=False),
                       plain.generate(**prompts, max_new_tokens=4, do_sample=False))
