"""Guards driven by synthetic metric sequences: each decision, no model needed."""

from __future__ import annotations

import json
import math

import pytest
import torch

from smalltune.errors import RecipeError
from smalltune.recipe import recipe_from_dict
from smalltune.rundir import RunDir
from smalltune.train.guards import (
    CheckpointSelector, Convergence, EarlyStopping, ForgettingBudget, NumericalHealth, OverfittingGap,
    OverMemorization, Snapshots, build_guards, build_selector, keep_best, restore_best,
)
from smalltune.train.guards.overfitting import slope


def rec(step, ppl, acc, **extra):
    return {"step": step, "eval_loss": math.log(ppl), "eval_ppl": ppl, "eval_token_acc": acc, **extra}


# --- over-memorization -------------------------------------------------------------------------
def test_over_memorization_flags_when_accuracy_holds_and_perplexity_climbs():
    g = OverMemorization(ppl_factor=1.5, acc_tolerance=0.02)
    seq = [(10, 8.0, 0.40), (20, 4.0, 0.55), (30, 5.0, 0.60), (40, 5.9, 0.60), (50, 6.4, 0.59), (60, 9.0, 0.61)]
    events = {}
    for step, ppl, acc in seq:
        r = rec(step, ppl, acc)
        if (e := g.check(r, step)) is not None:
            events[step] = e
        assert r["ppl_ratio"] == pytest.approx(ppl / min(p for s, p, a in seq if s <= step))
    assert list(events) == [50]  # 6.4 / 4.0 = 1.6 >= 1.5 while 0.59 is within 0.02 of 0.60; warned once
    assert events[50].action == "warn" and events[50].values["min_ppl_step"] == 20
    assert "1.60x" in events[50].message
    assert g.summary()["flagged_step"] == 50


def test_over_memorization_not_flagged_when_accuracy_falls_too():
    g = OverMemorization(ppl_factor=1.5, acc_tolerance=0.01)
    flags = []
    for step, ppl, acc in [(1, 4.0, 0.60), (2, 7.0, 0.50), (3, 9.0, 0.45)]:  # plain overfitting: both get worse
        r = rec(step, ppl, acc)
        assert g.check(r, step) is None
        flags.append(r["over_memorization"])
    assert flags == [False, False, False]


# --- selection ---------------------------------------------------------------------------------
def feed(selector, seq):
    for r in seq:
        selector.update(r, r["step"])
    return selector


def test_accuracy_selection_prefers_best_accuracy_under_the_perplexity_cap():
    seq = [rec(10, 4.0, 0.50), rec(20, 5.5, 0.58), rec(30, 7.0, 0.65)]
    s = feed(CheckpointSelector("accuracy", ppl_factor=1.5), seq)
    assert s.best_step == 20  # 30 is more accurate but 7.0 > 1.5 x 4.0
    assert "cap 6.000" in s.reason() and "58.0%" in s.reason()
    assert feed(CheckpointSelector("eval_loss"), seq).best_step == 10


def test_auto_selection_switches_rule_only_after_over_memorization_is_flagged():
    s = CheckpointSelector("auto", ppl_factor=1.5)
    feed(s, [rec(10, 4.0, 0.50), rec(20, 5.0, 0.58)])
    assert s.best_step == 10 and s.reason().startswith("step 10: lowest eval_loss")
    s.update(rec(30, 6.5, 0.58, over_memorization=True), 30)
    assert s.best_step == 20  # a past evaluation is chosen retroactively
    assert s.reason().startswith("step 20: over-memorization flagged")


