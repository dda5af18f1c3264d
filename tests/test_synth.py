"""``smalltune synth``: documents -> passages, the grounding check on hand-written answers, the whole
command with an injected generator (fixed strings), and one CLI run on the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import chat, write_jsonl

from smalltune.augment import synth
from smalltune.augment.documents import passages, read_passages
from smalltune.augment.filters import Candidate, FilterContext, grounding
from smalltune.cli import main
from smalltune.data import load_examples
from smalltune.errors import SmalltuneError

DOCS = Path(__file__).resolve().parents[1] / "examples" / "dental" / "docs"

MARKDOWN = """# Oak Dental

<!-- an html comment is not text -->

## Opening hours

We open at **9 am** on Saturday and close at 1 pm.

## Prices

A cleaning costs `$85`. A check-up costs $60.

## Parking

Park in the lot behind the building, entrance on Birch Lane.

## Team

Dr. Sethi sees children on Friday.
"""

HTML = """<html><head><title>Visit</title><script>var x = "not text";</script></head><body>
<nav>Home | Book</nav><h1>Visit us</h1><h2>Finding us</h2>
<p>We are at 12 Oak Road,<br>next to the <a href="/lib">library</a>.</p><ul><li>Bus 7 stops outside.</li></ul>
<footer>(c) Oak Dental</footer></body></html>"""


def test_markdown_html_and_text_become_passages(tmp_path):
    md = tmp_path / "faq.md"
    md.write_text(MARKDOWN)
    found = passages(md)
    assert [(p.id, p.section) for p in found] == [
        ("faq.md#1", "Oak Dental > Opening hours"), ("faq.md#2", "Oak Dental > Prices"),
        ("faq.md#3", "Oak Dental > Parking"), ("faq.md#4", "Oak Dental > Team")]
    assert found[0].text == "We open at 9 am on Saturday and close at 1 pm."  # markup gone
    assert found[1].text == "A cleaning costs $85. A check-up costs $60."
    page = tmp_path / "visit.html"
    page.write_text(HTML)
    [p] = passages(page)
    assert p.section == "Visit us > Finding us"
    assert p.text == "We are at 12 Oak Road, next to the library.\nBus 7 stops outside."
    txt = tmp_path / "script.txt"
    txt.write_text("Prices:\n\n" + " ".join(f"Sentence number {i} is here." for i in range(30)) + "\n")
    long = passages(txt, max_words=40)
    assert len(long) == 4 and all(len(x.text.split()) <= 40 for x in long) and {x.section for x in long} == {"Prices"}
    assert " ".join(x.text for x in long).count("Sentence number") == 30  # nothing lost at the cuts


def test_the_dental_document_set_reads(tmp_path):
    found = read_passages(sorted(DOCS.iterdir()))
    assert len(found) >= 8 and {Path(p.document).suffix for p in found} == {".md", ".html", ".txt"}
    assert not any("analytics" in p.text or "Home |" in p.text for p in found)  # script and nav skipped


def test_document_errors(tmp_path):
    (tmp_path / "a.pdf").write_text("x")
    with pytest.raises(SmalltuneError, match=r"a\.pdf: unsupported document type"):
        read_passages([tmp_path / "a.pdf"])
    (tmp_path / "empty.md").write_text("<!-- nothing -->\n")
    with pytest.raises(SmalltuneError, match=r"empty\.md: no text found"):
        read_passages([tmp_path / "empty.md"])
    assert main(["synth", str(tmp_path / "missing.md"), "--no-progress"]) == 2


PASSAGE = "Prices\nA cleaning costs $85. A check-up costs $60. Dr. Sethi sees children on Friday."


@pytest.mark.parametrize("answer, reason", [
    ("A cleaning costs $85.", None),
    ("Dr. Sethi sees children on Fridays.", None),
    ("A cleaning costs $95.", "number '95' is not in the passage"),
    ("Dr. Brennan sees children on Friday.", "'Brennan' is not in the passage"),
    ("Cleanings are cheap and quick, and we also whiten teeth with lasers.", "occur in the passage"),
    ("The text does not say.", "does not answer"),
    ("Not in the text.", "does not answer"),
])
def test_grounding(answer, reason):
    c = Candidate("How much is a cleaning?", PASSAGE.split("\n", 1)[1], "p#1", "synth", answer=answer, passage=PASSAGE)
    detail = grounding(c, FilterContext())
    assert (detail is None) if reason is None else (reason in detail)


@pytest.mark.parametrize("question, reason", [
    ("When do you open on Saturday?", None),
    ("what time do you open saturday", None),
    ("Saturday opening.", "not a question"),
    ("What about this text?", "echoes the request ('this text')"),
    ("What a wonderful gift! Would you like to know more about our clinic?", "echoes the request"),
    ("Could you " + "please " * 30 + "tell me the hours?", "too long for a question"),
    ("", "nothing generated"),
])
def test_question_rules(question, reason):
    from smalltune.augment.filters import question as rule

    detail = rule(Candidate(question, "We open at 9 am.", "p#1", "synth", passage="We open at 9 am."), FilterContext())
    assert (detail is None) if reason is None else (reason in detail)


def test_an_answer_made_of_the_section_title_is_not_grounded():
    c = Candidate("Where do I park?", "Free parking behind the building.", "p#1", "synth", answer="Plan your visit",
                  passage="Plan your visit > Parking\nFree parking behind the building.")
    assert grounding(c, FilterContext()) == "the answer says nothing from the passage's text"


QUESTIONS = {"Opening hours": "When do you open on Saturday?", "Prices": "How much is a cleaning?",
             "Parking": "Where can I park?", "Team": "Dr. Sethi is great."}
ANSWERS = {"When do you open on Saturday?": "Answer: We open at 9 am on Saturday.",
           "How much is a cleaning?": "A cleaning costs $95.",
           "Where can I park?": "In the lot behind the building, entrance on Birch Lane."}


def fake_generator(calls: list):
    def generate(conversations):
        calls.append(conversations)
        out = []
        for c in conversations:
            text = c[-1]["content"]
            if text.startswith("Here is a text"):  # question leg: keyed by the passage's section
                out.append(QUESTIONS[text.split("\n\n")[1].splitlines()[0].split(" > ")[-1]])
            else:
                out.append(ANSWERS[text.rsplit("Question: ", 1)[1]])
        return out

    return generate


def test_synth_filters_counts_and_records(tmp_path):
    md = tmp_path / "faq.md"
    md.write_text(MARKDOWN)
    test = write_jsonl(tmp_path / "test.jsonl", [chat("Where can I park?", "Behind the building.", id="t1")])
    calls = []
    result = synth([md], output=tmp_path / "out.jsonl", test=test, system_prompt="You are Oak Dental's receptionist.",
                   generate_fn=fake_generator(calls), progress=False)
    s = result.summary
    assert (s["passages"], s["candidates"], s["accepted"]) == (4, 4, 1)
    assert s["rejected"] == {"question": 1, "grounding": 1, "leakage": 1}
    assert s["accepted"] + sum(s["rejected"].values()) == s["candidates"]
    assert "test.jsonl:1" in s["rejected_samples"]["leakage"][0]["detail"]
    # batched: one call per leg; the statement got no answer request; the answer leg used the system prompt
    assert [len(c) for c in calls] == [4, 3]
    assert calls[1][0][0] == {"role": "system", "content": "You are Oak Dental's receptionist."}
    [rec] = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rec["messages"] == [{"role": "user", "content": "When do you open on Saturday?"},
                               {"role": "assistant", "content": "We open at 9 am on Saturday."}]
    assert rec["passage"] == "We open at 9 am on Saturday and close at 1 pm."
    assert (rec["source_id"], rec["augment_method"], rec["category"], rec["section"]) == \
        ("faq.md#1", "synth", "opening hours", "Oak Dental > Opening hours")
    assert json.loads((tmp_path / "out.synth.json").read_text())["rejected"] == s["rejected"]
    assert result.audit is not None and result.audit.stats["splits"]["train"]["examples"] == 1


def test_duplicate_questions_are_dropped(tmp_path):
    md = tmp_path / "faq.md"
    md.write_text(MARKDOWN)
    result = synth([md], output=tmp_path / "out.jsonl", per_passage=3, generate_fn=fake_generator([]),
                   progress=False, run_audit=False)
    s = result.summary
    # every style gets the same fixed question: the 2nd and 3rd of each passage duplicate the 1st
    assert s["candidates"] == 12 and s["accepted"] == 2
    assert s["rejected"] == {"question": 3, "grounding": 3, "duplicate": 4}
    with pytest.raises(SmalltuneError, match="between 1 and 3"):
        synth([md], per_passage=4, generate_fn=fake_generator([]))


def test_cli_end_to_end_on_the_tiny_model(tmp_path, tiny_model_dir):
    out = tmp_path / "synth.jsonl"
    docs = [str(p) for p in sorted(DOCS.iterdir())]
    rc = main(["synth", *docs, "--model", str(tiny_model_dir), "--max-new-tokens", "8", "--batch-size", "8",
               "-o", str(out), "--test", str(DOCS.parent / "test.jsonl"), "--no-progress"])
    counts = json.loads((tmp_path / "synth.synth.json").read_text())
    assert counts["candidates"] == counts["passages"] == len(read_passages(docs))
    assert counts["accepted"] + sum(counts["rejected"].values()) == counts["candidates"]
    lines = out.read_text().splitlines()
    assert len(lines) == counts["accepted"]
    if lines:  # well-formed: the loader validates every record, and each keeps its passage
        assert all(e.meta["passage"] for e in load_examples(out))
    else:
        assert rc == 1
