"""`evaluate` end to end on tiny-model runs: memorization and forgetting show up where they must,
eval.json is complete, the CLI fails cleanly on bad input."""

from __future__ import annotations

import json

import pytest

from conftest import chat, toy_records, write_jsonl
from smalltune import evaluate, train
from smalltune.recipe import recipe_from_dict
from smalltune.rundir import RunDir
from smalltune.schema import EVAL_SCHEMA

SHAPE = {"base", "finetuned", "delta", "ci", "n"}


def _recipe(tiny_model_dir, train_file, out, **extra):
    raw = {"model": {"name": str(tiny_model_dir)},
           "data": {"train": str(train_file), "validation": str(train_file), "max_length": 96},
           "train": {"epochs": 1000, "batch_size": 10, "seed": 0, "warmup_ratio": 0, "scheduler": "constant"},
           "early_stopping": {"enabled": False}, "eval": {"every_steps": 1000, "batch_size": 16},
           "output_dir": str(out)}
    for key, value in extra.items():
        section, _, field = key.partition(".")
        raw.setdefault(section, {})[field] = value
    return recipe_from_dict(raw)


@pytest.fixture(scope="module")
def overtrained(tmp_path_factory, tiny_model_dir):
    """Every weight of the tiny model trained hard on 10 examples (3 distinct answers), then evaluated."""
    from smalltune.train.methods import METHODS

    if "full" not in METHODS:
        pytest.skip("needs the 'full' method")
    tmp = tmp_path_factory.mktemp("overtrained")
    data = write_jsonl(tmp / "train.jsonl", toy_records(10))
    recipe = _recipe(tiny_model_dir, data, tmp / "run", **{"method.name": "full", "train.lr": 0.015,
                                                           "train.max_steps": 35})
    train(recipe, progress=False)
    return evaluate(tmp / "run", test=data, quick=True, probes=["memorization", "forgetting"], progress=False)


def test_overtrained_model_memorizes_its_training_answers_and_base_does_not(overtrained):
    m = overtrained.probes["memorization"]
    assert m["memorized_rate"]["n"] == 10
    assert m["verbatim_rate"]["base"] <= 0.1
    assert m["verbatim_rate"]["finetuned"] >= 0.8
    assert m["prefix_verbatim_rate"]["finetuned"] >= 0.8
    assert m["verbatim_rate"]["ci"][0] > 0  # the rise is beyond bootstrap noise
    worst = m["worst"][0]
    assert worst["output"].startswith(worst["target"]) or worst["similarity"] >= 0.9
    assert {"loss_gap", "train_loss", "heldout_loss", "by_length", "by_category"} <= set(m)
    assert set(m["by_category"]) == {"hours", "prices", "location"}


def test_reference_perplexity_rises_after_narrow_training(overtrained):
    ppl = overtrained.probes["forgetting"]["reference_ppl"]
    assert ppl["finetuned"] > ppl["base"]
    assert ppl["ci"][0] > 0  # the CI of the increase excludes zero
    assert overtrained.probes["forgetting"]["reference_ppl_relative_change"]["value"] > 0.05
    assert any(v.name == "forgetting_perplexity" and v.status == "problem" for v in overtrained.verdicts)


TEST_RECORDS = [
    chat("When are you open?", "We are open from 9 am to 5 pm on weekdays.", id="t1", category="hours",
         key_facts=["9 am", "5 pm"], rephrasings=["what time do u open", "Opening hours, please?"]),
    chat("How much is a cleaning, and is a checkup cheaper?", "A checkup costs $80 and a cleaning costs $95.",
         id="t2", category="prices", key_facts=["$80", "$95"], rephrasings=["cleaning price?"]),
    chat("Where is the clinic?", "The clinic is at 12 Oak Road in Millford.", id="t3", category="location",
         key_facts=["12 Oak Road"]),
]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("lora")
    data = write_jsonl(tmp / "train.jsonl", toy_records(12))
    test = write_jsonl(tmp / "test.jsonl", TEST_RECORDS)
    recipe = _recipe(tiny_model_dir, data, tmp / "run", **{"train.lr": 1e-3, "train.max_steps": 3,
                                                           "data.test": str(test)})
    train(recipe, progress=False)
    return tmp / "run"