def test_a_checkpoint_worse_than_the_start_is_chosen_only_when_every_one_is():
    """The start's validation loss + slack is a ceiling on the choice, not a veto after it: the run of seed 1 of the
    unlikelihood update chose its most accurate step although it was worse than the parent, and published nothing."""
    seq = [rec(10, 3.7, 0.690), rec(20, 3.8, 0.695), rec(30, 4.0, 0.691)]  # eval_loss = log(ppl)
    s = CheckpointSelector("accuracy", ppl_factor=1.5)
    s.loss_ceiling = math.log(3.75)
    feed(s, seq)
    assert s.best_step == 10 and s.candidates() >= {10}
    assert "2 evaluations worse on validation than the start not considered" in s.reason()
    assert feed(CheckpointSelector("accuracy", ppl_factor=1.5), seq).best_step == 20  # no ceiling: the most accurate
    low = CheckpointSelector("accuracy", ppl_factor=1.5)
    low.loss_ceiling = math.log(3.0)  # none under it: the rule chooses as before (and the loop publishes nothing)
    assert feed(low, seq).best_step == 20
    # an earlier evaluation under the ceiling keeps its weights while a later, more accurate one is over it
    early = CheckpointSelector("accuracy", ppl_factor=1.5)
    early.loss_ceiling = math.log(3.75)
    feed(early, seq[:1])
    early.update(rec(20, 3.6, 0.70), 20)  # under the ceiling and better: 10 is dominated now
    early.update(rec(30, 3.9, 0.72), 30)
    assert early.best_step == 20 and early.candidates() == {20}  # 30 is over the ceiling: never chosen again


def test_selection_can_change_its_mind_when_a_new_minimum_shrinks_the_cap():
    s = feed(CheckpointSelector("accuracy", ppl_factor=1.5), [rec(10, 4.0, 0.50), rec(20, 5.5, 0.60)])
    assert s.best_step == 20 and s.candidates() == {10, 20}
    s.update(rec(30, 3.0, 0.52), 30)  # cap now 4.5: step 20 can never come back
    assert s.best_step == 30 and s.candidates() == {30}  # 10 is dominated by 30 (more accurate, lower ppl)


def test_selection_respects_the_forgetting_budget():
    seq = [rec(10, 5.0, 0.5, within_forgetting_budget=True), rec(20, 4.0, 0.6, within_forgetting_budget=False)]
    assert feed(CheckpointSelector("eval_loss", respect_budget=True), seq).best_step == 10
    assert feed(CheckpointSelector("eval_loss", respect_budget=False), seq).best_step == 20
    s = feed(CheckpointSelector("eval_loss", respect_budget=True), seq[1:])
    assert s.best_step is None and "within the forgetting budget" in s.reason()


def test_selection_never_chooses_an_evaluation_that_scored_nan():
    s = feed(CheckpointSelector("auto"), [rec(10, float("nan"), 0.0)])
    assert s.best_step is None
    s.update(rec(20, 5.0, 0.3), 20)
    assert s.best_step == 20


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))


def _fill(model, value):
    with torch.no_grad():
        model.w.fill_(value)


def test_keep_best_keeps_candidates_on_disk_and_restores_a_retroactive_choice(tmp_path):
    from smalltune.train.methods import Method

    run, method, model, s = RunDir(tmp_path), Method(), _Linear(), CheckpointSelector("auto", ppl_factor=1.5)
    snaps = Snapshots(run, method, model, in_memory=False)  # as under several processes
    for step, ppl, acc, flag in [(10, 4.0, 0.50, False), (20, 5.0, 0.58, False), (30, 6.5, 0.58, True)]:
        _fill(model, step)
        keep_best(snaps, s, rec(step, ppl, acc, over_memorization=flag), step)
        assert json.loads((run.best / "state.json").read_text())["step"] == s.best_step
    assert s.best_step == 20
    kept = sorted(p.name for p in (run.checkpoints / "evals").glob("*.safetensors"))
    assert kept == ["step-000010.safetensors", "step-000020.safetensors"]  # 30 is over the cap: dropped
    assert restore_best(snaps, s)
    assert torch.equal(model.w, torch.full((3,), 20.0))


