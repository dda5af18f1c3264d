"""The planner: size bands, memory fitting, tiny and huge models, the written recipe, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from conftest import toy_records, write_jsonl
from smalltune.plan import plan
from smalltune.plan.hardware import USABLE, detect_device
from smalltune.plan.memory import GIB, estimate, model_shape
from smalltune.plan.planner import DataFacts, choose_method, plan_from_facts
from smalltune.plan.rules import BANDS, EVAL_SHARE, FORGETTING_BUDGET, RULES, Context, band_for
from smalltune.recipe import MethodSection, load_recipe
from smalltune.train.methods import METHODS

RATES = {name: cls.rate for name, cls in METHODS.items()}  # each method declares its own rates


@pytest.fixture(scope="module")
def huge_model_dir(tmp_path_factory):
    """config.json only: a 70B-class Llama that must be planned without any weights."""
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("huge-llama")
    LlamaConfig(vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=8192).save_pretrained(path)
    return path


@pytest.fixture
def small_data(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", toy_records(300))


def facts(n: int, categories: dict | None = None) -> DataFacts:
    return DataFacts(n_train=n, categories=categories or {}, longest=100, p95=80, lengths_from="test")


# --- bands and rules ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,label,method", [(300, "<1k", "full"), (3_000, "1k-10k", "lora"),
                                            (30_000, "10k-100k", "bottleneck"), (150_000, ">100k", "full")])
def test_each_size_band_plans_its_method_and_schedule(tiny_model_dir, n, label, method):
    p = plan_from_facts(facts(n), "train.jsonl", str(tiny_model_dir), device_memory_gib=16)
    band = band_for(n)
    assert band.label == label
    expected = method if method in METHODS else "lora"
    assert p.recipe.method.name == expected
    assert p.recipe.train.epochs == band.epochs
    assert p.recipe.early_stopping.patience == band.patience
    assert p.recipe.train.lr == RATES[expected].lr * RATES[expected].small_model_factor  # the tiny model is < 1B
    assert p.recipe.train.batch_size * p.recipe.train.grad_accum == band.effective_batch
    assert 1 <= p.recipe.train.batch_size <= 8
    assert 0.01 <= p.recipe.train.weight_decay <= 0.05 and p.recipe.train.max_grad_norm == 1.0
    # the evaluation cadence gives every epoch the band's number of evaluations, unless validation
    # would then cost more than EVAL_SHARE of the training compute; it never does
    steps_per_epoch, every = p.facts["steps_per_epoch"], p.recipe.eval.every_steps
    effective = p.recipe.train.batch_size * p.recipe.train.grad_accum
    n_val = round(n * p.recipe.data.validation_fraction)
    assert (steps_per_epoch // every >= min(band.evals_per_epoch, steps_per_epoch)
            or every == math.ceil(n_val / (3 * EVAL_SHARE * effective)))
    assert n_val <= 3 * EVAL_SHARE * effective * every
    assert p.recipe.guards.forgetting_budget == FORGETTING_BUDGET  # every method, adapters included
    assert p.recipe.data.validation_fraction is not None  # no validation file: a split sized for the data
    assert set(p.notes) >= {r.key for r in RULES if r.key.split(".")[0] in ("train", "eval", "early_stopping")}


def test_full_rates_stay_in_the_documented_ranges():
    assert 5e-6 <= RATES["full"].lr <= 5e-5 and RATES["full"].lr == 2e-5
    assert 1e-6 <= RATES["full"].update_lr <= 5e-6
    assert [b.below for b in BANDS] == sorted(b.below for b in BANDS)
    assert all(b.epochs <= 3 for b in BANDS[1:]) and 3 <= BANDS[0].epochs <= 5  # sized to where early stopping stops


def test_smallest_category_decides_the_method_band(tiny_model_dir):
    p = plan_from_facts(facts(30_000, {"a": 29_500, "b": 500}), "t.jsonl", str(tiny_model_dir), device_memory_gib=16)
    assert p.facts["band"] == "<1k" and p.facts["schedule_band"] == "10k-100k"
    # a model under 1B parameters is fully fine-tuned in the <1k band (benchmarks/README.md 1c)
    assert p.recipe.method.name == "full" and "'b' has 500" in p.notes["method.name"]
    assert p.recipe.train.epochs == band_for(30_000).epochs  # the schedule follows the total


def test_unregistered_method_falls_back_to_lora_with_a_note():
    ctx = Context(n_train=30_000, n_smallest=30_000, smallest_category=None, has_validation_file=False,
                  model_params=10**8, update=False, band=band_for(30_000), schedule=band_for(30_000))
    choose_method(ctx, {"lora"})
    assert ctx.method == "lora" and "bottleneck, which is not installed" in ctx.why["method.name"]


def test_update_lowers_the_learning_rate(tiny_model_dir):
    for n in (300, 150_000):
        fresh = plan_from_facts(facts(n), "t.jsonl", str(tiny_model_dir), device_memory_gib=16)
        update = plan_from_facts(facts(n), "t.jsonl", str(tiny_model_dir), device_memory_gib=16, update=True)
        assert update.recipe.train.lr < fresh.recipe.train.lr
        assert "--update" in update.notes["train.lr"]
    if "full" in METHODS:
        assert 1e-6 <= update.recipe.train.lr <= 5e-6


# --- memory --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(m for m in ("lora", "dora", "ia3", "prefix", "prompt", "bottleneck",
                                                      "partial", "full") if m in METHODS))
def test_trainable_parameter_estimate_equals_the_real_method(tiny_model_dir, method):
    from transformers import AutoModelForCausalLM

    from smalltune.train.methods import count_parameters

    cfg = MethodSection(name=method)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainable, total = count_parameters(METHODS.get(method)().apply(model, cfg))
    est = estimate(model_shape(str(tiny_model_dir)), method, cfg, 1, 64)
    assert (est.trainable_params, est.total_params) == (trainable, total)


@pytest.mark.parametrize("method", sorted(name for name, _ in METHODS.items()))
def test_the_snapshot_estimate_equals_what_the_method_keeps(tiny_model_dir, method):
    from transformers import AutoModelForCausalLM

    cfg, plugin = MethodSection(name=method), METHODS.get(method)()
    model = plugin.apply(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg)
    kept = sum(t.numel() * t.element_size() for t in plugin.trainable_state(model).values())  # hft: every weight
    assert estimate(model_shape(str(tiny_model_dir)), method, cfg, 1, 64, device="cpu").snapshots == kept


def test_memory_parts_scale_as_they_should(tiny_model_dir):
    s = model_shape(str(tiny_model_dir))
    lora, full = estimate(s, "lora", MethodSection(), 4, 128), estimate(s, "full", MethodSection(), 4, 128)
    assert full.gradients == 4 * s.total_params and full.optimizer_states == 8 * s.total_params
    assert lora.optimizer_states == 8 * lora.trainable_params < full.optimizer_states
    assert estimate(s, "lora", MethodSection(), 8, 128).activations == 2 * lora.activations
    assert estimate(s, "lora", MethodSection(), 4, 128, "bf16").activations < lora.activations
    assert lora.total == lora.weights + lora.gradients + lora.optimizer_states + lora.activations
    assert lora.adapter_file_bytes == 4 * lora.trainable_params


def test_a_cpu_plan_counts_one_best_model_snapshot_in_host_memory(tiny_model_dir):
    s = model_shape(str(tiny_model_dir))
    gpu, cpu = (estimate(s, "full", MethodSection(), 4, 128, device=d) for d in ("cuda", "cpu"))
    assert gpu.snapshots == 0  # a GPU's memory holds none: they are copied to the host
    assert cpu.snapshots == 4 * s.total_params  # every weight is trainable, in fp32
    assert cpu.total == cpu.weights + cpu.gradients + cpu.optimizer_states + cpu.activations + cpu.snapshots
    assert "snapshots" in cpu.summary() and "snapshots" not in gpu.summary()
    two = estimate(s, "full", MethodSection(), 4, 128, device="cpu", processes=2)
    assert two.snapshots == 0  # several processes write theirs as files


def test_memory_picks_the_largest_batch_that_fits(tiny_model_dir):
    s = model_shape(str(tiny_model_dir))
    kind = detect_device().kind
    cfg = MethodSection(r=8, alpha=16, dropout=0.2)
    b8, b4 = (estimate(s, "lora", cfg, b, 128, "fp32", device=kind).total for b in (8, 4))
    budget = (b8 + b4) / 2  # room for batch 4, not for 8
    p = plan_from_facts(DataFacts(300, {}, 100, 80, "test"), "t.jsonl", str(tiny_model_dir),
                        device_memory_gib=budget / USABLE[kind] / GIB)
    assert p.fits and p.recipe.train.precision in ("fp32", "bf16", "auto")
    if p.recipe.train.precision in ("fp32", "auto"):  # auto: both fit at the batch chosen
        assert (p.recipe.train.batch_size, p.recipe.train.grad_accum) == (4, 2)


# Short sequences: the half copy of the weights outweighs the halved activations (bf16 needs more); long: less.
@pytest.mark.parametrize("room, seq", [("both", 128), ("fp32 only", 8), ("bf16 only", 512)])
def test_a_cpu_plan_leaves_the_precision_to_auto_where_both_fit(tiny_model_dir, room, seq):
    from smalltune.plan.hardware import Device
    from smalltune.plan.planner import fit_memory

    s, cfg = model_shape(str(tiny_model_dir)), MethodSection()
    fp32, bf16 = (estimate(s, "full", cfg, 8, seq, p, device="cpu").total for p in ("fp32", "bf16"))
    memory = {"both": max(fp32, bf16), "fp32 only": fp32, "bf16 only": bf16}[room]
    assert room == "both" or memory < max(fp32, bf16)  # the other precision does not fit
    ctx = Context(n_train=300, n_smallest=300, smallest_category=None, has_validation_file=False, model_params=10**6,
                  update=False, band=band_for(300), schedule=band_for(300), method="full", max_length=seq)
    chosen, _ = fit_memory(ctx, s, cfg, Device(kind="cpu", total=memory, usable=memory, source="test", bf16=True))
    assert chosen.fits and chosen.batch_size == ctx.batch_size == 8
    assert ctx.precision == {"both": "auto", "fp32 only": "fp32", "bf16 only": "bf16"}[room]
    if room == "both":  # the memory shown is the larger of the two: whichever auto takes fits
        assert chosen.total == max(fp32, bf16) and "measures one decoder layer" in ctx.why["train.precision"]


def test_tiny_model_fits_and_huge_model_does_not(tiny_model_dir, huge_model_dir):
    tiny = plan_from_facts(facts(300), "t.jsonl", str(tiny_model_dir), device_memory_gib=8)
    assert tiny.fits and tiny.suggestions == []
    huge = plan_from_facts(facts(150_000), "t.jsonl", str(huge_model_dir), device_memory_gib=80)
    assert 69e9 < huge.facts["model"]["params"] < 72e9  # counted from config.json on the meta device
    assert not huge.fits and huge.recipe.train.batch_size == 1
    assert any("a device with at least" in s for s in huge.suggestions)
    assert any("DOES NOT FIT" in line for line in huge.explanations)
    if huge.recipe.method.name not in ("lora", "dora"):
        assert any(s.startswith("method.name=lora") for s in huge.suggestions)
    small = plan_from_facts(facts(300), "t.jsonl", str(huge_model_dir), device_memory_gib=80)
    assert small.recipe.method.name == "lora" and small.recipe.train.lr == RATES["lora"].lr / 2  # QLoRA: >30B


# --- the written recipe ------------------------------------------------------------------------
def test_written_recipe_round_trips_and_trains(tmp_path, tiny_model_dir, small_data):
    from smalltune import train

    out = tmp_path / "recipe.yaml"
    val = write_jsonl(tmp_path / "val.jsonl", toy_records(12))
    p = plan(small_data, model=str(tiny_model_dir), device_memory_gib=8, validation=val, output=out)
    assert p.recipe.data.validation == str(val.resolve()) and p.recipe.data.validation_fraction is None
    assert json.loads(json.dumps(p.to_dict()))["memory"]["fits"] is True
    text = out.read_text()
    assert "validation: val.jsonl" in text  # relative to the recipe's folder
    assert "# " + p.notes["train.lr"] in text  # the why is the YAML comment
    loaded = load_recipe(out)
    assert loaded.to_dict() == p.recipe.to_dict()
    assert yaml.safe_load(text)["method"]["name"] == "full"  # the tiny model is under 1B parameters
    result = train(load_recipe(out, ["train.max_steps=2", f"output_dir={tmp_path / 'run'}"]), progress=False)
    assert result.steps == 2 and (tmp_path / "run" / "model").is_dir()


# --- CLI ---------------------------------------------------------------------------------------
def cli(*args):
    from smalltune.cli import main

    return main(["plan", *map(str, args)])


def test_explain_prints_the_rules_table(capsys):
    assert cli("--explain") == 0
    err = capsys.readouterr().err
    for text in ("size bands", "learning rates", "train.lr", "method.name", "eval.every_steps", "2106.09685"):
        assert text in err


def test_cli_writes_recipe_and_reports_non_fitting(tmp_path, tiny_model_dir, huge_model_dir, small_data, capsys):
    out = tmp_path / "r.yaml"
    assert cli(small_data, "--model", tiny_model_dir, "--device-memory", 8, "--output", out) == 0
    assert load_recipe(out).method.name == "full"
    capsys.readouterr()
    assert cli(small_data, "--model", huge_model_dir, "--device-memory", 24) == 1  # prints, does not fit
    captured = capsys.readouterr()
    assert "DOES NOT FIT" in captured.err and "characters / 4" in captured.err
    assert yaml.safe_load(captured.out)["train"]["batch_size"] == 1


@pytest.mark.parametrize("args,expect", [
    (["missing.jsonl"], "missing.jsonl"),
    ([], "needs a DATA file"),
    (["{data}", "--device-memory", "-1"], "--device-memory must be > 0"),
    (["{data}", "--model", "/no/such/model"], "model.name"),
])
def test_cli_errors_are_one_line_with_exit_2(tmp_path, small_data, capsys, args, expect):
    code = cli(*[a.format(data=small_data) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error:") and expect in err


def test_a_small_model_whose_full_fine_tuning_does_not_fit_gets_the_band_method(monkeypatch, tiny_model_dir):
    import dataclasses
    import importlib

    planner = importlib.import_module("smalltune.plan.planner")  # smalltune.plan is also a function's name
    real = planner._fit

    def full_does_not_fit(ctx, shape, device, sharding):
        memory, suggestions = real(ctx, shape, device, sharding)
        return (dataclasses.replace(memory, fits=False) if ctx.method == "full" else memory), suggestions

    monkeypatch.setattr(planner, "_fit", full_does_not_fit)
    p = plan_from_facts(facts(300), "t.jsonl", str(tiny_model_dir), device_memory_gib=16)
    assert p.recipe.method.name == "lora" and p.memory.fits
    assert "full does not fit this device" in p.notes["method.name"]
    assert p.recipe.train.lr == METHODS.get("lora").rate.lr  # lora's own rate, no small-model factor
