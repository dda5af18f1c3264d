"""`smalltune update` with the tiny model: starting from an artifact, corrections, the new-vs-old audit,
the regression gate (a planted regression refused, a harmless update promoted), lineage and the pointer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FACTS, chat, toy_records, write_jsonl
from smalltune.errors import DataError, SmalltuneError
from smalltune.evaluate.context import Caps
from smalltune.recipe import recipe_from_dict
from smalltune.rundir import RunDir

# Small gate caps: the test checks the gate's logic, not the tiny model's numbers.
CAPS = Caps(test=12, memorization=0, reference_paragraphs=4, probe_questions=8, max_new_tokens=8)
# General replay generates the base model's own answers: slow and pointless with a random tiny model.
FAST = ["update.general_replay=0"]
TEST_QUESTIONS = {"hours": "Tell me the hours of the practice", "prices": "Give me the price list please",
                  "location": "Explain the way to your building"}


def _raw(tiny_model_dir, train_file, out, **extra) -> dict:
    raw = {"model": {"name": str(tiny_model_dir)}, "data": {"train": str(train_file), "max_length": 96},
           "train": {"epochs": 3, "batch_size": 6, "lr": 3e-3, "seed": 0, "warmup_ratio": 0},
           "eval": {"every_steps": 4, "batch_size": 16}, "output_dir": str(out)}
    for key, value in extra.items():
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    return raw


def _test_records() -> list[dict]:
    return [chat(f"{q} ({i})", FACTS[c], id=f"t-{c}-{i}", category=c, key_facts=[FACTS[c].split()[-1]])
            for c, q in TEST_QUESTIONS.items() for i in range(4)]


@pytest.fixture(scope="module")
def first(tmp_path_factory, tiny_model_dir):
    """The first version: the tiny model fully fine-tuned on the toy clinic facts (LoRA barely moves a random
    width-32 model), with a test set; in a project folder of its own."""
    from smalltune import train

    tmp = tmp_path_factory.mktemp("update")
    data = write_jsonl(tmp / "train.jsonl", toy_records(36))
    test = write_jsonl(tmp / "test.jsonl", _test_records())
    recipe = recipe_from_dict(_raw(tiny_model_dir, data, tmp / "clinic" / "v1", **{"data.test": str(test),
                                                                                 "method.name": "full", "train.lr": 1e-2}))
    result = train(recipe, progress=False, verbose=False)
    assert result.artifact_written
    return tmp / "clinic" / "v1"


def _logits(model, tok):
    ids = tok(["When are you open?", "What is your address?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**ids).logits


# --- starting from an artifact (train.setup(init_from=...)) ----------------------------------------------
@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_model_started_from_an_artifact_has_its_logits_before_any_step(tmp_path, tiny_model_dir, method):
    from smalltune import load_trained, train
    from smalltune.models import load_model
    from smalltune.train.data import prepare_data
    from smalltune.train.setup import setup

    data = write_jsonl(tmp_path / "train.jsonl", toy_records(24))
    lr = 1e-2 if method == "lora" else 1e-3
    recipe = recipe_from_dict(_raw(tiny_model_dir, data, tmp_path / "run",
                                   **{"method.name": method, "train.max_steps": 4, "train.lr": lr}))
    result = train(recipe, progress=False, verbose=False)
    trained, tok, _ = load_trained(result.run_dir)
    base, _ = load_model(str(tiny_model_dir))
    fresh_base, _ = load_model(str(tiny_model_dir))
    artifact = Path(result.run_dir) / ("adapter" if method == "lora" else "model")
    parts = setup(recipe, base, tok, prepare_data(recipe, tok), init_from=str(artifact))
    started = parts.unwrapped.eval()
    assert not torch.equal(_logits(fresh_base, tok), _logits(trained, tok))  # training changed something
    assert torch.allclose(_logits(started, tok), _logits(trained, tok), atol=1e-5)
    assert parts.trainable > 0 and any(p.requires_grad for p in started.parameters())  # and it can train on
    # a run from the artifact starts where its parent ended: that, not the base model, is what publishing must beat
    recipe.output_dir, recipe.train.max_steps = str(tmp_path / "next"), 1
    train(recipe, progress=False, verbose=False, init_from=str(artifact))
    start = json.loads((tmp_path / "next" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["base_eval"]["eval_loss"] == pytest.approx(result.best_metrics["eval_loss"], rel=1e-4)


def test_base_view_shows_the_base_inside_and_the_parents_weights_after(tiny_model_dir, tokenizer):
    from smalltune.models import load_model
    from smalltune.train.setup import base_view, keep_base

    model, _ = load_model(str(tiny_model_dir))
    base_logits = _logits(model, tokenizer)
    kept = keep_base(model)
    with torch.no_grad():  # a parent's weights: every trainable tensor moved
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    parent_logits = _logits(model, tokenizer)
    assert not torch.allclose(base_logits, parent_logits, atol=1e-3)
    with base_view(model, kept):
        assert torch.allclose(_logits(model, tokenizer), base_logits, atol=1e-6)
    assert torch.equal(_logits(model, tokenizer), parent_logits)  # put back exactly
    with pytest.raises(ValueError), base_view(model, kept):
        raise ValueError("a failed measurement")
    assert torch.equal(_logits(model, tokenizer), parent_logits)  # put back after an error too
    with base_view(model, None):  # a run from the base: the model as it is
        assert torch.equal(_logits(model, tokenizer), parent_logits)


def test_the_forgetting_budget_of_an_update_counts_from_the_base_model_not_the_parent(tmp_path, tiny_model_dir):
    """A full-model update must not get a fresh budget over its parent: per version it would compound."""
    from smalltune import train

    data = write_jsonl(tmp_path / "train.jsonl", toy_records(24))
    guard = {"method.name": "full", "train.lr": 1e-2, "train.max_steps": 4, "eval.every_steps": 2,
             "guards.forgetting_budget": 100.0, "guards.reference_tokens": 256}
    summaries = []
    for name, start in (("v1", None), ("v2", tmp_path / "v1" / "model")):
        recipe = recipe_from_dict(_raw(tiny_model_dir, data, tmp_path / name, **guard))
        train(recipe, progress=False, verbose=False, init_from=str(start) if start else None)
        summaries.append(json.loads((tmp_path / name / "train_summary.json").read_text()))
    v1, v2 = (s["guards"]["forgetting_budget"] for s in summaries)
    parent_ppl = [json.loads(x) for x in (tmp_path / "v1" / "metrics.jsonl").read_text().splitlines()
                  if '"ref_ppl"' in x][-1]["ref_ppl"]
    assert abs(parent_ppl / v1["base_ppl"] - 1) > 0.01  # v1 moved away from the base: the two readings differ
    assert v2["base_ppl"] == pytest.approx(v1["base_ppl"], rel=1e-5)


def test_starting_from_another_methods_artifact_is_one_clear_error(first, tiny_model_dir, tmp_path):
    from smalltune.models import load_model
    from smalltune.train.data import prepare_data
    from smalltune.train.setup import setup

    recipe = recipe_from_dict(_raw(tiny_model_dir, first.parent.parent / "train.jsonl", tmp_path / "x",
                                   **{"method.name": "lora"}))
    base, tok = load_model(str(tiny_model_dir))
    with pytest.raises(SmalltuneError, match="do not fit"):  # a whole model/ is no LoRA adapter
        setup(recipe, base, tok, prepare_data(recipe, tok), init_from=str(first / "model"))


# --- corrections ----------------------------------------------------------------------------------------
def test_corrections_become_training_and_test_examples(tmp_path):
    from smalltune.update.corrections import read_new_data

    rows = [{"prompt": f"How much is service {i}?", "model_answer": "$80", "corrected_answer": f"It costs ${90 + i}.",
             "key_facts": [f"${90 + i}"]} for i in range(10)]
    rows[0]["split"] = "test"
    rows.append(chat("A plain chat record", "is training data too"))
    path = write_jsonl(tmp_path / "fix.jsonl", rows)
    new = read_new_data(path, test_share=0.2, seed=0)
    assert new.corrections == 10 and len(new.train) + len(new.test) == 11
    assert "fix-1" in {e.id for e in new.test}  # split: test is honoured
    assert len(new.test) == 1 + round(9 * 0.2)  # the rest drawn by the share
    ex = next(e for e in new.train if e.shape == "correction")
    assert ex.messages[0]["role"] == "user" and ex.target.startswith("It costs")
    assert ex.meta["model_answer"] == "$80" and ex.meta["key_facts"]
    assert read_new_data(path, test_share=0.2, seed=0).test[1].id == new.test[1].id  # seeded: the same draw


def test_a_bad_correction_names_file_and_line(tmp_path):
    from smalltune.update.corrections import read_new_data

    path = write_jsonl(tmp_path / "fix.jsonl", [{"prompt": "ok?", "corrected_answer": "yes"},
                                               {"prompt": "q", "corrected_answer": " ", "split": "dev"}])
    with pytest.raises(DataError, match=r"fix.jsonl:2: corrected_answer must be a non-empty string \(and 1 more\)"):
        read_new_data(path)


# --- the new-vs-old audit -------------------------------------------------------------------------------
def _ex(records, name):
    from smalltune.data.formats import normalise

    return [normalise(r, name, i + 1, i) for i, r in enumerate(records)]


def test_conflicts_copies_and_leakage_between_old_and_new_are_found():
    from smalltune.update.compare import compare

    old = _ex([chat("How much does a cleaning cost?", "A cleaning costs $80.", id="o1"),
               chat("When are you open on Saturday?", "9 am to 1 pm.", id="o2"),
               chat("Where do I park my car near the clinic?", "Behind the building.", id="o3")], "old.jsonl")
    new = _ex([chat("how much does a cleaning cost", "A cleaning costs $95 now.", id="n1"),  # changed fact
               chat("When are you open on Saturday?", "9 am to 1 pm.", id="n2"),  # a copy
               chat("When are you open on Sunday?", "We are closed on Sunday.", id="n3"),  # a different question
               chat("Do you take new patients?", "Yes.", id="n4"),
               chat("Do you take new patients?", "Yes, every weekday.", id="n5")], "new.jsonl")  # disagrees with n4
    old_test = _ex([chat("How much does a cleaning cost?", "$80", id="t1"),  # stale: the price changed
                    chat("Can I park my car near the clinic?", "Behind the building.", id="t2"),
                    chat("When are you open on Sunday?", "We are closed on Sunday.", id="t3")], "test.jsonl")  # leaked
    c = compare(old, new, old_test, [])
    assert [e.id for e in c.stale] == ["o1"] and [e.id for e in c.replacing] == ["n1"]
    assert [e.id for e in c.copies] == ["n2"]
    assert [e.id for e in c.superseded] == ["n4"]
    assert [e.id for e in c.stale_test] == ["t1"]
    assert [e.id for e in c.leaked_test] == ["t3"]
    titles = {f.title: f for f in c.findings}
    changed = titles["changed answers: earlier examples are stale"]
    assert changed.examples[0]["old_answer"] == "A cleaning costs $80." and changed.examples[0]["line"] == 1
    assert "the new data disagrees with itself" in titles


def test_an_earlier_answer_that_states_a_replaced_value_is_stale_too():
    """A changed price stated in answer to another question teaches the old price as well."""
    from smalltune.update.compare import compare

    old = _ex([chat("How much does a cleaning cost?", "A cleaning costs $80.", id="o1"),
               chat("What are your prices?", "A checkup is $60 and a cleaning $80.", id="o2"),  # states the old price
               chat("How much is whitening?", "Whitening costs $800.", id="o3"),  # another value: not $80
               chat("When do you open?", "We open at 8 am.", id="o4")], "old.jsonl")
    new = _ex([chat("how much does a cleaning cost", "A cleaning costs $95.", id="n1")], "new.jsonl")
    old_test = _ex([chat("Tell me the price of a cleaning and a checkup", "$80 and $60", id="t1"),
                    chat("Is whitening expensive?", "It is $800.", id="t2")], "test.jsonl")
    c = compare(old, new, old_test, [])
    assert [e.id for e in c.stale] == ["o1", "o2"] and [e.id for e in c.stale_test] == ["t1"]
    finding = next(f for f in c.findings if f.title == "earlier answers that state a replaced value")
    assert {(p["id"], p["value"]) for p in finding.examples} == {("o2", "$80"), ("t1", "$80")}


# --- the pointer ----------------------------------------------------------------------------------------
def _fake_version(project: Path, name: str) -> Path:
    run = project / name
    (run / "adapter").mkdir(parents=True)
    (run / "recipe.yaml").write_text("data:\n  train: x.jsonl\n")
    return run


def test_promote_and_rollback_move_the_pointer(tmp_path):
    from smalltune.update import promote, rollback
    from smalltune.update.pointer import read_pointer

    for name in ("a", "b", "c"):
        _fake_version(tmp_path, name)
        promote(tmp_path / name)
    assert read_pointer(tmp_path)["version"] == "c"
    assert rollback(tmp_path)["version"] == "b"
    assert rollback(tmp_path)["version"] == "a"  # repeated rollbacks walk back, not forth
    with pytest.raises(SmalltuneError, match="nothing was served before a"):
        rollback(tmp_path)
    assert rollback(tmp_path, to="c")["version"] == "c"
    history = [m["version"] for m in read_pointer(tmp_path)["history"]]
    assert history == ["a", "b", "c", "b", "a", "c"]
    with pytest.raises(SmalltuneError, match="no trained adapter"):
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "recipe.yaml").write_text("data:\n  train: x.jsonl\n")
        promote(tmp_path / "d")


def test_a_killed_promote_leaves_the_previous_pointer(tmp_path):
    from smalltune.update import promote
    from smalltune.update.pointer import read_pointer

    for name in ("a", "b"):
        _fake_version(tmp_path, name)
    promote(tmp_path / "a")
    before = (tmp_path / "current").read_bytes()
    # The process dies (SIGKILL) at the rename that would publish the new pointer: the worst moment.
    code = ("import os, signal\n"
            "from smalltune.update import promote\n"
            "os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
            f"promote({str(tmp_path / 'b')!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    assert (tmp_path / "current").read_bytes() == before
    assert read_pointer(tmp_path)["version"] == "a"
    promote(tmp_path / "b")  # a later promote works despite the leftover temporary file
    assert read_pointer(tmp_path)["version"] == "b"


# --- the update rate ------------------------------------------------------------------------------------
def test_the_update_rate_stays_the_same_from_version_to_version(tmp_path):
    """Each version's recipe is the next update's parent recipe: lowering its train.lr again would shrink the
    rate once per version (1e-4, 1.5e-5, 2.25e-6 for full fine-tuning), as the continual benchmark found."""
    from smalltune.update.runner import update_lr, update_recipe

    parent = recipe_from_dict(_raw("m", "train.jsonl", tmp_path / "v1", **{"method.name": "full", "train.lr": 1e-4}))
    files = {"train": "t.jsonl", "validation": "v.jsonl"}
    first_lr = update_lr(parent)
    assert first_lr == 5e-5  # half the parent's rate (benchmarks/README.md, continual updates)
    v2 = update_recipe(parent, tmp_path / "v2", files, first_lr)
    v3 = update_recipe(v2, tmp_path / "v3", files, update_lr(v2))
    assert v2.train.lr == v3.train.lr == v3.update.lr == first_lr
    assert parent.train.lr == 1e-4 and parent.update.lr is None  # the parent's recipe is not changed


@pytest.mark.parametrize("overrides, expected", [
    ([], 1.0),                                # update.unlikelihood, on by default in updates
    (["regularize.unlikelihood=0.3"], 0.3),   # a weight given to the update is kept
    (["update.unlikelihood=0"], 0.0),         # off
])
def test_an_update_pushes_down_the_answers_it_replaces_unless_told_not_to(tmp_path, overrides, expected):
    from smalltune.update.runner import update_recipe

    files = {"train": "t.jsonl", "validation": "v.jsonl"}
    parent = recipe_from_dict(_raw("m", "train.jsonl", tmp_path / "v1"), overrides)
    assert parent.regularize.unlikelihood == (0.3 if "0.3" in str(overrides) else 0.0)  # a fresh run: off
    v2 = update_recipe(parent, tmp_path / "v2", files, 1e-4, overrides)
    assert v2.regularize.unlikelihood == expected
    # the next version: its parent's recipe holds the weight v2 had, but the update's own setting decides
    off = ["update.unlikelihood=0"]
    parent_v2 = recipe_from_dict(_raw("m", "train.jsonl", tmp_path / "v2", **{"regularize.unlikelihood": 1.0}), off)
    v3 = update_recipe(parent_v2, tmp_path / "v3", files, 1e-4, off)
    assert v3.regularize.unlikelihood == 0.0


@pytest.mark.parametrize("room, spent, override, expected", [
    (0.0, 0.095, None, 0.10),   # no room: the lineage's budget, whatever the parent spent
    (0.03, 0.095, None, 0.125),  # room beyond what the parent spent
    (0.03, 0.02, None, 0.10),   # a parent well inside the budget: the lineage's is larger
    (0.03, 0.095, 0.2, 0.2),    # a budget given on the command line is the lineage's
])
def test_an_updates_forgetting_budget_is_the_lineages_or_its_parents_spend_plus_room(tmp_path, room, spent, override,
                                                                                   expected):
    """The budget stays the lineage's across versions: a parent trained under its own room (its recipe holds
    0.125) must not raise the next version's lineage budget, or the room would compound version by version."""
    from smalltune.rundir import RunDir
    from smalltune.update.lineage import VersionRecord
    from smalltune.update.runner import update_budget

    (tmp_path / "train_summary.json").write_text(json.dumps({"best_metrics": {"forgetting": spent}}))
    parent_record = VersionRecord(name="v1-v2", version=2, forgetting_budget={"lineage": 0.10, "budget": 0.125})
    recipe = recipe_from_dict(_raw("m", "train.jsonl", tmp_path, **{
        "guards.forgetting_budget": override or 0.125, "update.forgetting_room": room}))
    overrides = [f"guards.forgetting_budget={override}"] if override else []
    budget = update_budget(recipe, RunDir(tmp_path), parent_record, overrides)
    assert budget["budget"] == pytest.approx(expected)
    assert budget["parent_spent"] == spent and budget["lineage"] == (override or 0.10)