def test_keep_best_keeps_protected_snapshots_and_replaces_a_best_the_selector_does_not_hold(tmp_path):
    """The snapshots a --resume checkpoint's selector may choose outlive later choices; after a resume from an
    earlier checkpoint, best/ is rewritten to the resumed selector's choice, and its weights are a link."""
    from smalltune.train.methods import Method

    run, method, model, s = RunDir(tmp_path), Method(), _Linear(), CheckpointSelector("eval_loss")
    snaps = Snapshots(run, method, model, in_memory=False)
    for step, ppl in [(10, 5.0), (20, 4.0)]:  # the lowest loss moves to 20: 10 is no longer a candidate
        _fill(model, step)
        keep_best(snaps, s, rec(step, ppl, 0.5), step, protect=[10])
    assert (run.checkpoints / "evals" / "step-000010.safetensors").exists()
    assert (run.best / "trainable.safetensors").stat().st_nlink == 2  # linked to its snapshot, not copied
    resumed = CheckpointSelector("eval_loss")  # as restored from a checkpoint written after step 10
    resumed.update(rec(10, 5.0, 0.5), 10)
    snaps = Snapshots(run, method, model)  # a resumed process holds nothing in memory yet
    keep_best(snaps, resumed, rec(15, 6.0, 0.5), 15)
    assert json.loads((run.best / "state.json").read_text())["step"] == 10
    assert restore_best(snaps, resumed) and torch.equal(model.w, torch.full((3,), 10.0))


def test_snapshots_stay_in_memory_until_a_checkpoint_needs_them(tmp_path, monkeypatch):
    """One process: no file per new best; a --resume checkpoint writes its candidates and links best/ to the choice;
    a snapshot that does not fit in the host-memory share is written at once."""
    from smalltune.train.guards import snapshots
    from smalltune.train.methods import Method

    run, method, model, s = RunDir(tmp_path), Method(), _Linear(), CheckpointSelector("auto", ppl_factor=1.5)
    snaps = Snapshots(run, method, model)
    for step, ppl, acc, flag in [(10, 4.0, 0.50, False), (20, 5.0, 0.58, False), (30, 6.5, 0.58, True)]:
        _fill(model, step)
        keep_best(snaps, s, rec(step, ppl, acc, over_memorization=flag), step)
    assert sorted(snaps.held) == [10, 20] and not (run.checkpoints / "evals").exists() and not run.best.exists()
    assert restore_best(snaps, s) and torch.equal(model.w, torch.full((3,), 20.0))
    snaps.persist(s.candidates(), s)
    kept = sorted(p.name for p in (run.checkpoints / "evals").glob("*.safetensors"))
    assert kept == ["step-000010.safetensors", "step-000020.safetensors"]
    assert json.loads((run.best / "state.json").read_text())["step"] == 20
    assert (run.best / "trainable.safetensors").stat().st_nlink == 2
    _fill(model, 40)
    keep_best(snaps, s, rec(40, 3.0, 0.60), 40)  # the new minimum shrinks the cap: 10 and 20 are out
    assert sorted(snaps.held) == [40] and not list((run.checkpoints / "evals").glob("*.safetensors"))
    monkeypatch.setattr(snapshots, "HOST_SHARE", 0.0)  # nothing fits: a file at once
    _fill(model, 50)
    keep_best(snaps, s, rec(50, 2.9, 0.61), 50)
    assert 50 not in snaps.held and (run.checkpoints / "evals" / "step-000050.safetensors").exists()
    assert json.loads((run.best / "state.json").read_text())["step"] == 50  # a file: best/ follows at once
    snaps.drop()
    assert not snaps.held and not (run.checkpoints / "evals").exists() and run.best.exists()


# --- forgetting --------------------------------------------------------------------------------
def test_forgetting_budget_stops_past_the_budget_and_tracks_the_last_step_within():
    g = ForgettingBudget(budget=0.05)
    g.base_ppl = 20.0
    records = [{"ref_ppl": v} for v in (19.0, 20.9, 21.2)]
    events = [g.check(r, step) for step, r in zip((10, 20, 30), records)]
    assert events[:2] == [None, None] and events[2].action == "stop"
    assert [r["within_forgetting_budget"] for r in records] == [True, True, False]
    assert records[2]["forgetting"] == pytest.approx(0.06)
    assert events[2].values["last_within_step"] == 20 and "6.0% above" in events[2].message


def test_forgetting_budget_warn_mode_warns_once():
    g = ForgettingBudget(budget=0.0, action="warn")
    g.base_ppl = 10.0
    events = [g.check({"ref_ppl": v}, s) for s, v in ((1, 11.0), (2, 12.0))]
    assert events[0].action == "warn" and events[1] is None


