"""`smalltune cv` on the tiny model: folds keep near-duplicates together and hold every example out once,
each fold is a valid run directory evaluated on its held-out examples, and cv.json's aggregates are exactly
what the fold files say."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from conftest import chat, toy_records, write_jsonl
from smalltune.audit.similar import SimilarityIndex
from smalltune.audit.text import normalise
from smalltune.cli import main
from smalltune.cv import cross_validate
from smalltune.cv.folds import make_folds
from smalltune.data import load_examples
from smalltune.rundir import RunDir
from smalltune.schema.evaluation import read_eval

SMALL = {"train.max_steps": 4, "eval.test_samples": 4, "eval.memorization_samples": 4,
         "eval.reference_paragraphs": 2, "eval.probe_questions": 4, "eval.max_new_tokens": 6,
         "early_stopping.enabled": False}


def paraphrased_records() -> list[dict]:
    """toy_records plus reworded copies of some questions: near-duplicates that must share a fold."""
    recs = toy_records(36)
    extra = [chat("When are you open??", recs[0]["messages"][1]["content"], id="para-1", category="hours"),
             chat("when ARE you open", recs[0]["messages"][1]["content"], id="para-2", category="hours"),
             chat("What is your address, please?", recs[2]["messages"][1]["content"], id="para-3", category="location")]
    return recs + extra


def audit_clusters(examples) -> list[set[str]]:
    """Clusters straight from the audit's similarity index (prompts and whole conversations), by id."""
    prompts = [normalise(e.prompt_text) for e in examples]
    convs = [" ".join(normalise(m["content"]) for m in e.messages) for e in examples]
    out = []
    for texts in (prompts, convs):
        for c in SimilarityIndex.build({"train": texts}, 0.8).clusters("train"):
            out.append({examples[i].id for i in c})
    return out


def test_folds_hold_each_example_out_once_and_never_split_a_cluster(tmp_path):
    examples = load_examples(write_jsonl(tmp_path / "train.jsonl", paraphrased_records()))
    clusters = audit_clusters(examples)
    assert any({"ex-0", "para-1", "para-2"} <= c for c in clusters)  # the paraphrases are a real cluster
    for seed in (0, 1, 2):
        folds = make_folds(examples, 3, seed)  # each category has at least 3 clusters
        held = [e.id for f in folds for e in f.validation]
        assert sorted(held) == sorted(e.id for e in examples)  # each exactly once
        fold_of = {e.id: f.index for f in folds for e in f.validation}
        for c in clusters:
            assert len({fold_of[i] for i in c}) == 1, (seed, c)
        for f in folds:  # stratified: every category is held out in every fold
            assert {e.category for e in f.validation} == {"hours", "prices", "location"}
            assert not {e.id for e in f.train} & {e.id for e in f.validation}


