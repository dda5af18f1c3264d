"""Recipe schema: defaults, validation errors naming keys, overrides, YAML round trip."""

from __future__ import annotations

import pytest

from smalltune.errors import RecipeError, SmalltuneError
from smalltune.recipe import Recipe, iter_fields, load_recipe, parse_override, recipe_from_dict


def test_minimal_recipe_gets_documented_defaults():
    r = recipe_from_dict({"data": {"train": "x.jsonl"}})
    assert r.method.name == "lora" and r.train.lr > 0 and r.early_stopping.enabled
    assert all(help_text for _, _, _, help_text, _ in iter_fields()), "every field is documented"


def test_all_problems_reported_at_once_with_keys():
    with pytest.raises(RecipeError) as err:
        recipe_from_dict({"data": {"train": "x.jsonl"}, "train": {"lr": -1, "batch_size": 0, "scheduler": "cosin"}})
    problems = err.value.problems
    assert "train.lr must be > 0, got -1" in problems
    assert "train.batch_size must be > 0, got 0" in problems
    assert any("train.scheduler must be one of" in p and "did you mean 'cosine'" in p for p in problems)
    assert len(problems) == 3


def test_unknown_keys_and_wrong_types_name_the_key():
    with pytest.raises(RecipeError) as err:
        recipe_from_dict({"data": {"train": "x", "max_lenght": 3}, "train": {"epochs": "many"}, "trian": {}})
    text = str(err.value)
    assert "unknown key data.max_lenght (did you mean data.max_length?)" in text
    assert "train.epochs must be a number, got 'many'" in text
    assert "unknown key trian (did you mean train?)" in text


def test_missing_train_file_and_unknown_method():
    with pytest.raises(RecipeError) as err:
        recipe_from_dict({"method": {"name": "lroa"}})
    text = str(err.value)
    assert "data.train is required" in text
    assert "method.name: unknown method 'lroa' (did you mean 'lora'?)" in text


def test_overrides_are_parsed_as_yaml():
    assert parse_override("train.batch_size=4") == (["train", "batch_size"], 4)
    assert parse_override("train.max_steps=null") == (["train", "max_steps"], None)
    r = recipe_from_dict({"data": {"train": "x"}}, ["train.lr=3e-4", "output_dir=/tmp/x", "method.target_modules=[q_proj, v_proj]"])
    assert r.train.lr == 3e-4 and r.output_dir == "/tmp/x" and r.method.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(RecipeError, match="must look like key=value"):
        recipe_from_dict({"data": {"train": "x"}}, ["train.lr"])


def test_yaml_round_trip_with_comments(tmp_path):
    r = recipe_from_dict({"data": {"train": "train.jsonl", "system_prompt": "Be brief: yes"}, "train": {"lr": 1e-4}})
    path = tmp_path / "recipe.yaml"
    r.save(path, notes={"train.lr": "low: small data"})
    text = path.read_text()
    assert "# low: small data" in text and "# peak learning rate" not in text
    again = load_recipe(path)
    assert again.to_dict() == r.to_dict()


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  train: [unclosed\n")
    with pytest.raises(SmalltuneError, match=r"r\.yaml:\d+: not valid YAML"):
        load_recipe(path)
    with pytest.raises(SmalltuneError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_relative_data_paths_resolve_against_recipe_folder(tmp_path):
    (tmp_path / "d.jsonl").write_text("{}\n")
    (tmp_path / "r.yaml").write_text("data:\n  train: d.jsonl\n")
    assert load_recipe(tmp_path / "r.yaml").data.train == str((tmp_path / "d.jsonl").resolve())


def test_recipe_template_is_a_valid_recipe_once_train_is_set(tmp_path):
    text = Recipe().to_yaml()
    path = tmp_path / "t.yaml"
    path.write_text(text)
    assert load_recipe(path, ["data.train=x.jsonl"]).to_dict() == recipe_from_dict({"data": {"train": "x.jsonl"}}).to_dict()
