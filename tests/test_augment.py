"""``smalltune augment``: every filter on hand-written candidates (an injected generator returns fixed
strings), the output file and its counts, the refusals, and one CLI run on the tiny random model."""

from __future__ import annotations

import json

import pytest
from conftest import chat, write_jsonl

from smalltune.augment import augment
from smalltune.augment.base import clean
from smalltune.augment.filters import Candidate, FilterContext, pivot_overlap, prompt_facts
from smalltune.cli import main
from smalltune.data import load_examples
from smalltune.errors import SmalltuneError

TRAIN = [
    chat("Do you take Summit Mutual insurance?", "Yes, Summit Mutual is in-network.", id="ins", category="insurance"),
    chat("When are you open on Saturday?", "On Saturday we are open from 9 am to 1 pm.", id="sat", category="hours",
         key_facts=["9 am", "1 pm"]),
    chat("How much is a cleaning?", "A cleaning costs $85.", id="clean", category="prices"),
    chat("Can Dr. Sethi see my son on Friday?", "Yes, Dr. Sethi sees children on Friday.", id="kids", category="team"),
    chat("Where do I park my car?", "Free parking is behind the building, entrance on Birch Lane.", id="park",
         category="location"),
    chat("Is there a fee for missed appointments?", "Yes, missed appointments have a $40 fee.", id="fee",
         category="policies"),
    chat("Do you offer teeth whitening?", "Yes: in-office whitening is $350, a take-home kit $220.", id="white",
         category="services"),
]
VALIDATION = [chat("What is the price of a cleaning appointment here?", "A cleaning costs $85.", id="v1")]

# Paraphrases by source prompt: one per rejection reason, and two good ones.
REPLIES = {
    "Do you take Summit Mutual insurance?": "Is Summit Mutual insurance accepted at your clinic?",  # kept
    "When are you open on Saturday?": "On Saturday we are open from 9 am to 1 pm, see you then.",  # answers it
    "How much is a cleaning?": "What is the price of a cleaning appointment here?",  # the validation prompt
    "Can Dr. Sethi see my son on Friday?": "Can Dr. Patel see my son on Friday?",  # lost the name
    "Where do I park my car?": "Where do I park my car?",  # copy
    "Is there a fee for missed appointments?": "Sure, I can rephrase: is there a missed appointment fee",  # echo
    "Do you offer teeth whitening?": "Do you offer teeth whitening??",  # copy (punctuation only)
}


def fake_paraphraser(replies):
    def generate(conversations):
        return [replies[c[-1]["content"].split("\n\n")[-1]] for c in conversations]

    return generate


