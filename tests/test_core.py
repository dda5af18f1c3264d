"""The composable training core (issue 13): setup/fit, several trainings in one process, splits in memory,
the recorded splits, and measurement paragraphs kept apart from training paragraphs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smalltune import train
from smalltune.rundir import RunDir
from smalltune.train.splits import GUARD_PARAGRAPHS, Splits, load_splits, reference_roles, text_id


def adapter(run_dir) -> dict:
    return load_file(str(RunDir(run_dir).adapter / "adapter_model.safetensors"))


def test_several_trainings_in_one_process_reuse_the_base_and_switch_precision(make_recipe, tmp_path, tiny_model_dir):
    from smalltune.train.setup import Base

    common = {"train.max_steps": 3, "early_stopping.enabled": False}
    base = Base.load(make_recipe())
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    fp32 = train(make_recipe(**common, output_dir=str(tmp_path / "a")), progress=False, base=base, verbose=False)
    bf16 = train(make_recipe(**common, **{"train.precision": "bf16"}, output_dir=str(tmp_path / "b")),
                 progress=False, base=base, verbose=False)
    again = train(make_recipe(**common, output_dir=str(tmp_path / "c")), progress=False, verbose=False)  # from disk
    assert fp32.steps == bf16.steps == again.steps == 3
    assert all(torch.equal(before[k], v) for k, v in base.model.state_dict().items())  # the shared base is untouched
    a, c = adapter(fp32.run_dir), adapter(again.run_dir)
    assert all(torch.equal(a[k], c[k]) for k in a)  # a reused base trains exactly like a freshly loaded one
    from smalltune.recipe import load_recipe

    assert load_recipe(RunDir(bf16.run_dir).recipe).train.precision == "bf16"
    assert bf16.best_metrics["eval_loss"] < bf16.base_metrics["eval_loss"] + 1.0  # trained, finite


def test_runs_from_one_base_measure_the_untrained_model_once(make_recipe, tmp_path, monkeypatch):
    """Tuning trials and folds share the base's validation metrics and reference perplexity: every method
    starts as the base, so the second run (another method, same items) reads them instead of measuring. A run in
    another process reads them from disk (eval.cache_base_answers); with the option off, or a file it cannot read,
    it measures."""
    import os

    from smalltune.train import loop
    from smalltune.train.guards import forgetting
    from smalltune.train.setup import Base

    calls = {"validation": 0, "reference": 0}
    real_base, real_ref = loop._untrained_metrics, forgetting.reference_ppl

    def untrained_metrics(*a):
        calls["validation"] += 1
        return real_base(*a)

    def reference_ppl(*a):
        calls["reference"] += 1
        return real_ref(*a)

    monkeypatch.setattr(loop, "_untrained_metrics", untrained_metrics)
    monkeypatch.setattr(forgetting, "reference_ppl", reference_ppl)
    common = {"train.max_steps": 3, "early_stopping.enabled": False, "guards.forgetting_budget": 0.5,
              "guards.reference_tokens": 64, "train.precision": "fp32"}  # auto may measure bf16 faster for one run
    base = Base.load(make_recipe())
    lora = train(make_recipe(**common, output_dir=str(tmp_path / "a")), progress=False, base=base, verbose=False)
    assert calls == {"validation": 1, "reference": 2}  # the base once each, the reference at step 3's evaluation
    full = train(make_recipe(**common, **{"method.name": "full"}, output_dir=str(tmp_path / "b")), progress=False,
                 base=base, verbose=False)
    assert calls == {"validation": 1, "reference": 3}  # only the evaluation: the base's numbers were kept
    assert full.base_metrics == lora.base_metrics and full.guards["forgetting_budget"]["base_ppl"] == \
        lora.guards["forgetting_budget"]["base_ppl"]

    def alone(folder: str, **extra):  # loaded anew, as another process would: no shared base
        return train(make_recipe(**common, **{"method.name": "full", **extra}, output_dir=str(tmp_path / folder)),
                     progress=False, verbose=False)

    from_disk = alone("c")
    assert calls == {"validation": 1, "reference": 4}  # the base's numbers from disk: only the evaluation
    measured = alone("d", **{"eval.cache_base_answers": False})
    assert calls == {"validation": 2, "reference": 6}
    for cached in os.scandir(os.environ["SMALLTUNE_ANSWER_CACHE"]):  # an unreadable file is measured again
        Path(cached.path).write_text("{not json", encoding="utf-8")
    unreadable = alone("e")
    assert calls == {"validation": 3, "reference": 8}
    for run in (from_disk, measured, unreadable):
        assert run.base_metrics == full.base_metrics
        assert run.guards["forgetting_budget"]["base_ppl"] == full.guards["forgetting_budget"]["base_ppl"]
    other = train(make_recipe(**{**common, "guards.reference_tokens": 1024}, output_dir=str(tmp_path / "f")),
                  progress=False, base=base, verbose=False)  # other reference items: measured, not reused
    assert calls == {"validation": 3, "reference": 10} and other.steps == 3


def test_splits_passed_in_memory_are_trained_and_recorded(make_recipe, tmp_path):
    recipe = make_recipe(**{"train.max_steps": 2})
    full = load_splits(recipe)
    fold = Splits(full.train[:12], full.train[12:18], "fold 1 of 3")
    result = train(recipe, progress=False, splits=fold, verbose=False)
    record = json.loads((RunDir(result.run_dir).path / "splits.json").read_text())
    assert record["train"] == [e.id for e in fold.train] and record["validation"] == [e.id for e in fold.validation]
    assert record["validation_source"] == "fold 1 of 3" and result.data["validation_source"] == "fold 1 of 3"


@pytest.mark.parametrize("paragraphs", [1, 8, 64, 65, 300])
def test_measurement_and_training_paragraphs_never_overlap(make_recipe, paragraphs):
    recipe = make_recipe(**{"eval.reference_paragraphs": paragraphs, "train.seed": paragraphs})
    roles = reference_roles(recipe)
    measured = set(roles.take_measure("measure_evaluation", paragraphs))
    measured |= set(roles.take_measure("measure_forgetting_guard", GUARD_PARAGRAPHS))
    trained = set(roles.take_train("replay", 500)) | set(roles.take_train("ewc_fisher", 64))
    assert len(measured) == max(paragraphs, GUARD_PARAGRAPHS) and len(trained) == 500
    assert measured.isdisjoint(trained) and measured.isdisjoint(roles.train_pool)


@pytest.mark.parametrize("eval_paragraphs,guard_tokens", [(4, 256), (200, 8192)])
def test_a_run_records_which_paragraphs_served_which_purpose(make_recipe, eval_paragraphs, guard_tokens):
    recipe = make_recipe(**{"train.max_steps": 2, "regularize.replay_ratio": 0.3, "regularize.ewc_lambda": 10.0,
                            "regularize.replay_source": "reference",
                            "guards.forgetting_budget": 0.5, "guards.reference_tokens": guard_tokens,
                            "eval.reference_paragraphs": eval_paragraphs})
    result = train(recipe, progress=False, verbose=False)
    record = json.loads((RunDir(result.run_dir).path / "splits.json").read_text())
    purposes = record["reference"]["purposes"]
    assert set(purposes) == {"replay", "ewc_fisher", "measure_forgetting_guard"}
    trained = set(purposes["replay"]["ids"]) | set(purposes["ewc_fisher"]["ids"])
    measured = {text_id(t) for t in record["reference"]["measure"]}
    assert purposes["replay"]["count"] > 0 and purposes["ewc_fisher"]["count"] > 0
    assert trained.isdisjoint(measured)
    assert set(purposes["measure_forgetting_guard"]["ids"]) <= measured
    assert len(record["reference"]["measure"]) >= eval_paragraphs  # evaluation reads its paragraphs from here
    assert record["sources"]["evaluation_general_questions"].endswith("measurement only")


def test_evaluation_reads_the_recorded_validation_split(make_recipe):
    from smalltune.evaluate.probes.memorization import training_examples
    from smalltune.train.splits import recorded_splits

    recipe = make_recipe(**{"train.max_steps": 1})
    result = train(recipe, progress=False, verbose=False)
    recorded = recorded_splits(result.run_dir, recipe)
    assert [e.id for e in recorded.validation] == json.loads((RunDir(result.run_dir).path / "splits.json").read_text())["validation"]
    assert {e.id for e in training_examples(recipe, result.run_dir)}.isdisjoint(e.id for e in recorded.validation)


def test_one_plugin_protocol_builds_from_registries(make_recipe):
    from smalltune.train.guards import GUARDS
    from smalltune.train.plugins import Plugin, build_plugins
    from smalltune.train.regularize import REGULARIZERS
    from smalltune.train.targets import DATA_PLUGINS

    recipe = make_recipe(**{"regularize.sam_rho": 0.05, "regularize.ewc_lambda": 1.0, "regularize.neftune_alpha": 5.0,
                            "regularize.replay_ratio": 0.2, "targets.stm_threshold": 2.5})
    plugins = build_plugins(recipe)
    assert all(isinstance(p, Plugin) for p in plugins)
    assert {"sam", "ewc", "neftune", "replay", "stm", "numerical", "early_stopping"} <= set(plugins.names)
    for registry in (GUARDS, REGULARIZERS, DATA_PLUGINS):
        for name, cls in registry.items():
            assert issubclass(cls, Plugin) and cls.keys, f"{name} must declare the recipe keys it reads"
    assert plugins.names.index("numerical") < plugins.names.index("early_stopping")  # measure before deciding
