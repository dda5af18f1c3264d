"""Audit checks on small hand-made data with planted problems: every planted problem is found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import chat, write_jsonl
from smalltune.audit import AuditReport, Finding, audit
from smalltune.errors import SmalltuneError

DATA = Path(__file__).parent / "data" / "audit"

# Distinct questions and answers (no two alike), so only what a test plants is a duplicate.
CLEAN = [
    ("What time do you open on Mondays?", "We open at 8 am on Mondays."),
    ("Can I pay with a credit card?", "Yes, we accept all major credit cards."),
    ("Where can I park my car?", "There is a free lot behind the building."),
    ("Do you treat young children?", "Yes, we see kids from their first birthday."),
    ("How long does a cleaning take?", "A routine cleaning takes about forty minutes."),
    ("Is the office wheelchair accessible?", "Yes, there is a ramp and an elevator."),
    ("Who is the lead dentist?", "Dr. Amara Sethi leads our team."),
    ("Can I get whitening done here?", "We offer in-office whitening for 300 dollars."),
    ("What should I bring to my first visit?", "Bring a photo ID and your insurance card."),
    ("Do you send appointment reminders?", "We text you two days before each visit."),
]
LONG_Q = ("My daughter chipped her front tooth on the playground this afternoon and it looks sharp, "
          "should we come in today or can it wait until her regular appointment next month?")
LONG_A = ("Please bring her in today if you can: a chipped front tooth can hide a crack in the nerve, "
          "and a sharp edge can cut her lip, so we keep emergency slots open every afternoon.")


def findings(report: AuditReport, check: str, title: str | None = None) -> list[Finding]:
    return [f for f in report.findings if f.check == check and (title is None or title in f.title)]


def lines_of(finding: Finding) -> set[int]:
    return {e["line"] for e in finding.examples}


# --- format ---------------------------------------------------------------------------------
def test_format_reports_every_planted_problem_with_its_line():
    report = audit(DATA / "bad_format.jsonl", progress=False)
    expected = {  # hand-made file: line -> the finding it must appear in
        2: "malformed records", 3: "wrong value types", 4: "unknown roles", 5: "wrong turn order",
        6: "empty turns", 7: "no assistant turn", 8: "control or NUL", 9: "mojibake",
        10: "mixed record formats", 11: "invalid UTF-8",
    }
    for line, title in expected.items():
        (f,) = findings(report, "format", title)
        assert line in lines_of(f), (title, f.examples)
        assert all(e["file"].endswith("bad_format.jsonl") for e in f.examples)
    # the clean lines are nowhere, and every problem is an error except mojibake / mixed shapes / control
    # characters (training accepts them: tests/test_hostile_input.py)
    flagged = {e["line"] for f in findings(report, "format") for e in f.examples}
    assert not flagged & {1, 12}
    assert {f.severity for f in findings(report, "format", "mojibake")} == {"warning"}
    assert {f.severity for f in findings(report, "format", "control or NUL")} == {"warning"}
    assert report.exit_code() == 1
    assert report.stats["splits"]["train"]["records"] == 12


def test_format_multiple_problems_in_one_record_all_listed(tmp_path):
    bad = {"messages": [{"role": "bot", "content": ""}, {"role": "user", "content": 3}]}
    path = write_jsonl(tmp_path / "d.jsonl", [bad, chat("ok?", "fine.")])
    report = audit(path, progress=False)
    titles = {f.title for f in findings(report, "format")}
    assert {"unknown roles", "empty turns", "wrong value types", "no assistant turn to learn from"} <= titles


def test_csv_and_json_inputs_are_read(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_bytes(b"prompt,completion\nWhere are you?,At 12 Oak Road.\nWhen?,\xff9 am\n")
    report = audit(csv, progress=False)
    assert report.stats["splits"]["train"]["examples"] == 2
    assert lines_of(findings(report, "format", "invalid UTF-8")[0]) == {3}
    js = tmp_path / "d.json"
    js.write_text(json.dumps([chat(q, a) for q, a in CLEAN[:3]], indent=1))
    assert audit(js, progress=False).stats["splits"]["train"]["examples"] == 3


@pytest.mark.parametrize("name,content,message", [
    ("missing.jsonl", None, "file not found"),
    ("data.txt", "hello", "unsupported file type"),
    ("junk.jsonl", "not json\nalso not\n", "nothing parseable"),
    ("empty.jsonl", "\n\n", "no records"),
])
def test_unusable_input_is_one_line_error_exit_2(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(SmalltuneError) as err:
        audit(path, progress=False)
    assert err.value.exit_code == 2 and message in str(err.value) and "\n" not in str(err.value)


# --- duplicates -----------------------------------------------------------------------------
def test_duplicates_near_duplicates_and_conflicts(tmp_path):
    records = [chat(q, a) for q, a in CLEAN]
    records.append(chat(*CLEAN[1]))  # line 11: exact copy of line 2
    records.append(chat("what time do you OPEN on mondays", "We open at 9 am on Mondays, after the staff meeting."))  # 12: conflict with 1
    records.append(chat(LONG_Q, LONG_A))  # 13
    records.append(chat(LONG_Q.replace("this afternoon", "today"), LONG_A))  # 14: near-duplicate of 13
    report = audit(write_jsonl(tmp_path / "t.jsonl", records), progress=False)
    (exact,) = findings(report, "duplicates", "exact duplicate")
    assert exact.count == 1 and lines_of(exact) == {2, 11}
    (conflict,) = findings(report, "duplicates", "different answers")
    assert conflict.count == 1 and lines_of(conflict) == {1, 12}
    (near,) = findings(report, "duplicates", "near-duplicate")
    assert near.count == 1 and lines_of(near) == {13, 14}
    assert report.stats["duplicates"]["train"] == {"exact_copies": 1, "near_duplicate_clusters": 1,
                                                   "conflicting_prompts": 1, "shared_answer_groups": 1}


def test_near_duplicate_threshold_is_configurable(tmp_path):
    records = [chat(LONG_Q, LONG_A), chat(LONG_Q.replace("this afternoon", "today"), LONG_A)]
    path = write_jsonl(tmp_path / "t.jsonl", records)
    assert findings(audit(path, near_dup_threshold=0.8, progress=False), "duplicates", "near-duplicate")
    assert not findings(audit(path, near_dup_threshold=0.999, progress=False), "duplicates", "near-duplicate")


def test_clean_data_has_no_duplicate_findings(tmp_path):
    report = audit(write_jsonl(tmp_path / "t.jsonl", [chat(q, a) for q, a in CLEAN]), progress=False)
    assert findings(report, "duplicates") == [] and findings(report, "format") == []


# --- leakage --------------------------------------------------------------------------------
def test_leakage_exact_and_near_across_splits(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [chat(q, a) for q, a in CLEAN] + [chat(LONG_Q, LONG_A)])
    val = write_jsonl(tmp_path / "val.jsonl", [
        chat("Is there a dentist who speaks Spanish?", "Yes, Dr. Ruiz does."),
        chat("Who is the LEAD dentist", "Dr. Sethi."),  # line 2: exact (normalised) leak of train line 7
        chat(LONG_Q.replace("this afternoon", "today"), "Come in today."),  # line 3: near leak of train line 11
    ])
    test = write_jsonl(tmp_path / "test.jsonl", [chat("Do you offer Saturday appointments?", "Every other week.")])
    report = audit(train, validation=val, test=test, progress=False)
    (exact,) = findings(report, "leakage", "shared across splits")
    assert exact.severity == "error" and exact.count == 1
    assert exact.examples[0]["line"] == 2 and exact.examples[0]["match"].endswith("train.jsonl:7")
    (near,) = findings(report, "leakage", "near-duplicate")
    assert near.count == 1 and near.examples[0]["line"] == 3 and near.examples[0]["match"].endswith("train.jsonl:11")
    assert report.stats["leakage"]["test_in_train"] == {"exact": 0, "near": 0}


def test_no_leakage_on_a_clean_split(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [chat(q, a) for q, a in CLEAN[:6]])
    val = write_jsonl(tmp_path / "val.jsonl", [chat(q, a) for q, a in CLEAN[6:]])
    report = audit(train, validation=val, progress=False)
    assert findings(report, "leakage") == []
    assert report.stats["leakage"] == {"validation_in_train": {"exact": 0, "near": 0}}


def test_dental_demo_has_no_exact_leakage():
    d = Path(__file__).parents[1] / "examples" / "dental"
    report = audit(d / "train.jsonl", d / "validation.jsonl", d / "test.jsonl", progress=False)
    assert findings(report, "leakage", "shared across splits") == []
    assert report.exit_code() == 0
    assert report.stats["splits"]["train"]["examples"] == 323


# --- length ---------------------------------------------------------------------------------
def test_length_truncation_with_the_tokenizer(tmp_path, tiny_model_dir, tokenizer):
    from smalltune.data.formats import load_examples
    from smalltune.data.tokenize import tokenize_example

    records = [chat(q, a) for q, a in CLEAN[:4]]
    records.append(chat("Tell me everything. " * 40, "Sure."))  # line 5: the prompt alone fills max_length
    records.append(chat("Short?", "A long answer that goes on. " * 20))  # line 6: answer cut, not emptied
    path = write_jsonl(tmp_path / "t.jsonl", records)
    report = audit(path, model=str(tiny_model_dir), max_length=64, progress=False)
    (emptied,) = findings(report, "length", "no trainable tokens")
    assert lines_of(emptied) == {5} and emptied.severity == "error"
    (over,) = findings(report, "length", "longer than max_length")
    assert lines_of(over) == {5, 6}
    examples = load_examples(path)
    full = [len(tokenize_example(tokenizer, ex, 10_000).input_ids) for ex in examples]
    assert report.stats["length"]["method"] == "tokenizer"
    assert report.stats["length"]["train"]["max"] == max(full)
    assert {e["tokens"] for e in over.examples} == {full[4], full[5]}


def test_length_without_a_model_is_approximate(tmp_path):
    records = [chat(q, a) for q, a in CLEAN[:3]] + [chat("x " * 600, "ok then")]
    report = audit(write_jsonl(tmp_path / "t.jsonl", records), max_length=128, progress=False)
    assert report.stats["length"]["method"].startswith("approx")
    assert lines_of(findings(report, "length", "no trainable tokens")[0]) == {4}


# --- size and balance ----------------------------------------------------------------------
def test_size_names_the_method_and_flags_imbalance(tmp_path):
    records = [chat(f"{q} ({i})", a, category="hours") for i in range(2) for q, a in CLEAN]
    records.append(chat("Is there a dentist who speaks Spanish?", "Yes, Dr. Ruiz does.", category="staff"))
    val = [chat("Do you do implants?", "Yes.", category="services")]
    report = audit(write_jsonl(tmp_path / "t.jsonl", records), validation=write_jsonl(tmp_path / "v.jsonl", val),
                   progress=False)
    (size,) = findings(report, "size", "training examples")
    assert "LoRA or prefix tuning" in size.message and size.count == 21
    (imb,) = findings(report, "size", "unbalanced")
    assert imb.severity == "warning" and "'hours' has 20" in imb.message
    (absent,) = findings(report, "size", "absent from train")
    assert absent.examples[0]["category"] == "services" and absent.examples[0]["line"] == 1
    from smalltune.audit.checks.size import method_for
    assert [method_for(n) for n in (999, 5000, 50_000, 200_000)] == [
        method_for(0), "LoRA or bottleneck adapters", "bottleneck adapters or partial fine-tuning",
        "full fine-tuning is viable"]


# --- consistency ---------------------------------------------------------------------------
def test_consistency_artefacts_templates_and_sign_offs(tmp_path):
    records = [chat(q, a + " Best wishes, the Brightside team." if i < 3 else a) for i, (q, a) in enumerate(CLEAN)]
    records.append(chat("### Instruction: Summarise our refund rules.", "Refunds within 30 days.<|im_end|>"))  # 11
    records.append(chat("Question: Do you have a fish tank?", "  yes, in the waiting room."))  # 12
    report = audit(write_jsonl(tmp_path / "t.jsonl", records), progress=False)
    (art,) = findings(report, "consistency", "template markers")
    assert lines_of(art) == {11}
    (mixed,) = findings(report, "consistency", "mixed prompt templates")
    assert mixed.count == 3  # plain, "### instruction:", "question:"
    (sign,) = findings(report, "consistency", "sign-off")
    assert sign.count == 3 and lines_of(sign) == {1, 2, 3} and "the brightside team" in sign.message
    assert lines_of(findings(report, "consistency", "whitespace")[0]) == {12}
    assert lines_of(findings(report, "consistency", "lowercase")[0]) == {12}


# --- report ---------------------------------------------------------------------------------
def test_report_roundtrip_ordering_and_run_dir(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [chat(q, a) for q, a in CLEAN] + [chat(*CLEAN[0])])
    report = audit(path, run_dir=tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "audit.json").read_text())
    assert saved["provenance"]["smalltune_version"] and saved["provenance"]["counts"] == {"train": 11}
    again = AuditReport.from_dict(saved)
    assert again.to_dict()["findings"] == report.to_dict()["findings"]
    ranks = [f.rank for f in report.findings]
    assert ranks == sorted(ranks)
    assert report.exit_code("error") == 0 and report.exit_code("warning") == 1


def test_recipe_supplies_files_and_settings(tmp_path, make_recipe):
    recipe = make_recipe(**{"data.max_length": 32})
    report = audit(None, recipe=recipe, progress=False)
    assert report.settings["max_length"] == 32 and report.settings["model"] == recipe.model.name
    assert report.files["train"] == recipe.data.train and "perplexity" in report.stats


def test_bad_threshold_is_a_user_error(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [chat(*CLEAN[0])])
    with pytest.raises(SmalltuneError, match="threshold"):
        audit(path, near_dup_threshold=1.5, progress=False)