@pytest.fixture
def data(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", TRAIN), write_jsonl(tmp_path / "validation.jsonl", VALIDATION)


def test_each_reason_is_counted_and_counts_add_up(data, tmp_path):
    train, val = data
    result = augment(train, "paraphrase", validation=val, generate_fn=fake_paraphraser(REPLIES), progress=False)
    s = result.summary
    assert s["candidates"] == 7 and s["accepted"] == 1
    assert s["rejected"] == {"copy": 2, "echo": 2, "leakage": 1, "meaning": 1}
    assert s["accepted"] + sum(s["rejected"].values()) == s["candidates"] == s["accepted"] + s["rejected_total"]
    details = {r: [x["detail"] for x in xs] for r, xs in s["rejected_samples"].items()}
    assert details["meaning"] == ["lost 'Sethi'"]
    assert any("answers the question" in d for d in details["echo"])
    assert "validation.jsonl:1" in details["leakage"][0]
    # the output: same shape, the user's answer, where it came from; the counts file next to it
    [rec] = [json.loads(x) for x in result.output.read_text().splitlines()]
    assert result.output == tmp_path / "train.paraphrase.jsonl"
    assert rec["messages"] == [{"role": "user", "content": "Is Summit Mutual insurance accepted at your clinic?"},
                               {"role": "assistant", "content": "Yes, Summit Mutual is in-network."}]
    assert (rec["source_id"], rec["augment_method"], rec["generator"], rec["category"]) == \
        ("ins", "paraphrase", "custom", "insurance")
    saved = json.loads((tmp_path / "train.paraphrase.augment.json").read_text())
    assert saved["rejected"] == s["rejected"] and saved["provenance"]["counts"] == {"examples": 7, "generated": 1}


def test_near_duplicates_of_other_variants_and_of_training_prompts(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [
        chat("What does a check-up cost?", "A check-up is $60.", id="a"),
        chat("How much is a check-up at your clinic?", "A routine check-up is $60.", id="b"),
        chat("Do you see children?", "Yes, from age 1.", id="c"),
    ])
    replies = {"What does a check-up cost?": "How much is a check-up at your clinic please?",  # near training "b"
               "How much is a check-up at your clinic?": "What is the price of one check-up?",
               "Do you see children?": "Are children seen at your practice?"}
    result = augment(train, "paraphrase", per_example=2, generate_fn=fake_paraphraser(replies), progress=False)
    s = result.summary
    # variant 2 gets the same reply as variant 1 (a fake ignores the style): a duplicate of an accepted variant
    assert (s["candidates"], s["accepted"], s["rejected"]) == (6, 2, {"duplicate": 4})
    details = sorted(x["detail"] for x in s["rejected_samples"]["duplicate"])
    assert sum("near-duplicate of another variant (similarity 1.00)" == d for d in details) == 2
    assert sum(d.startswith("near-duplicate of training example b (similarity 0.8") for d in details) == 2
    assert [(r["id"], r["source_id"]) for r in result.records] == [("b-para1", "b"), ("c-para1", "c")]


def test_same_shape_as_input_and_with_originals(tmp_path):
    rows = [{"prompt": "How much is a cleaning?", "completion": "A cleaning costs $85.", "id": 7},
            {"instruction": "Where do I park my car?", "input": "Visitor question", "output": "Behind the building."}]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    replies = {"How much is a cleaning?": "What does a cleaning cost?", "Where do I park my car?": "Where can I leave my car?"}
    out = tmp_path / "grown.json"
    result = augment(path, generate_fn=fake_paraphraser(replies), output=out, with_originals=True, progress=False)
    written = json.loads(out.read_text())
    assert written[:2] == rows
    assert written[2]["prompt"] == "What does a cleaning cost?" and written[2]["source_id"] == "7"
    assert written[3]["instruction"] == "Where can I leave my car?" and written[3]["input"] == "Visitor question"
    assert len(load_examples(out)) == 4 and result.summary["accepted"] == 2


def fake_translator(pivots: dict[str, str], back: dict[str, str]):
    """Replies by the text after the request's blank line: source -> pivot text, pivot text -> English."""
    def generate(conversations):
        out = []
        for c in conversations:
            text = c[-1]["content"].split("\n\n")[-1]
            out.append(back[text] if "into English" in c[-1]["content"] else pivots[text])
        return out

    return generate


def test_backtranslation_checks_the_round_trip(data):
    train, _ = data
    pivots = {p: p for p in REPLIES}  # the generator copies the English: no translation
    pivots["Do you take Summit Mutual insurance?"] = "Acceptez-vous l'assurance Summit Mutual ?"
    pivots["How much is a cleaning?"] = "Combien coûte un nettoyage ?"
    back = {"Acceptez-vous l'assurance Summit Mutual ?": "Do you accept Summit Mutual insurance?",
            "Combien coûte un nettoyage ?": "How much does a cleaning cost?"}
    result = augment(train, "backtranslate", generate_fn=fake_translator(pivots, back), progress=False)
    s = result.summary
    assert s["rejected"] == {"round_trip": 5} and s["accepted"] == 2
    assert result.message == "the generator could not translate (5/7 round trips failed the check)"
    rec = next(r for r in result.records if r["source_id"] == "clean")
    assert rec["messages"][0]["content"] == "How much does a cleaning cost?"
    assert (rec["augment_method"], rec["pivot_language"], rec["pivot_text"]) == \
        ("backtranslate", "French", "Combien coûte un nettoyage ?")


def test_a_pivot_that_reads_french_but_comes_back_as_nonsense_is_a_failed_round_trip(data):
    train, _ = data
    pivots = {p: "Je suis à l'adresse de l'adresse pour l'adresse." for p in REPLIES}  # French, not a translation
    pivots["How much is a cleaning?"] = "Combien coûte un nettoyage ?"
    back = {"Je suis à l'adresse de l'adresse pour l'adresse.": "I am here to address you.",
            "Combien coûte un nettoyage ?": "How much does a cleaning cost?"}
    result = augment(train, "backtranslate", generate_fn=fake_translator(pivots, back), progress=False)
    # the pivot check passes (French words, no English), the way back does not: still a failed round trip
    assert (result.summary["accepted"], result.summary["rejected"]) == (1, {"meaning": 6})
    assert result.message == "the generator could not translate (6/7 round trips failed the check)"


def test_round_trip_rules():
    ctx = FilterContext()
    def check(source, pivot, language="French"):
        c = Candidate("x", source, "s", "backtranslate", answer="a", pivot=pivot, facts=prompt_facts(source),
                      meta={"pivot_language": language})
        from smalltune.augment.filters import round_trip
        return round_trip(c, ctx)

    assert check("When are you open on Saturday?", "Quand êtes-vous ouvert le samedi ?") is None
    assert "not a translation" in check("When are you open on Saturday?", "When are you open on Saturday, please?")
    assert "empty" in check("When are you open on Saturday?", "  ")
    assert "not French" in check("When are you open on Saturday?", "Wann haben Sie am Samstag geöffnet?")
    assert check("Summit Mutual?", "Summit Mutual ?") is None  # names only: nothing to tell by
    assert "lost the number '14'" in check("Can my 14-year-old come alone?", "Mon fils peut-il venir seul ?")
    assert check("Can my 14-year-old come alone?", "Mon fils de 14 ans peut-il venir seul ?") is None
    assert pivot_overlap("Summit Mutual?", "Summit Mutual ?", ["Summit", "Mutual"]) is None


def test_prompt_facts_and_clean():
    assert prompt_facts("Can Dr. Sethi see my son at 3 pm on Friday?", ["3 pm", "copay"]) == \
        ["3", "Dr", "Friday", "Sethi", "3 pm"]
    assert clean('Rewritten message: "Where can I park?"\nHope it helps') == "Where can I park?"
    assert clean("1. Where can I park?") == "Where can I park?"


def test_held_out_files_are_never_augmented(tmp_path, data):
    train, val = data
    with pytest.raises(SmalltuneError, match="also the --validation file"):
        augment(val, validation=val, generate_fn=fake_paraphraser(REPLIES), progress=False)
    with pytest.raises(SmalltuneError, match="validation/test data"):
        augment(val, generate_fn=fake_paraphraser(REPLIES), progress=False)
    with pytest.raises(SmalltuneError, match="between 1 and 4"):
        augment(train, per_example=5, generate_fn=fake_paraphraser(REPLIES), progress=False)
    with pytest.raises(SmalltuneError, match="did you mean 'backtranslate'"):
        augment(train, "backtranslat", generate_fn=fake_paraphraser(REPLIES), progress=False)
    with pytest.raises(SmalltuneError, match="one per pivot language"):
        augment(train, "backtranslate", per_example=2, generate_fn=fake_paraphraser(REPLIES), progress=False)


def test_cli_errors_are_one_line(tmp_path, data, capsys):
    _, val = data
    assert main(["augment", str(val), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "never augmented" in err and len(err.strip().splitlines()) == 1


def test_cli_end_to_end_on_the_tiny_model(tmp_path, data, tiny_model_dir):
    train, val = data
    out = tmp_path / "out.jsonl"
    rc = main(["augment", str(train), "--model", str(tiny_model_dir), "--per-example", "2", "--validation", str(val),
               "--max-new-tokens", "8", "--batch-size", "4", "--with-originals", "-o", str(out), "--no-progress"])
    counts = json.loads((tmp_path / "out.augment.json").read_text())
    assert counts["candidates"] == 14
    assert counts["accepted"] + sum(counts["rejected"].values()) == 14
    assert rc == (0 if counts["accepted"] else 1)
    examples = load_examples(out)  # well-formed: the loader validates every record
    assert len(examples) == len(TRAIN) + counts["accepted"]
    assert all(e.meta["generator"] == str(tiny_model_dir) for e in examples[len(TRAIN):])
