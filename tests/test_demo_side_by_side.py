"""The demo's vanilla arm trains in a second process beside smalltune's arm (demo.SideBySide)."""

from __future__ import annotations

import pytest
import torch

from smalltune.demo import SideBySide, side_by_side_threads
from smalltune.errors import SmalltuneError
from smalltune.rundir import RunDir


def test_the_other_arm_trains_in_a_second_process_with_its_share_of_the_threads(make_recipe, tmp_path):
    recipe = make_recipe(**{"train.epochs": 1, "output_dir": str(tmp_path / "demo" / "vanilla")})
    before = torch.get_num_threads()
    with SideBySide(recipe, threads=1) as arm:
        assert torch.get_num_threads() == max(1, before - 1)  # this process keeps the rest
        arm.wait()
    assert torch.get_num_threads() == before
    run = RunDir(tmp_path / "demo" / "vanilla")
    assert run.train_summary.exists() and run.metrics.exists()
    log = (tmp_path / "demo" / "vanilla-train.log").read_text()
    assert "peak memory" in log  # the child's output went to its log


def test_a_failed_arm_is_one_error_naming_its_log(make_recipe, tmp_path):
    recipe = make_recipe(**{"output_dir": str(tmp_path / "demo" / "vanilla")})
    recipe.data.train = str(tmp_path / "missing.jsonl")  # fails in the child, after the parent moved on
    with pytest.raises(SmalltuneError, match=r"vanilla arm's training failed \(exit 1\).*missing\.jsonl.*vanilla-train\.log"):
        with SideBySide(recipe, threads=1) as arm:
            arm.wait()


def test_side_by_side_only_where_it_can_help(monkeypatch):
    import types

    import psutil

    free = {"gib": 8.0}
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=free["gib"] * 2**30))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert side_by_side_threads(vanilla=True) == 2
    assert side_by_side_threads(vanilla=False) == 0 and side_by_side_threads(vanilla=True, allowed=False) == 0
    free["gib"] = 4.0  # two trainings would not fit
    assert side_by_side_threads(vanilla=True) == 0
    free["gib"] = 8.0
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # one thread: nothing to share
    assert side_by_side_threads(vanilla=True) == 0
