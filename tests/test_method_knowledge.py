"""Each method owns its knowledge: recipe keys, learning rates, planner numbers, EWC deltas, 4-bit support.

The planner, the memory estimate, the recipe documentation and EWC ask the method plugin; a method
registered here (in a test) is planned without touching any planner file.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from smalltune.errors import RecipeError, SmalltuneError
from smalltune.plan.memory import NF4_BYTES, estimate, model_shape, quantized_params
from smalltune.plan.planner import DataFacts, plan_from_facts
from smalltune.recipe import MethodSection, field_help, iter_fields
from smalltune.train.methods import METHODS, Method, Rate, methods_using, warn_ignored_keys

METHOD_KEYS = {f"method.{f.name}" for f in dataclasses.fields(MethodSection)} - {"method.name"}


# --- declarations ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_declares_keys_rates_and_planner_numbers(name, tiny_model_dir):
    cls = METHODS.get(name)
    assert set(cls.keys) <= METHOD_KEYS, f"{name} declares keys the recipe does not have"
    rate = cls.rate
    assert isinstance(rate, Rate) and 0 < rate.update_lr < rate.lr and rate.source
    trainable, new = cls().trainable_params(model_shape(str(tiny_model_dir)), MethodSection(name=name))
    assert trainable > 0 and new >= 0
    assert (new > 0) == cls.frozen_base  # an adapter adds tensors; a whole-model method trains its own


def test_every_method_key_is_read_by_some_method_and_the_docs_say_which():
    assert methods_using("method.r") == ["lora", "dora"]
    assert set(methods_using("method.dropout")) == {"lora", "dora", "bottleneck"}
    for key in METHOD_KEYS:
        assert methods_using(key), f"{key} is read by no method"
    helps = {key: text for key, _tp, _default, text, _choices in iter_fields()}
    assert helps["method.r"].startswith("lora, dora: ")
    assert helps["method.hft_fraction"].startswith("hft: ")
    assert helps["train.lr"] == field_help("train.lr", helps["train.lr"])  # other sections unchanged


def test_recipe_command_and_template_name_the_methods_of_each_key(capsys):
    from smalltune.cli import main

    assert main(["recipe"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("method.num_virtual_tokens"))
    assert "prefix, prompt: " in row
    assert main(["recipe", "--template"]) == 0
    assert "top_k_layers: 2  # partial: " in capsys.readouterr().out


def test_ignored_keys_warn_once_and_do_not_fail(tmp_path, toy_data, capsys):
    from smalltune.recipe import load_recipe

    cfg = MethodSection(name="ia3", r=32, hft_fraction=0.25)
    assert METHODS.get("ia3")().ignored_keys(cfg) == ["method.r", "method.hft_fraction"]
    assert METHODS.get("lora")().ignored_keys(MethodSection(name="lora", r=32)) == []
    path = tmp_path / "r.yaml"
    path.write_text(f"data: {{train: {toy_data}}}\nmethod: {{name: prefix, r: 4, num_virtual_tokens: 8}}\n")
    recipe = load_recipe(path)  # a warning, not an error
    assert recipe.method.r == 4
    err = " ".join(capsys.readouterr().err.split())  # the terminal may wrap the line
    assert "method.r is set but method.name prefix does not read it (read by lora, dora)" in err
    assert "num_virtual_tokens" not in err
    load_recipe(path)
    assert "method.r" not in capsys.readouterr().err  # once per process
    assert warn_ignored_keys(recipe.method) == [
        "method.r is set but method.name prefix does not read it (read by lora, dora)"]


# --- the planner asks the method -----------------------------------------------------------------
class Toy(Method):
    """A method the planner has never heard of: one vector of hidden size per layer."""

    keys = ("method.r",)
    rate = Rate(7e-3, 7e-4, "a test")

    def trainable_params(self, s, cfg):
        return s.layers * s.hidden * cfg.r, s.layers * s.hidden * cfg.r

    def layer_activations(self, s, cfg, device):
        return 1000.0


def test_a_new_method_is_planned_from_its_own_declarations(monkeypatch, tiny_model_dir):
    import importlib

    from smalltune.plan.rules import BANDS, Band

    monkeypatch.setitem(METHODS._items, "toy", Toy)
    shape = model_shape(str(tiny_model_dir))
    est = estimate(shape, "toy", MethodSection(name="toy", r=3), 2, 64)
    assert est.trainable_params == 3 * shape.layers * shape.hidden
    assert est.optimizer_states == 8 * est.trainable_params and est.adapter_file_bytes == 4 * est.trainable_params
    lora = estimate(shape, "lora", MethodSection(dropout=0.0), 2, 64)
    assert est.activations > lora.activations  # 1000 elements per token and layer, as the method says

    toy_band = Band("<1k", 1_000, "toy", (), 20, 5, 3, 8, 0.05, 0.2, 8)
    planner = importlib.import_module("smalltune.plan.planner")  # smalltune.plan is also a function's name
    monkeypatch.setattr(planner, "band_for", lambda n: toy_band if n < 1000 else BANDS[-1])
    p = plan_from_facts(DataFacts(300, {}, 100, 80, "test"), "t.jsonl", str(tiny_model_dir), device_memory_gib=8)
    assert p.recipe.method.name == "toy" and p.recipe.train.lr == 7e-3 and "a test" in p.notes["train.lr"]
    method_notes = {k for k in p.notes if k.startswith("method.")}
    assert method_notes == {"method.name", "method.r"}  # only the keys the method reads are planned


@pytest.mark.parametrize("n,method,planned", [
    (300, "full", set()),  # a model under 1B parameters (benchmarks/README.md 1c)
    (3_000, "lora", {"method.r", "method.alpha", "method.dropout"}),
    (30_000, "bottleneck", {"method.dropout"}),
    (150_000, "full", set()),
])
def test_plans_write_only_the_keys_their_method_reads(tiny_model_dir, n, method, planned):
    p = plan_from_facts(DataFacts(n, {}, 100, 80, "test"), "t.jsonl", str(tiny_model_dir), device_memory_gib=16)
    assert p.recipe.method.name == method
    assert {k for k in p.notes if k.startswith("method.")} - {"method.name"} == planned
    assert planned <= set(METHODS.get(method).keys)


def test_large_model_factor_comes_from_the_method(monkeypatch, tiny_model_dir):
    from smalltune.plan.rules import Context, _lr, band_for

    ctx = Context(n_train=300, n_smallest=300, smallest_category=None, has_validation_file=False,
                  model_params=40e9, update=False, band=band_for(300), schedule=band_for(300))
    for name in METHODS:
        ctx.method = name
        rate = METHODS.get(name).rate
        lr, why = _lr(ctx)
        assert lr == rate.lr * rate.large_model_factor
        assert ("halved" in why) == (rate.large_model_factor == 0.5)
    assert METHODS.get("lora").rate.large_model_factor == 0.5 and METHODS.get("full").rate.large_model_factor == 1


# --- EWC asks the method for its weight deltas ---------------------------------------------------
def test_lora_weight_deltas_are_b_times_a_and_other_methods_have_none(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from smalltune.train.regularize.ewc import penalty_terms

    lora = METHODS.get("lora")()
    model = lora.apply(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodSection(r=2, alpha=4, dropout=0.0))
    deltas = lora.weight_deltas(model)
    assert len(deltas) == 2 * 7  # every linear of both layers
    d = deltas[0]
    layer = dict(model.named_modules())[d.name.removesuffix(".delta_weight")]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    torch.testing.assert_close(d.delta(), B @ A * 2.0)
    assert d.base is layer.get_base_layer().weight and set(map(id, d.params)) == {id(A), id(B)}
    # the method-given terms equal the ones found without naming the method (EWC's default)
    assert [t.name for t in penalty_terms(model, lora)] == [t.name for t in penalty_terms(model)]
    full = METHODS.get("full")()
    assert full.weight_deltas(full.apply(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodSection())) == []
    dora = METHODS.get("dora")()
    assert dora.weight_deltas(dora.apply(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodSection())) == []


# --- QLoRA: model.load_in_4bit ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama7b_dir(tmp_path_factory):
    """config.json of a Llama-2-7B-shaped model (no weights): planned on the meta device."""
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("llama-7b")
    LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, max_position_embeddings=4096).save_pretrained(path)
    return path


def test_a_7b_base_needs_about_28_gb_in_fp32_and_4_gb_in_4_bit(llama7b_dir):
    s = model_shape(str(llama7b_dir))
    assert 6.7e9 < s.total_params < 6.8e9
    cfg = MethodSection(r=8)
    fp32 = estimate(s, "lora", cfg, 1, 512)
    four = estimate(s, "lora", cfg, 1, 512, load_in_4bit=True)
    adapter = 4 * fp32.trainable_params  # LoRA's own tensors, in fp32 either way
    assert 26.5e9 < fp32.weights - adapter < 27.5e9  # 4 bytes x 6.74B
    q = quantized_params(s)
    assert q == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # q, k, v, o, gate, up, down of every layer
    assert four.weights - adapter == int(NF4_BYTES * q) + 4 * (s.total_params - q)
    assert 3.8e9 < four.weights - adapter < 4.6e9  # ~3.3 GB of 4-bit layers + 1 GB fp32 embeddings and head
    assert four.trainable_params == fp32.trainable_params and four.optimizer_states == fp32.optimizer_states
    assert four.activations < fp32.activations / 3  # gradient checkpointing keeps only each layer's input
    assert four.load_in_4bit and "4-bit base" in four.summary()
    bf16 = estimate(s, "lora", cfg, 1, 512, "bf16", load_in_4bit=True)
    assert bf16.weights - four.weights == 2 * (s.total_params - q)  # half copies of the fp32 part only


def test_4_bit_is_refused_for_methods_that_train_the_base(make_recipe):
    with pytest.raises(RecipeError, match=r"model.load_in_4bit needs a method .*method.name is full"):
        make_recipe(**{"model.load_in_4bit": True, "method.name": "full"})
    assert make_recipe(**{"model.load_in_4bit": True}).model.load_in_4bit  # lora: valid anywhere


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_4_bit_on_cpu_is_refused_with_one_line(make_recipe, tiny_model_dir, tmp_path, capsys):
    from smalltune.models import load_model

    with pytest.raises(SmalltuneError, match="model.load_in_4bit: .*needs a CUDA GPU"):
        load_model(str(tiny_model_dir), load_in_4bit=True)
    recipe = make_recipe(**{"model.load_in_4bit": True})
    path = tmp_path / "r.yaml"
    recipe.save(path)
    from smalltune.cli import main

    capsys.readouterr()
    assert main(["train", str(path), "train.max_steps=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model.load_in_4bit:") and "set model.load_in_4bit: false" in err[-1]
    assert not any("Traceback" in line for line in err)