@pytest.mark.parametrize("slack, started_from, expected", [
    (0.02, False, 2.02),  # a fresh run: the base's loss plus early_stopping.min_delta (0.02)
    (0.05, False, 2.02),  # ... whatever update.validation_slack says
    (0.05, True, 2.05),   # an update: its parent's loss plus update.validation_slack
    (None, True, None),   # empty: no ceiling, the regression gate judges the version
])
def test_an_updates_validation_ceiling_is_its_parents_loss_plus_update_validation_slack(slack, started_from, expected):
    from smalltune.train.loop import _start_ceiling

    recipe = recipe_from_dict(_raw("m", "train.jsonl", "out", **{"update.validation_slack": slack,
                                                                  "early_stopping.min_delta": 0.02}))
    ceiling = _start_ceiling(recipe, {"eval_loss": 2.0}, started_from)
    assert ceiling == (None if expected is None else pytest.approx(expected))
    assert _start_ceiling(recipe, None, started_from) is None  # no start measured: nothing to compare with


# --- update end to end: a harmless update is promoted, a planted regression refused ---------------------------
def test_a_harmless_update_is_promoted_with_its_lineage(first, tmp_path):
    from smalltune.update import list_versions, update
    from smalltune.update.lineage import read_version
    from smalltune.update.pointer import read_pointer

    new = write_jsonl(tmp_path / "week2.jsonl", [
        chat("Are you open in the morning?", FACTS["hours"], category="hours"),
        chat("What is the cost of a checkup?", FACTS["prices"], category="prices"),
        {"prompt": "Which road is the clinic on?", "model_answer": "Elm Road",
         "corrected_answer": FACTS["location"], "key_facts": ["Oak Road"], "split": "train"}])
    result = update(first, new, caps=CAPS, progress=False, verbose=False, overrides=["train.epochs=1", *FAST])
    assert result.promoted and result.gate.passed, result.message
    out = Path(result.run_dir)
    assert out.parent == first.parent and out.name == "v1-v2"
    record = read_version(out)
    assert record.version == 2 and record.parent == "v1" and record.lineage == ["v1", "v1-v2"]
    assert record.data_added["train"] == 3 and record.data_added["corrections"] == 1
    assert record.lr == pytest.approx(1e-2 / 2)  # half the parent's rate, full fine-tuning's update share
    assert record.replay["examples"] > 0 and record.replay["pool"] > record.replay["examples"]
    gate = json.loads((out / "gate.json").read_text())
    sections = {c["section"] for c in gate["checks"]}
    assert "parent_test" in sections and gate["sources"]["parent_test"]["items"] == 12
    # the recipe of the version names its own data; the pool carries the new examples for the next update
    pool = [json.loads(x) for x in (out / "data" / "pool.jsonl").read_text().splitlines()]
    assert any(r["messages"][0]["content"] == "Which road is the clinic on?" for r in pool)
    assert read_pointer(first.parent)["version"] == "v1-v2"
    assert [m["version"] for m in read_pointer(first.parent)["history"]] == ["v1", "v1-v2"]
    rows = {r.name: r for r in list_versions(first.parent)}
    assert rows["v1-v2"].current and rows["v1-v2"].gate == "passed" and rows["v1"].version == 1
    assert "Update: version 2" in (out / "report.md").read_text()
    assert 'data-section="update"' in (out / "report.html").read_text()