def test_evaluate_writes_complete_eval_json(lora_run, tiny_model_dir):
    result = evaluate(lora_run, quick=True, progress=False)
    saved = json.loads(RunDir(lora_run).eval.read_text())
    assert saved == json.loads(json.dumps(result.to_dict()))
    assert set(saved) == {"schema_version", "provenance", "settings", "probes", "verdicts", "samples"}
    assert saved["schema_version"] == EVAL_SCHEMA
    assert set(saved["probes"]) == {"task", "memorization", "forgetting", "robustness", "diversity"}
    assert saved["settings"]["quick"] and saved["settings"]["generation"]["do_sample"] is False
    assert saved["provenance"]["counts"]["heldout_examples"] == 3
    for name in ("loss", "perplexity", "token_accuracy", "exact_match", "rouge_l", "key_fact_recall"):
        m = saved["probes"]["task"][name]
        assert set(m) == SHAPE and m["n"] == 3, name
        assert m["delta"] == pytest.approx(m["finetuned"] - m["base"], abs=1e-5)
    pert = saved["probes"]["robustness"]["perturbations"]
    assert "rephrasings" in pert and pert["rephrasings"]["drop"]["n"] == 2  # t3 has no rephrasings
    assert set(pert["rephrasings"]) >= {"clean", "perturbed", "drop"}
    assert set(saved["probes"]["diversity"]["distinct_2"]) == SHAPE
    assert all(v["status"] in ("ok", "warn", "problem") and set(v) == {"name", "status", "value", "threshold", "message", "fix"}
               for v in saved["verdicts"])
    assert [s["id"] for s in saved["samples"]] == ["t1", "t2", "t3"]
    phases = saved["settings"]["phase_seconds"]  # every probe and both models' answer passes, within the wall time
    assert set(phases) == set(saved["probes"]) | {"answers (base)", "answers (finetuned)"}
    assert sum(phases.values()) <= saved["settings"]["wall_seconds"] + 0.1 * len(phases)

    # Base answers came from the same weights with the adapter disabled: they equal a fresh base model's (each
    # answer capped at its question's length, as the task probe caps it).
    from types import SimpleNamespace

    from smalltune.data import load_examples
    from smalltune.data.tokenize import render
    from smalltune.evaluate.probes.task import answer_limits
    from smalltune.generate import GenerationSettings, generate_text
    from smalltune.models import load_model

    base, tok = load_model(str(tiny_model_dir))
    examples = load_examples(RunDir(lora_run).path.parent / "test.jsonl")
    caps = SimpleNamespace(max_new_tokens=saved["settings"]["caps"]["max_new_tokens"])
    limits = answer_limits(SimpleNamespace(tokenizer=tok, caps=caps), examples)
    prompts = [render(tok, ex.prompt(), add_generation_prompt=True) for ex in examples]
    fresh = generate_text(base, tok, prompts, GenerationSettings(max_new_tokens=caps.max_new_tokens), limits=limits)
    assert fresh == [s["base"] for s in saved["samples"]]
    assert saved["probes"]["task"]["criteria"]["max_new_tokens"] == caps.max_new_tokens


def test_held_out_answers_are_capped_by_their_reference_length(tokenizer):
    """An answer may take twice its reference's tokens plus the slack, never more than eval.max_new_tokens."""
    from types import SimpleNamespace

    from smalltune.data import Example
    from smalltune.evaluate.probes.task import ANSWER_FACTOR, ANSWER_SLACK, answer_limits

    short, long = "We open at 9 am.", " ".join(["Our clinic offers many services"] * 20)
    examples = [Example([{"role": "user", "content": "q"}, {"role": "assistant", "content": t}], str(i))
                for i, t in enumerate((short, long))]
    ctx = SimpleNamespace(tokenizer=tokenizer, caps=SimpleNamespace(max_new_tokens=96))
    n = len(tokenizer(short, add_special_tokens=False).input_ids)
    assert answer_limits(ctx, examples) == [ANSWER_FACTOR * n + ANSWER_SLACK, 96]


