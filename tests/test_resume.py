"""Exact resume (issue 20 item 1): killed at several points -- across epoch boundaries and during a
checkpoint write -- and resumed, a run ends with the bitwise-same adapter as an uninterrupted one."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import crash_at_call
from smalltune import train
from smalltune.rundir import RunDir

# 30 training examples (6 carved for validation), batch 4: 8 batches per epoch, so 20 steps span 3 epochs.
COMMON = {"train.max_steps": 20, "eval.every_steps": 2, "early_stopping.enabled": False, "train.epochs": 5}


def adapter(run_dir) -> dict:
    return load_file(str(RunDir(run_dir).adapter / "adapter_model.safetensors"))


def test_killed_three_times_across_epochs_resumes_bitwise(make_recipe, tmp_path, monkeypatch):
    clean = train(make_recipe(**COMMON, output_dir=str(tmp_path / "clean")), progress=False)
    out = str(tmp_path / "crashed")
    resume_step, resume = 0, False
    for kill_step in (5, 11, 17):  # epoch 0, epoch 1 (after crossing a boundary), epoch 2
        restore = crash_at_call(monkeypatch, kill_step - resume_step)
        with pytest.raises(KeyboardInterrupt):
            train(make_recipe(**COMMON, output_dir=out), resume=resume, progress=False)
        restore()
        resume_step, resume = int(RunDir(out).step_checkpoints()[-1].name.split("-")[1]), True
        assert resume_step == kill_step - 1  # checkpoints every 2 steps
    resumed = train(make_recipe(**COMMON, output_dir=out), resume=True, progress=False)
    assert resumed.steps == 20 and resumed.epochs > 2
    a, b = adapter(clean.run_dir), adapter(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run = RunDir(out)
    assert [r.step for r in run.read_metrics() if r.kind == "train"] == list(range(1, 21))
    clean_losses = [r.loss for r in RunDir(clean.run_dir).read_metrics() if r.kind == "train"]
    assert [r.loss for r in run.read_metrics() if r.kind == "train"] == clean_losses
    assert resumed.train_tokens == clean.train_tokens


def test_killed_during_a_checkpoint_write_resumes_and_cleans_up(make_recipe, tmp_path, monkeypatch):
    from smalltune.train import checkpoint

    clean = train(make_recipe(**COMMON, output_dir=str(tmp_path / "clean")), progress=False)
    out = str(tmp_path / "crashed")
    real_publish, calls = checkpoint.publish_dir, {"n": 0}

    def killed_while_publishing(tmp, folder):
        calls["n"] += 1
        if calls["n"] == 5:  # the 5th checkpoint (step 10, crossing into epoch 1): files written, not published
            raise KeyboardInterrupt
        real_publish(tmp, folder)

    monkeypatch.setattr(checkpoint, "publish_dir", killed_while_publishing)
    # a kill -9 runs no `finally: rmtree(tmp)`: the checkpoint module's own cleanup does nothing this once
    monkeypatch.setattr(checkpoint, "shutil", SimpleNamespace(rmtree=lambda *a, **k: None))
    with pytest.raises(KeyboardInterrupt):
        train(make_recipe(**COMMON, output_dir=out), progress=False)
    monkeypatch.setattr(checkpoint, "publish_dir", real_publish)
    monkeypatch.setattr(checkpoint, "shutil", shutil)
    run = RunDir(out)
    assert any(p.name.startswith(".step-000010") for p in run.checkpoints.iterdir())  # the interrupted write
    assert run.step_checkpoints()[-1].name == "step-000008"  # the previous checkpoint is intact

    resumed = train(make_recipe(**COMMON, output_dir=out), resume=True, progress=False)
    assert resumed.steps == 20
    assert not [p for p in run.checkpoints.iterdir() if p.name.startswith(".")]  # temporary folders removed
    a, b = adapter(clean.run_dir), adapter(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sparse_checkpoints_resume_bitwise(make_recipe, tmp_path, monkeypatch):
    """train.checkpoint_minutes: --resume checkpoints only at some evaluations (here steps 4 and 12), best-model
    snapshots at every one; killed at step 17, the run resumes from step 12's checkpoint (2.5 evaluations
    back) and ends bitwise as an uninterrupted run."""
    from smalltune.train import loop

    monkeypatch.setattr(loop, "_checkpoint_due", lambda state, now, minutes: state.step in (4, 12))
    common = {**COMMON, "train.checkpoint_minutes": 5, "early_stopping.min_delta": 0.05}
    clean = train(make_recipe(**common, output_dir=str(tmp_path / "clean")), progress=False)
    out = str(tmp_path / "crashed")
    restore = crash_at_call(monkeypatch, 17)
    with pytest.raises(KeyboardInterrupt):
        train(make_recipe(**common, output_dir=out), progress=False)
    restore()
    assert [p.name for p in RunDir(out).step_checkpoints()] == ["step-000004", "step-000012"]
    resumed = train(make_recipe(**common, output_dir=out), resume=True, progress=False)
    assert resumed.steps == 20 and resumed.best_step == clean.best_step
    a, b = adapter(clean.run_dir), adapter(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_cadence_writes_none_in_a_short_run_and_changes_nothing(make_recipe, tmp_path, monkeypatch):
    """Without a --resume checkpoint the best-model snapshots stay in memory: no file in the whole run (the adapter
    holds the chosen weights)."""
    from smalltune.train import loop
    from smalltune.train.guards.snapshots import Snapshots

    written, snapshots = {}, {}
    real_save, real_write = loop.save_checkpoint, Snapshots._write

    def save(run, *args, **kwargs):
        written[run.path.name] = written.get(run.path.name, 0) + 1
        return real_save(run, *args, **kwargs)

    def write(self, step, state):
        snapshots.setdefault(self.run.path.name, []).append(step)
        return real_write(self, step, state)

    monkeypatch.setattr(loop, "save_checkpoint", save)
    monkeypatch.setattr(Snapshots, "_write", write)
    every = train(make_recipe(**COMMON, output_dir=str(tmp_path / "every")), progress=False)
    rare = train(make_recipe(**COMMON, **{"train.checkpoint_minutes": 60}, output_dir=str(tmp_path / "rare")),
                 progress=False)
    assert written.get("every") and not written.get("rare")
    assert not snapshots.get("rare") and len(snapshots["every"]) > 1
    for run in (RunDir(rare.run_dir), RunDir(every.run_dir)):  # the adapter holds the chosen weights: no second copy
        assert not (run.checkpoints / "evals").exists() and not run.best.exists()
    a, b = adapter(every.run_dir), adapter(rare.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a) and rare.best_step == every.best_step


def test_resume_of_a_finished_run_returns_its_summary_and_trains_nothing(make_recipe, tmp_path, monkeypatch):
    # Training on from a finished run's last checkpoint redid the steps after it and then failed to find the
    # chosen step's weights; a finished run now keeps no --resume checkpoints (GBs for a full model) at all.
    out = str(tmp_path / "run")
    done = train(make_recipe(**COMMON, output_dir=out), progress=False)
    assert done.artifact_written and not RunDir(out).step_checkpoints() and not RunDir(out).best.exists()
    (RunDir(out).checkpoints / "step-000004").mkdir(parents=True)  # as left by a kill right after the summary
    before = adapter(out)
    metrics = RunDir(out).metrics.read_text()
    crash_at_call(monkeypatch, 1)  # any training step would now raise
    again = train(make_recipe(**COMMON, output_dir=out), resume=True, progress=False)
    assert again.to_dict() == done.to_dict() and RunDir(out).metrics.read_text() == metrics
    assert not RunDir(out).step_checkpoints()  # the leftovers are gone too
    assert all(torch.equal(before[k], v) for k, v in adapter(out).items())
