"""One writer per run directory (issue 20 item 2): the lock is taken before the model loads, a second
run into the same folder fails at once with one line, and a lock left by a dead process is no obstacle."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from smalltune.errors import SmalltuneError
from smalltune.rundir import RunLock, open_run_dir

HOLD = "import sys, time; from smalltune.rundir import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"


def hold_lock(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_before_anything_loads(make_recipe, monkeypatch):
    from smalltune.train import loop

    recipe = make_recipe(**{"train.max_steps": 1})
    holder = hold_lock(recipe.output_dir)
    try:
        monkeypatch.setattr(loop, "_load", lambda r: pytest.fail("the model loaded before the lock was checked"))
        with pytest.raises(SmalltuneError, match=rf"in use by another smalltune process \(pid {holder.pid}\)"):
            loop.train(recipe, progress=False)
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_is_not_stale(make_recipe):
    recipe = make_recipe(**{"train.max_steps": 1})
    holder = hold_lock(recipe.output_dir)
    holder.kill()  # as kill -9: the kernel drops the lock; the .lock file with its pid stays behind
    holder.wait()
    run = open_run_dir(recipe)
    assert (run.path / ".lock").exists()
    run.lock.release()


def test_two_cli_runs_into_one_folder_one_fails_cleanly(make_recipe, tmp_path):
    # 2000 steps (epochs alone would end it after 16): long enough to overlap the second run's start
    recipe = make_recipe(**{"train.max_steps": 2000, "train.epochs": 1000, "eval.every_steps": 2000})
    path = tmp_path / "recipe.yaml"
    recipe.save(path)
    cmd = [sys.executable, "-m", "smalltune", "train", str(path), "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "run" / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.2)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert first.poll() is None  # the first run was still training
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2
    assert second.stderr.strip().count("\n") == 0 and "in use by another smalltune process" in second.stderr
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert sum('"event": "start"' in line for line in metrics) == 1  # one writer, every record once


def test_lock_is_released_after_a_run(make_recipe):
    from smalltune import train

    recipe = make_recipe(**{"train.max_steps": 1})
    train(recipe, progress=False)
    RunLock(recipe.output_dir).acquire().release()  # free again