def test_too_many_folds_and_duplicate_ids_are_one_line_errors(tmp_path, make_recipe, capsys):
    recs = [chat(f"Question number {w} about teeth", "An answer.", id=f"q{i}") for i, w in
            enumerate(["one", "two", "three"])]
    recipe = make_recipe(**{"data.train": str(write_jsonl(tmp_path / "three.jsonl", recs))})
    path = tmp_path / "recipe.yaml"
    recipe.save(path)
    assert main(["cv", str(path), "--folds", "5", "--output", str(tmp_path / "cv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--folds 3" in err[0]
    dup = write_jsonl(tmp_path / "dup.jsonl", [chat("Hi there friend", "Hello.", id="same"), chat("Bye now", "Bye.", id="same")])
    recipe = make_recipe(**{"data.train": str(dup)})
    recipe.save(path)
    assert main(["cv", str(path), "--folds", "2", "--output", str(tmp_path / "cv2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'same'" in err[0] and "dup.jsonl:2" in err[0]


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, tiny_model_dir):
    from smalltune.recipe import recipe_from_dict
    from smalltune.train import setup as setup_module

    tmp = tmp_path_factory.mktemp("cv")
    data = write_jsonl(tmp / "train.jsonl", paraphrased_records())
    raw = {"model": {"name": str(tiny_model_dir)}, "data": {"train": str(data), "max_length": 96},
           "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "seed": 0}, "eval": {"every_steps": 2, "batch_size": 16},
           "output_dir": str(tmp / "cv")}
    recipe = recipe_from_dict(raw, [f"{k}={json.dumps(v)}" for k, v in SMALL.items()])
    loads = []
    real = setup_module.Base.load.__func__
    setup_module.Base.load = classmethod(lambda cls, r: loads.append(1) or real(cls, r))
    try:
        cv = cross_validate(recipe, folds=3, seed=0, probes=["task", "forgetting"], progress=False)
    finally:
        setup_module.Base.load = classmethod(real)
    return cv, tmp / "cv", load_examples(data), len(loads)


def test_every_fold_is_a_valid_run_evaluated_on_its_held_out_fold(cv_run):
    cv, out, examples, loads = cv_run
    assert loads == 1  # one loaded base model serves every fold
    assert cv["status"] == "complete" and json.loads((out / "cv.json").read_text()) == cv
    validated = []
    for plan in cv["fold_plan"]:
        run = RunDir(out / "folds" / f"fold-{plan['fold']}")
        for path in (run.recipe, run.provenance, run.metrics, run.train_summary, run.splits, run.eval):
            assert path.is_file(), path
        assert (run.adapter / "adapter_model.safetensors").is_file()
        splits = json.loads(run.splits.read_text())
        assert splits["validation"] == plan["validation_ids"]
        assert not set(splits["train"]) & set(splits["validation"])
        assert len(splits["train"]) + len(splits["validation"]) == len(examples)
        ev = read_eval(run.eval, run.path)
        # evaluated on the held-out fold: the task probe's questions are exactly the fold's examples
        assert "validation split" in ev.settings.heldout
        assert {s.id for s in ev.samples} <= set(plan["validation_ids"])
        assert ev.samples
        validated += plan["validation_ids"]
    assert sorted(validated) == sorted(e.id for e in examples)  # every example validated exactly once


def test_aggregates_equal_hand_computation_from_the_fold_files(cv_run):
    cv, out, _, _ = cv_run
    evals = [json.loads((out / "folds" / f"fold-{k}" / "eval.json").read_text())["probes"] for k in (1, 2, 3)]
    summaries = [json.loads((out / "folds" / f"fold-{k}" / "train_summary.json").read_text()) for k in (1, 2, 3)]
    metrics = cv["aggregate"]["metrics"]
    assert "task.rouge_l" in metrics and "forgetting.reference_ppl" in metrics
    checked = 0
    for name, m in metrics.items():
        probe, key = name.split(".")
        for side in ("finetuned", "delta"):
            values = [e[probe][key][side] if side in e[probe][key] else None for e in evals]
            if key == "reference_ppl_relative_change":
                values = [e[probe][key]["value"] for e in evals] if side == "finetuned" else [None]
            values = [v for v in values if v is not None]
            if len(values) < 2:
                continue
            mean = sum(values) / len(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            half = stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
            assert m[side]["mean"] == pytest.approx(mean, abs=1e-6)
            assert m[side]["ci"] == pytest.approx([mean - half, mean + half], abs=1e-6)
            checked += 1
    assert checked >= 6
    best = [s["best_step"] for s in summaries]
    spread = cv["aggregate"]["checkpoints"]["best_step"]
    assert spread["values"] == best and spread["min"] == min(best) and spread["max"] == max(best)
    # the pages show the fold table and the metric table
    md, html = (out / "cv.md").read_text(), (out / "cv.html").read_text()
    for text in (md, html):
        assert "ROUGE-L (held-out)" in text and "fold 3" in text
    assert html.count('<td class="num">') > 9 and "<style>" in html


def test_resume_keeps_finished_folds(cv_run, monkeypatch):
    cv, out, _, _ = cv_run
    import sys

    train_pkg, eval_pkg = sys.modules["smalltune.train"], sys.modules["smalltune.evaluate"]  # the packages, not the functions
    monkeypatch.setattr(train_pkg, "train", lambda *a, **k: pytest.fail("a finished fold was trained again"))
    monkeypatch.setattr(eval_pkg, "evaluate", lambda *a, **k: pytest.fail("a finished fold was evaluated again"))
    from smalltune.recipe import load_recipe

    recipe = load_recipe(out / "folds" / "fold-1" / "recipe.yaml")
    recipe.data.train = cv["train_file"]
    again = cross_validate(recipe, folds=3, seed=0, output=out, resume=True, probes=["task", "forgetting"],
                           progress=False)
    assert again["aggregate"] == cv["aggregate"]
    with pytest.raises(Exception, match="not empty"):
        cross_validate(recipe, folds=3, seed=0, output=out, progress=False)