# --- numerical health --------------------------------------------------------------------------
def test_numerical_health_stops_on_nan_inf_and_exploding_norms():
    g = NumericalHealth(grad_norm_limit=100.0, lr=1.0)
    assert g.check_step(2.0, 5.0, 1) is None
    assert g.check_step(float("nan"), None, 2).action == "stop"
    assert "inf" in g.check_step(float("inf"), 1.0, 3).message
    big = g.check_step(2.0, 5e3, 4)
    assert big.action == "stop" and big.values["grad_norm"] == 5e3 and "grad_norm_limit=100" in big.message
    assert g.check_step(2.0, float("nan"), 5).action == "stop"
    assert NumericalHealth(tolerate_inf_grad=True).check_step(2.0, float("inf"), 6) is None  # fp16 loss scaling
    assert NumericalHealth(grad_norm_limit=None).check_step(2.0, 1e9, 7) is None
    assert g.check({"eval_loss": float("nan")}, 8).action == "stop"


# --- convergence, overfitting, early stopping ----------------------------------------------------
def test_convergence_is_noted_once_when_loss_moves_less_than_delta_per_epoch():
    c = Convergence(delta=0.1)
    seq = [(0.5, 2.0), (1.0, 1.5), (1.5, 1.2), (2.0, 1.1), (2.5, 1.05), (3.0, 1.04)]
    events = [c.check({"epoch": e, "train_loss": loss}, i) for i, (e, loss) in enumerate(seq)]
    fired = [(i, e.action) for i, e in enumerate(events) if e]
    # per epoch: -0.8 (1.5 vs 0.5), -0.4, -0.15, then -0.06 (3.0 vs 2.0): below 0.1, noted once
    assert fired == [(5, "note")]
    assert events[5].values["loss_change_per_epoch"] == pytest.approx(-0.06)
    assert c.check({"epoch": 3.5, "train_loss": 1.03}, 6) is None  # already noted


def test_overfitting_gap_and_trend_are_logged_and_widening_warns_once():
    g = OverfittingGap(patience=2)
    seq = [(0.5, 1.0, 1.1), (1.0, 0.8, 1.0), (1.5, 0.6, 1.05), (2.0, 0.4, 1.2), (2.5, 0.3, 1.4)]
    records = [{"epoch": e, "train_loss": t, "eval_loss": v} for e, t, v in seq]
    events = [g.check(r, i) for i, r in enumerate(records)]
    assert [round(r["train_val_gap"], 6) for r in records] == [0.1, 0.2, 0.45, 0.8, 1.1]
    assert records[0]["gap_trend"] is None and records[1]["gap_trend"] == pytest.approx(0.2)
    assert [i for i, e in enumerate(events) if e] == [3]  # widened at 2 and 3 while eval loss rose
    assert events[3].action == "warn" and events[3].values["gap_before"] == pytest.approx(0.2)
    assert slope([0, 1, 2], [3, 2, 1]) == pytest.approx(-1)


def test_early_stopping_message_carries_the_gap():
    es = EarlyStopping(patience=2)
    records = [{"eval_loss": 1.0, "train_val_gap": 0.1}, {"eval_loss": 1.1, "train_val_gap": 0.4},
               {"eval_loss": 1.2, "train_val_gap": 0.7}]
    events = [es.check(r, i) for i, r in enumerate(records)]
    assert events[:2] == [None, None] and events[2].action == "stop"
    assert "gap 0.100 at best, 0.700 now" in events[2].message


