"""Training with the tiny model: what changes, what is saved, what resumes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from smalltune import train
from smalltune.rundir import RunDir


def test_only_adapter_weights_change_and_base_stays(make_recipe, tiny_model_dir):
    recipe = make_recipe(**{"train.max_steps": 6})
    base_before = load_file(str(tiny_model_dir / "model.safetensors"))
    result = train(recipe, progress=False)
    run = RunDir(result.run_dir)
    adapter = load_file(str(run.adapter / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)  # B starts at 0: it learned

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(run.adapter))
    merged_names = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
                    for n, p in tuned.named_parameters() if "lora_" not in n}
    for name, p in base.named_parameters():
        assert torch.equal(p, base_before[name] if name in base_before else p)
        assert torch.equal(merged_names[name], p), f"base weight {name} changed"


def test_saved_adapter_reloads_to_identical_logits(make_recipe, tiny_model_dir, monkeypatch):
    from smalltune import load_trained
    from smalltune.models import load_model
    from smalltune.train.methods import METHODS

    lora = METHODS.get("lora")
    chosen, save = {}, lora.save
    monkeypatch.setattr(lora, "save", lambda self, model, path: chosen.update(self.trainable_state(model))
                        or save(self, model, path))
    recipe = make_recipe(**{"train.max_steps": 4, "early_stopping.enabled": False})
    result = train(recipe, progress=False)
    assert chosen and not RunDir(result.run_dir).best.exists()  # the adapter holds the chosen weights: no copy

    model, tok, _ = load_trained(result.run_dir)
    # The weights the run published, restored into a fresh PEFT model, give the same logits.
    base, _ = load_model(str(tiny_model_dir))
    method = lora()
    fresh = method.apply(base, recipe.method)
    method.load_trainable_state(fresh, chosen)
    fresh.eval()
    ids = tok("Where is the clinic?", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, fresh(**ids).logits)


def test_early_stopping_stops_and_restores_best(make_recipe):
    # A huge learning rate makes validation loss worse after the first evaluations.
    recipe = make_recipe(**{"train.lr": 0.05, "train.epochs": 30, "early_stopping.patience": 2,
                            "eval.every_steps": 2, "train.max_grad_norm": None, "train.warmup_ratio": 0})
    result = train(recipe, progress=False)
    assert result.stopped == "early_stopping"
    evals = [r for r in RunDir(result.run_dir).read_metrics() if r.kind == "eval"]
    best = min(evals, key=lambda r: r.eval_loss)
    assert result.best_step == best.step
    assert result.steps < 30 * 8
    assert evals[-1].eval_loss > best.eval_loss


def test_resume_after_crash_matches_uninterrupted_run(make_recipe, tmp_path, monkeypatch):
    from smalltune.train import loop

    common = {"train.max_steps": 8, "eval.every_steps": 2, "early_stopping.enabled": False}
    clean = train(make_recipe(**common, output_dir=str(tmp_path / "clean")), progress=False)

    real_loss, calls = loop.causal_lm_loss, {"n": 0}

    def crash_at_step_6(*args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # as if the process were killed mid-step
        return real_loss(*args)

    crashed_recipe = make_recipe(**common, output_dir=str(tmp_path / "crashed"))
    monkeypatch.setattr(loop, "causal_lm_loss", crash_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(crashed_recipe, progress=False)
    monkeypatch.setattr(loop, "causal_lm_loss", real_loss)
    run = RunDir(tmp_path / "crashed")
    assert [p.name for p in run.step_checkpoints()] == ["step-000002", "step-000004"]
    assert not run.adapter.exists()

    resumed = train(make_recipe(**common, output_dir=str(tmp_path / "crashed")), resume=True, progress=False)
    assert resumed.steps == 8
    events = [r.event for r in run.read_metrics() if r.kind == "event"]
    assert "resume" in events
    steps = [r.step for r in run.read_metrics() if r.kind == "train"]
    assert steps == list(range(1, 9))  # no step logged twice, none missing
    a = load_file(str(RunDir(clean.run_dir).adapter / "adapter_model.safetensors"))
    b = load_file(str(run.adapter / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_refuses_to_overwrite_a_run_without_resume(make_recipe):
    recipe = make_recipe(**{"train.max_steps": 1})
    train(recipe, progress=False)
    from smalltune.errors import SmalltuneError

    with pytest.raises(SmalltuneError, match="already holds a run"):
        train(make_recipe(**{"train.max_steps": 1}), progress=False)


def test_run_directory_has_provenance_and_metrics(make_recipe):
    result = train(make_recipe(**{"train.max_steps": 3}), progress=False)
    run = RunDir(result.run_dir)
    summary = json.loads(run.train_summary.read_text())
    prov = summary["provenance"]
    assert prov["seed"] == 0 and prov["libraries"]["torch"] and prov["recipe"]["train"]["max_steps"] == 3
    assert summary["data"]["validation_source"].startswith("carved")
    kinds = {r.kind for r in run.read_metrics()}
    assert {"train", "eval", "event"} <= kinds
    assert run.recipe.exists() and run.provenance.exists()
