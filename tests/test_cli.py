"""The CLI: help on every verb; user errors are one line with exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from smalltune.cli import VERBS, main


def smalltune(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "smalltune", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("verb", [v.NAME for v in VERBS])
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as code:
        main([verb, "--help"])
    assert code.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: smalltune {verb}")


def test_top_level_help_lists_every_verb():
    res = smalltune("--help")
    assert res.returncode == 0
    for verb in VERBS:
        assert verb.NAME in res.stdout


def test_bad_recipe_is_one_line_exit_2(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  train: t.jsonl\ntrain:\n  lr: -1\n")
    res = smalltune("train", str(recipe))
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: invalid recipe {recipe}: train.lr must be > 0, got -1"


def test_malformed_data_is_one_line_exit_2(tmp_path, tiny_model_dir):
    (tmp_path / "t.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model:\n  name: {tiny_model_dir}\ndata:\n  train: t.jsonl\noutput_dir: {tmp_path / 'run'}\n")
    res = smalltune("train", str(recipe))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 't.jsonl'}:2: malformed JSON")


def test_missing_local_model_folder(tmp_path, toy_data):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model:\n  name: ./no-such-model\ndata:\n  train: {toy_data}\noutput_dir: {tmp_path / 'run'}\n")
    res = smalltune("train", str(recipe))
    assert res.returncode == 2 and "model.name: ./no-such-model does not exist" in res.stderr
    assert "Traceback" not in res.stderr


def test_offline_hub_id_fails_clearly(tmp_path, toy_data):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model:\n  name: someorg/some-model\ndata:\n  train: {toy_data}\noutput_dir: {tmp_path / 'run'}\n")
    res = smalltune("train", str(recipe))
    assert res.returncode == 2
    assert "model.name: 'someorg/some-model' is not a built-in model" in res.stderr
    assert "Traceback" not in res.stderr


def test_recipe_verb_documents_every_key():
    res = smalltune("recipe")
    assert res.returncode == 0 and "train.lr" in res.stdout and "peak learning rate" in res.stdout


def test_a_finished_verb_leaves_the_process_group_a_failed_one_does_not(tmp_path):
    """torch asks every rank to destroy its process group at exit (gloo's threads may otherwise abort a finished run at
    teardown); after a failure another rank may be inside a collective, so the group is left alone."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert main(["recipe", "--check", str(tmp_path / "missing.yaml")]) == 2 and dist.is_initialized()
        assert main(["models"]) == 0 and not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