def test_an_example_that_changes_an_earlier_answer_trains_changed_repeats_times(first, tmp_path, capsys):
    from smalltune.update import update
    from smalltune.update.lineage import read_version

    changed = "A checkup costs $85 and a cleaning costs $99."
    new = write_jsonl(tmp_path / "prices.jsonl", [chat("What are your prices?", changed, id="p1", category="prices"),
                                                  chat("Do you see children?", "Yes, from age 3.", id="k1")])
    update(first, new, caps=CAPS, progress=False, verbose=True, force=True, output_dir=tmp_path / "v2",
           overrides=["update.changed_repeats=3", "train.max_steps=1", *FAST])  # unlikelihood: on by default
    said = " ".join("".join(capsys.readouterr()).split())
    assert "1 new example(s) change earlier answers" in said and "pushed down" in said and "retrain" in said
    trained = [json.loads(x) for x in (tmp_path / "v2" / "data" / "train.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in trained if r["id"].startswith(("p1", "k1"))) == ["k1", "p1", "p1#2", "p1#3"]
    assert [r["messages"][-1]["content"] for r in trained if r["id"].startswith("p1")] == [changed] * 3
    # each copy names the answer it replaces; the unlikelihood term scores it once
    assert [r["stale_answers"] for r in trained if r["id"].startswith("p1")] == [[FACTS["prices"]]] * 3
    start = next(r for r in RunDir(tmp_path / "v2").read_metrics() if r.kind == "event" and r.event == "start")
    assert start.extra["unlikelihood_answers"] == 1 and start.extra["unlikelihood_tokens"] == 2  # $85 and $99
    record = read_version(tmp_path / "v2")
    assert record.data_added["changed"] == 1 and record.data_added["changed_repeats"] == 3
    pool = (tmp_path / "v2" / "data" / "pool.jsonl").read_text()
    assert '"p1#2"' not in pool  # the lineage keeps the example once


def test_the_gate_refuses_a_planted_regression_and_force_promotes_it(first, tmp_path):
    from smalltune.update import update
    from smalltune.update.lineage import read_version
    from smalltune.update.pointer import read_pointer

    served = read_pointer(first.parent)["version"] if read_pointer(first.parent) else "v1"
    # Questions unlike the test's, all answered with one contradicting sentence, trained hard: the
    # model now answers the earlier test questions with it.
    wrong = "Nobody knows anything about that topic at all."
    records = [chat(f"Question number {i} about topic {i % 7} for you", wrong, category="x") for i in range(30)]
    new = write_jsonl(tmp_path / "bad.jsonl", records)
    hard = ["update.lr=0.02", "train.epochs=4", "early_stopping.enabled=false", "eval.every_steps=1000",
            "update.replay_share=0", *FAST]
    result = update(first, new, caps=CAPS, progress=False, verbose=False, overrides=hard,
                    output_dir=first.parent / "bad")
    assert not result.promoted and result.exit_code == 1
    regressed = [c for c in result.gate.checks if c["regressed"]]
    assert any(c["section"] == "parent_test" and c["metric"] == "loss" for c in regressed)
    assert "earlier test set loss rose" in result.message and "allowed 5%" in result.message
    assert read_pointer(first.parent)["version"] == served  # not served
    assert read_version(first.parent / "bad").gate["passed"] is False

    with pytest.raises(SmalltuneError, match="failed its regression gate"):
        from smalltune.update import promote

        promote(first.parent / "bad")
    pointer = promote(first.parent / "bad", force=True)
    assert pointer["version"] == "bad" and pointer["forced"] is True
    assert read_version(first.parent / "bad").gate["forced"] is True


def test_cli_update_versions_and_rollback(first, tmp_path, capsys):
    from smalltune.cli import main

    assert main(["update", str(first), str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: file not found" in capsys.readouterr().err
    assert main(["versions", str(first.parent)]) == 0
    listed = capsys.readouterr().err
    assert "v1" in listed and "version" in listed
    assert main(["versions", str(first.parent), "--current"]) == 0
    current = Path(capsys.readouterr().out.strip())
    assert current.parent == first.parent.resolve()
    assert main(["rollback", str(first.parent), "--to", "v1"]) == 0
    assert "serving v1" in capsys.readouterr().out
    assert main(["promote", str(tmp_path)]) == 2  # not a run directory: one line, exit 2
    assert "not a run directory" in capsys.readouterr().err


def test_the_gate_never_takes_or_leaves_the_base_models_answers_as_the_parents(first, monkeypatch):
    """The gate's "base" is the parent version: the base model's answers shared in the process and kept on disk
    must not stand in for the parent's, and the parent's must not be kept as the base model's."""
    from smalltune.evaluate import context
    from smalltune.evaluate.context import QUICK, EvalContext
    from smalltune.train import load_trained
    from smalltune.update.gate import VersusContext

    monkeypatch.setattr(context, "_BASE_RESULTS", {})
    model, tok, recipe = load_trained(first)
    prompts = [tok.apply_chat_template([{"role": "user", "content": "When are you open?"}], tokenize=False,
                                       add_generation_prompt=True)]
    evaluation = EvalContext(model=model, tokenizer=tok, recipe=recipe, run_dir=first, caps=QUICK)
    planted = "the base model's answer"
    evaluation._cache("base", "generate")[(QUICK.max_new_tokens, prompts[0])] = planted
    evaluation._write("generate", evaluation._cache("base", "generate"))

    gate = VersusContext(model=model, tokenizer=tok, recipe=recipe, run_dir=first, caps=QUICK, parent=model)
    parent = gate.generate(prompts, "base")
    assert parent != [planted] and parent == gate.generate(prompts, "finetuned")  # the parent (here: the same model)
    monkeypatch.setattr(context, "_BASE_RESULTS", {})  # a later process reads the disk: still the base's answer
    later = EvalContext(model=model, tokenizer=tok, recipe=recipe, run_dir=first, caps=QUICK)
    assert later.generate(prompts, "base") == [planted] and later.base_answers_reused == 1