# --- state round trip and recipe -----------------------------------------------------------------
def test_guard_state_round_trips_through_json_mid_run():
    recipe = recipe_from_dict({"data": {"train": "x.jsonl"}, "guards": {"forgetting_budget": 0.05}})
    seq = [dict(rec(s, p, a), epoch=s / 10, train_loss=t, ref_ppl=f)
           for s, p, a, t, f in [(10, 5, .5, 1.6, 10.), (20, 4, .6, 1.2, 10.2), (30, 6.5, .6, .9, 10.4),
                                 (40, 7, .6, .85, 10.6), (50, 8, .55, .84, 10.8)]]

    def run(split):
        guards, selector, events = build_guards(recipe), build_selector(recipe), []
        for g in guards:
            if g.name == "forgetting_budget":
                g.base_ppl = 10.0
        for i, r in enumerate(seq):
            if i == split:  # as --resume does: state through JSON into fresh objects
                saved = json.loads(json.dumps({"g": guards.state_dict(), "s": selector.state_dict()}))
                guards, selector = build_guards(recipe), build_selector(recipe)
                guards.load_state_dict(saved["g"])
                selector.load_state_dict(saved["s"])
            r = dict(r)
            events += [e.to_dict() for e in guards.evaluate(r, r["step"])]
            selector.update(r, r["step"])
        return events, selector.best_step, guards.summary()

    assert run(None) == run(3)
    events, best, _ = run(None)
    assert {e["guard"] for e in events} >= {"over_memorization", "forgetting_budget"}


def test_guards_section_validates_and_builds():
    r = recipe_from_dict({"data": {"train": "x"}, "guards": {"forgetting_budget": 0.05, "forgetting_action": "warn"}})
    assert [g.name for g in build_guards(r)] == [
        "numerical", "forgetting_budget", "over_memorization", "overfitting", "convergence", "early_stopping"]
    off = recipe_from_dict({"data": {"train": "x"}, "guards": {"enabled": False}})
    assert [g.name for g in build_guards(off)] == ["numerical", "early_stopping"]
    assert build_selector(off).mode == "eval_loss"
    with pytest.raises(RecipeError) as err:
        recipe_from_dict({"data": {"train": "x"}, "guards": {"selection": "acuracy", "ppl_factor": 0.5}})
    assert "guards.selection must be one of" in str(err.value) and "did you mean 'accuracy'" in str(err.value)
    assert "guards.ppl_factor must be >= 1.0" in str(err.value)


def test_selection_keeps_the_least_forgetting_checkpoint_within_the_tolerance():
    from smalltune.train.guards import CheckpointSelector

    s = CheckpointSelector("eval_loss", tolerance=0.02)
    seq = [(10, 2.00, 0.01), (20, 1.95, 0.03), (30, 1.94, 0.08), (40, 1.96, 0.12)]
    for step, loss, forgot in seq:
        s.update({"eval_loss": loss, "eval_ppl": 2.7 ** loss, "eval_token_acc": 0.5, "forgetting": forgot}, step)
        assert s.best_step in s.candidates()
    assert s.best_step == 20  # 1.95 is within 0.02 of the lowest 1.94 and forgot 3% instead of 8%
    assert "least forgetting (+3.0%)" in s.reason()
    plain = CheckpointSelector("eval_loss")
    for step, loss, forgot in seq:
        plain.update({"eval_loss": loss, "eval_ppl": 2.7 ** loss, "eval_token_acc": 0.5, "forgetting": forgot}, step)
    assert plain.best_step == 30  # no tolerance: lowest loss, as before


def test_precision_auto_uses_a_loss_scaled_fp16_on_gpus_without_bf16(monkeypatch):
    import torch

    from smalltune.train.setup import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto") == "no" and resolve_precision("fp32") == "no"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto") == "fp16"
    r = recipe_from_dict({"data": {"train": "x"}})
    assert NumericalHealth.from_recipe(r).tolerate_inf_grad  # fp16 loss scaling makes inf gradients on purpose
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto") == "bf16" and not NumericalHealth.from_recipe(r).tolerate_inf_grad


def test_a_budget_stop_that_kept_a_checkpoint_within_it_is_a_normal_end():
    """v4 plans end at the forgetting budget: exit 1 only when nothing within it could be published."""
    from smalltune.train.guards import unsafe_stop_message

    assert unsafe_stop_message({"stopped": "forgetting_budget", "artifact_written": True}) is None
    assert "forgetting_budget guard" in unsafe_stop_message({"stopped": "forgetting_budget", "artifact_written": False,
                                                             "stop_message": "no evaluation within the budget"})
    assert "numerical guard" in unsafe_stop_message({"stopped": "numerical", "artifact_written": True})
    assert unsafe_stop_message({"stopped": "completed", "artifact_written": True}) is None