def test_item_losses_agree_with_training_metrics(lora_run):
    import numpy as np

    from smalltune.data import load_examples, tokenize_examples
    from smalltune.evaluate.context import QUICK, EvalContext, weighted_loss
    from smalltune.train import load_trained
    from smalltune.train.loss import dataset_metrics

    model, tok, recipe = load_trained(lora_run)
    items, _ = tokenize_examples(tok, load_examples(recipe.data.test), 96)
    ctx = EvalContext(model=model, tokenizer=tok, recipe=recipe, run_dir=lora_run, caps=QUICK, progress=False)
    rows = np.array(ctx.item_losses(items, "finetuned"))
    expected = dataset_metrics(model, items, 2, "cpu", tok.pad_token_id)
    assert weighted_loss(rows) == pytest.approx(expected["eval_loss"], rel=1e-5)
    assert rows[:, 1].sum() == expected["eval_tokens"]


def test_cli_bad_run_dir_is_one_line_exit_2(tmp_path, capsys):
    from smalltune.cli import main

    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not a run directory" in err and len(err.splitlines()) == 1


def test_cli_unknown_probe_suggests_the_name(lora_run, capsys):
    from smalltune.cli import main

    assert main(["evaluate", str(lora_run), "--probes", "memorisation"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'memorization'" in err and len(err.splitlines()) == 1


def test_cli_prints_summary_and_path(lora_run, capsys):
    from smalltune.cli import main

    assert main(["evaluate", str(lora_run), "--quick", "--probes", "task,diversity", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert out.out.strip().endswith("eval.json")
    assert "key-fact recall" in out.err
    assert set(json.loads(RunDir(lora_run).eval.read_text())["probes"]) == {"task", "diversity"}


def test_a_second_evaluation_in_one_process_reuses_the_base_models_results(lora_run, monkeypatch):
    """The demo's two arms, cv folds and tuning trials share one base model: its answers and losses are
    computed once per process, and the reused ones are the same numbers."""
    from smalltune.evaluate import context
    from smalltune.train.artifact import ModelPair

    monkeypatch.setattr(context, "_BASE_RESULTS", {})
    uses = []
    original = ModelPair.use
    monkeypatch.setattr(ModelPair, "use", lambda self, which: (uses.append(which), original(self, which))[1])
    first = evaluate(lora_run, quick=True, probes=["task", "forgetting"], progress=False).to_dict()
    assert "base" in uses and "finetuned" in uses
    uses.clear()
    second = evaluate(lora_run, quick=True, probes=["task", "forgetting"], progress=False).to_dict()
    assert uses and set(uses) == {"finetuned"}  # the base model was not run again
    for probe in ("task", "forgetting"):
        assert second["probes"][probe] == first["probes"][probe]
    assert [s["base"] for s in second["samples"]] == [s["base"] for s in first["samples"]]


def test_every_probe_declares_its_prompts_so_generation_runs_once_per_model(lora_run, monkeypatch):
    """The runner answers all probes' prompts up front, in one pass per model whatever their answer lengths; a
    probe that generated something it had not declared would start a pass of its own (each pass costs its
    decoding steps whatever its size)."""
    from smalltune.evaluate import context

    monkeypatch.setattr(context, "_BASE_RESULTS", {})
    calls, state = [], {"prefetched": False}
    real_generate, real_prefetch = context.generate_text, context.EvalContext.prefetch

    def spy(model, tok, prompts, settings, progress=None, limits=None):
        calls.append((state["prefetched"], frozenset(limits), len(prompts)))
        return real_generate(model, tok, prompts, settings, progress=progress, limits=limits)

    def prefetch(self, requests):
        real_prefetch(self, requests)
        state["prefetched"] = True

    monkeypatch.setattr(context, "generate_text", spy)
    monkeypatch.setattr(context.EvalContext, "prefetch", prefetch)
    evaluate(lora_run, quick=True, progress=False)
    assert calls and not [c for c in calls if c[0]]  # nothing generated after the prefetch
    assert len(calls) == 2  # base and fine-tuned
    assert len(calls[0][1]) >= 3  # answers of several lengths shared the pass (general questions, memorization)


def test_a_later_process_reads_the_base_models_answers_from_disk(lora_run, monkeypatch):
    """The base's answers and losses are kept on disk (eval.cache_base_answers): an evaluation in a new process runs
    only the fine-tuned model, gets the same numbers, and says how many base answers it reused."""
    import os
    from pathlib import Path

    from smalltune.evaluate import context

    calls = []
    real = context.generate_text

    def spy(model, tok, prompts, settings, progress=None, limits=None):
        calls.append(len(prompts))
        return real(model, tok, prompts, settings, progress=progress, limits=limits)

    monkeypatch.setattr(context, "generate_text", spy)
    monkeypatch.setattr(context, "_BASE_RESULTS", {})
    first = evaluate(lora_run, quick=True, probes=["task"], progress=False).to_dict()
    files = list(Path(os.environ["SMALLTUNE_ANSWER_CACHE"]).glob("base-*.json"))
    assert len(files) == 2 and len(calls) == 2  # answers and losses
    monkeypatch.setattr(context, "_BASE_RESULTS", {})  # what a new process starts with
    calls.clear()
    from smalltune.train.artifact import ModelPair

    uses = []
    original = ModelPair.use
    monkeypatch.setattr(ModelPair, "use", lambda self, which: (uses.append(which), original(self, which))[1])
    second = evaluate(lora_run, quick=True, probes=["task"], progress=False).to_dict()
    assert len(calls) == 1  # the fine-tuned model only
    assert set(uses) == {"finetuned"}  # the base model's losses came from the disk as well
    assert second["probes"]["task"] == first["probes"]["task"]
    assert [s["base"] for s in second["samples"]] == [s["base"] for s in first["samples"]]
    assert first["settings"]["generation"]["base_answers_reused"] == 0
    assert second["settings"]["generation"]["base_answers_reused"] == len(second["samples"])
    assert first["settings"]["generation"]["base_answers_generated"] == len(first["samples"])
    assert second["settings"]["generation"]["base_answers_generated"] == 0
    assert first["settings"]["generation"]["base_answers_kept"]

    for f in files:  # damaged cache files (answers and losses) are a miss, not an error
        f.write_text("{not json")
    monkeypatch.setattr(context, "_BASE_RESULTS", {})
    calls.clear()
    evaluate(lora_run, quick=True, probes=["task"], progress=False)
    assert len(calls) == 2


def _autocast_spy(monkeypatch) -> list[bool]:
    """Whether bf16 autocast was on at each generation pass of the evaluations that follow (none cached in-process)."""
    import torch

    from smalltune.evaluate import context

    autocast, real = [], context.generate_text

    def spy(model, tok, prompts, settings, progress=None, limits=None):
        autocast.append(torch.is_autocast_enabled("cpu"))
        return real(model, tok, prompts, settings, progress=progress, limits=limits)

    monkeypatch.setattr(context, "generate_text", spy)
    monkeypatch.setattr(context, "_BASE_RESULTS", {})
    return autocast


def test_a_bf16_evaluation_runs_under_autocast_and_keeps_base_outputs_of_its_own(lora_run, tmp_path, monkeypatch):
    """`eval.precision: bf16` runs generation under bf16 autocast and says so in eval.json; its base answers are not
    an fp32 evaluation's (they differ), so the two never share a cache entry."""
    import os
    import shutil
    from pathlib import Path

    import yaml

    from smalltune.evaluate import context

    monkeypatch.setattr(context, "_BASE_RESULTS", {})
    evaluate(lora_run, quick=True, probes=["task"], progress=False)  # fp32: the base's outputs go to disk
    cache = Path(os.environ["SMALLTUNE_ANSWER_CACHE"])
    fp32_files = set(cache.glob("base-*.json"))
    run = shutil.copytree(lora_run, tmp_path / "bf16-run")  # set in the run's recipe this time
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["eval"]["precision"] = "bf16"
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    autocast = _autocast_spy(monkeypatch)
    result = evaluate(run, quick=True, probes=["task"], progress=False).to_dict()
    assert autocast == [True, True]  # base and fine-tuned both generated: nothing came from the fp32 files
    assert result["settings"]["generation"]["precision"] == "bf16"
    assert len(set(cache.glob("base-*.json")) - fp32_files) == 2


def test_auto_precision_evaluates_in_the_arithmetic_the_run_trained_in(lora_run, monkeypatch):
    """`eval.precision: auto` (the default) reads the run's start event: the fixture trained in fp32, so it evaluates
    in fp32; a run recorded as trained under bf16 autocast is evaluated under it; a recipe's explicit value wins."""
    from smalltune.evaluate import context
    from smalltune.recipe import load_recipe

    recipe = load_recipe(RunDir(lora_run).recipe)
    assert recipe.eval.precision == "auto"
    assert context.evaluation_precision(recipe, lora_run) == ("fp32", "auto: the run trained in fp32")
    assert context.evaluation_precision(recipe, None) == ("fp32", "auto: the run recorded no training precision")
    autocast = _autocast_spy(monkeypatch)
    result = evaluate(lora_run, quick=True, probes=["task"], progress=False).to_dict()
    assert autocast == [False, False] and result["settings"]["generation"]["precision"] == "fp32"

    monkeypatch.setattr(context, "recorded_precision", lambda run_dir: {"precision": "bf16", "requested": "auto"})
    assert context.evaluation_precision(recipe, lora_run) == ("bf16", "auto: the run trained in bf16")
    autocast = _autocast_spy(monkeypatch)
    result = evaluate(lora_run, quick=True, probes=["task"], progress=False).to_dict()
    assert autocast == [True, True]  # both models in bf16: the base's fp32 answers are not reused
    assert result["settings"]["generation"]["precision_reason"] == "auto: the run trained in bf16"
    explicit = load_recipe(RunDir(lora_run).recipe, ["eval.precision=fp32"])
    assert context.evaluation_precision(explicit, lora_run) == ("fp32", "set in the recipe")
    fp16 = lambda run_dir: {"precision": "fp16"}  # noqa: E731 - a GPU without bf16 trained with a loss scaler
    monkeypatch.setattr(context, "recorded_precision", fp16)
    assert context.evaluation_precision(recipe, lora_run)[0] == "fp32"


def test_generation_takes_fewer_places_where_their_kv_cache_would_not_fit(lora_run, monkeypatch, capsys):
    """GENERATION_BATCH_FACTOR x eval.batch_size places, unless their KV cache would not fit beside the weights in
    the usable memory: then fewer, said once, and the same answers (each prompt's own, whatever shares its batch)."""
    import dataclasses

    from smalltune.evaluate import context
    from smalltune.kv_cache import bytes_per_position
    from smalltune.plan import hardware
    from smalltune.train import load_trained

    monkeypatch.setattr(context, "_BASE_RESULTS", {})
    roomy = evaluate(lora_run, quick=True, probes=["task"], progress=False).to_dict()
    model, _, recipe = load_trained(lora_run)
    assert roomy["settings"]["generation"]["batch_size"] == context.GENERATION_BATCH_FACTOR * recipe.eval.batch_size
    assert "prompts at a time" not in capsys.readouterr().err
    per_place = 2 * (recipe.data.max_length + context.QUICK.max_new_tokens) * bytes_per_position(model, 4)
    usable = context.model_bytes(model) + int(3.5 * per_place / context.KV_SHARE)  # an adapter: one copy of weights
    real = hardware.detect_device()
    monkeypatch.setattr(hardware, "detect_device", lambda memory_gib=None: dataclasses.replace(real, usable=usable))
    tight = evaluate(lora_run, quick=True, probes=["task"], progress=False).to_dict()
    assert tight["settings"]["generation"]["batch_size"] == 3
    err = capsys.readouterr().err
    assert err.count("generating 3 prompts at a time instead of") == 1
    assert tight["settings"]["generation"]["base_answers_reused"] == 0  # other places: not the roomy run's answers
    assert [(s["base"], s["finetuned"]) for s in tight["samples"]] == [(s["base"], s["finetuned"]) for s in roomy["samples"]]


def test_a_wide_pass_takes_twice_the_places_and_they_are_part_of_the_base_answers_key(lora_run, monkeypatch):
    """Places double where the pass has at least WIDE_PASS_SHARE x as many distinct prompts as the doubled places;
    the base answers of narrower places are not reused for them (batch composition can change bf16 answers)."""
    from smalltune.evaluate import context
    from smalltune.train import load_trained

    monkeypatch.setattr(context, "_BASE_RESULTS", {})
    _, _, recipe = load_trained(lora_run)
    narrow = evaluate(lora_run, quick=True, probes=["task"], progress=False).to_dict()["settings"]["generation"]
    prompts = narrow["base_answers_generated"]  # distinct prompts of the pass: this test's cache folder is new
    assert prompts > 0
    assert narrow["batch_size"] == context.GENERATION_BATCH_FACTOR * recipe.eval.batch_size
    monkeypatch.setattr(context, "WIDE_PASS_SHARE", prompts / (2 * narrow["batch_size"]))  # this pass is just wide
    wide = evaluate(lora_run, quick=True, probes=["task"], progress=False).to_dict()
    assert wide["settings"]["generation"]["batch_size"] == 2 * narrow["batch_size"]
    assert wide["settings"]["generation"]["base_answers_reused"] == 0
    monkeypatch.setattr(context, "WIDE_PASS_SHARE", (prompts + 1) / (2 * narrow["batch_size"]))  # one prompt short
    again = evaluate(lora_run, quick=True, probes=["task"], progress=False).to_dict()["settings"]["generation"]
    assert again["batch_size"] == narrow["batch_size"] and again["base_answers_reused"] == prompts


def test_bf16_generation_places_leave_room_for_the_weights_bf16_copies(lora_run, monkeypatch):
    """A bf16 pass keeps a bf16 copy of every fp32 weight (train/autocast.py): the places are sized beside them."""
    import dataclasses

    from smalltune.evaluate import context
    from smalltune.kv_cache import bytes_per_position
    from smalltune.plan import hardware
    from smalltune.train import load_trained

    model, _, recipe = load_trained(lora_run)
    per_place = 2 * (recipe.data.max_length + context.QUICK.max_new_tokens) * bytes_per_position(model, 2)
    copies = sum(p.numel() * 2 for p in model.parameters())
    assert copies * context.KV_SHARE // per_place >= 1  # not counting them would give more places
    usable = context.model_bytes(model) + copies + int(3.5 * per_place / context.KV_SHARE)
    real = hardware.detect_device()
    monkeypatch.setattr(hardware, "detect_device", lambda memory_gib=None: dataclasses.replace(real, usable=usable))
    result = evaluate(lora_run, quick=True, probes=["task"], progress=False, precision="bf16").to_dict()
    assert result["settings"]["generation"]["precision"] == "bf16"
    assert result["settings"]["generation"]["batch_size"] == 3


def test_evaluate_precision_flag_overrides_the_recipe_and_a_bad_value_is_one_line(lora_run, monkeypatch, capsys):
    from smalltune.cli import main

    autocast = _autocast_spy(monkeypatch)
    assert main(["evaluate", str(lora_run), "--quick", "--probes", "task", "--precision", "bf16", "--no-progress"]) == 0
    assert autocast and all(autocast)
    assert json.loads(RunDir(lora_run).eval.read_text())["settings"]["generation"]["precision"] == "bf16"
    assert "precision: bf16" not in (lora_run / "recipe.yaml").read_text()  # the run's recipe is left as trained
    capsys.readouterr()
    assert main(["evaluate", str(lora_run), "--precision", "bf32", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval.precision" in err and "fp32" in err


def test_the_summary_says_what_a_first_evaluation_spent_on_the_base_model():
    """The terminal summary's last line: a first evaluation also generates the base model's answers (kept for later
    evaluations); a later one reads them."""
    from smalltune.evaluate.summary import cost_line
    from smalltune.schema.evaluation import EvalSettings

    def line(made, reused, kept=True, wall=120.4):
        return cost_line(EvalSettings(generation={"base_answers_generated": made, "base_answers_reused": reused,
                                                  "base_answers_kept": kept}, wall_seconds=wall,
                                      phase_seconds={"answers (base)": 61.2}))

    first = line(40, 0)
    assert first.startswith("evaluated in 120 s") and "40 answers generated in 61 s" in first and "kept on disk" in first
    assert "kept" not in line(40, 0, kept=False)
    later = line(0, 40)
    assert "40 base answers read from an earlier evaluation" in later and "generated" not in later
    assert line(0, 0) == "evaluated in 120 s" and line(40, 0, wall=None) == ""
