"""Guards inside real (tiny-model) training runs: forgetting budget and numerical health stop the run."""

from __future__ import annotations

import json

import torch

from smalltune import load_trained, train
from smalltune.rundir import RunDir


def test_tiny_forgetting_budget_stops_and_keeps_a_checkpoint_within_budget(make_recipe):
    # Warmup makes the first optimizer step's learning rate 0, so the step-1 evaluation equals the base
    # model (within any budget, even 0); a later one moves reference perplexity and exceeds it.
    recipe = make_recipe(**{"guards.forgetting_budget": 0.0, "guards.reference_tokens": 512, "eval.every_steps": 1,
                            "train.max_steps": 12, "early_stopping.enabled": False})
    result = train(recipe, progress=False)
    run = RunDir(result.run_dir)
    evals = [r for r in run.read_metrics() if r.kind == "eval"]
    assert result.stopped == "forgetting_budget"
    assert all(r.ref_ppl is not None and r.ref_ppl_base is not None for r in evals)
    assert evals[0].within_forgetting_budget and evals[0].ref_ppl == evals[0].ref_ppl_base
    assert evals[-1].forgetting > 0 and not evals[-1].within_forgetting_budget
    assert result.steps == evals[-1].step < 12
    stop = [e for e in result.events if e["guard"] == "forgetting_budget"]
    assert stop and stop[0]["action"] == "stop" and stop[0]["values"]["budget"] == 0.0
    summary = json.loads(run.train_summary.read_text())
    assert summary["stopped"] == "forgetting_budget" and summary["guards"]["forgetting_budget"]["base_ppl"] > 0
    # The kept checkpoint is the best evaluation within budget, even where a later one had lower loss.
    within = [r for r in evals if r.within_forgetting_budget]
    assert result.best_step == min(within, key=lambda r: r.eval_loss).step
    assert result.artifact_written and run.adapter.exists() and not run.best.exists()  # published: no second copy


def test_absurd_learning_rate_stops_on_numerical_guard_and_publishes_nothing_worse_than_base(make_recipe, tmp_path, capsys):
    from smalltune.cli import main

    recipe = make_recipe(**{"train.lr": 1000.0, "train.epochs": 5, "eval.every_steps": 2})
    path = tmp_path / "recipe.yaml"
    recipe.save(path)
    code = main(["train", str(path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: training stopped by the numerical guard:" in err and "lower train.lr (now 1000)" in err
    run = RunDir(recipe.output_dir)
    summary = json.loads(run.train_summary.read_text())
    assert summary["stopped"] == "numerical" and summary["best_step"] is not None
    assert summary["steps"] < 5 * 8
    # issue 20 item 7: the kept checkpoint is worse than the untrained model on validation, so it is not the result
    base_loss, best_loss = summary["base_metrics"]["eval_loss"], summary["best_metrics"]["eval_loss"]
    assert best_loss > base_loss
    assert not summary["artifact_written"] and not run.adapter.exists()
    assert "worse than the base model" in summary["stop_message"] and "worse than the base model" in err
    assert (run.best / "trainable.safetensors").exists()  # still there for inspection


def test_a_checkpoint_better_than_base_is_published(make_recipe):
    result = train(make_recipe(**{"train.max_steps": 6}), progress=False)
    assert result.base_metrics["eval_loss"] > result.best_metrics["eval_loss"]
    assert result.artifact_written
    model, tok, _ = load_trained(result.run_dir)
    ids = tok("When are you open?", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**ids).logits).all()


def test_a_plugin_that_abandons_the_run_leaves_no_weights(make_recipe):
    # A pruned tuning trial: never chosen, so neither its artifact nor best/ (hundreds of MB each) is written.
    from smalltune.train.plugins import GuardEvent, Plugin

    class Abandon(Plugin):
        name = "abandoner"

        def check(self, record, step):
            return GuardEvent(self.name, "abandon", step, "not wanted") if step >= 4 else None

    recipe = make_recipe(**{"eval.every_steps": 2, "train.max_steps": 12, "train.checkpoint_minutes": 0.0})
    result = train(recipe, progress=False, plugins=[Abandon()])
    run = RunDir(result.run_dir)
    assert result.stopped == "abandoner" and result.steps == 4 and result.best_step is not None
    assert not result.artifact_written and "abandoner abandoned the run" in result.stop_message
    assert not run.adapter.exists() and not run.best.exists() and not list(run.step_checkpoints())
    assert json.loads(run.train_summary.read_text())["artifact_written"] is False
    # killed between its summary and the cleanup: a checkpoint and best/ are left; --resume removes both
    for folder in (run.best, run.checkpoint(4)):
        folder.mkdir(parents=True)
        (folder / "left.safetensors").write_bytes(b"x")
    again = train(recipe, resume=True, progress=False, plugins=[Abandon()])
    assert again.steps == 4 and not run.best.exists() and not list(run.step_checkpoints())
