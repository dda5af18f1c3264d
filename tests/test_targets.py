"""Target transforms: selective token masking and self-distilled targets."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from smalltune import train
from smalltune.data.example import Example
from smalltune.data.tokenize import IGNORE, Tokenized
from smalltune.rundir import RunDir
from smalltune.train.targets.self_distill import CACHE_NAME, judge, key_facts, self_distill
from smalltune.train.targets.stm import selective_token_mask

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])  # next-token probabilities at every position: ppl 2, 3.3, 6.7, 20


class FixedLM(nn.Module):
    """Predicts the same distribution everywhere, so each token's perplexity is 1 / PROBS[token]."""

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=PROBS.log().expand(*input_ids.shape, 4).clone())


def item(ids, labels, i=0):
    return Tokenized(Example([{"role": "assistant", "content": "x"}], f"x{i}"), ids, labels)


def test_stm_masks_exactly_the_tokens_above_threshold():
    items = [item([0, 1, 2, 3, 0, 1], [IGNORE, IGNORE, 2, 3, 0, 1]),
             item([3, 0, 0, 1], [IGNORE, 0, 0, IGNORE], 1)]
    kept, info = selective_token_mask(FixedLM(), items, 2.5, "cpu", pad_id=0)
    assert kept[0].labels == [IGNORE, IGNORE, IGNORE, IGNORE, 0, IGNORE]  # ppl 6.7, 20, 2 (kept), 3.3
    assert kept[1].labels == [IGNORE, 0, 0, IGNORE]  # token 0 has ppl 2 <= 2.5
    assert info["stm_masked_tokens"] == 3 and info["stm_response_tokens"] == 6
    assert info["stm_masked_share"] == 0.5
    assert items[0].labels == [IGNORE, IGNORE, 2, 3, 0, 1]  # the input is not modified

    kept, info = selective_token_mask(FixedLM(), items, 4.0, "cpu", pad_id=0)
    assert kept[0].labels == [IGNORE, IGNORE, IGNORE, IGNORE, 0, 1]
    kept, info = selective_token_mask(FixedLM(), [item([0, 3, 3], [IGNORE, 3, 3])], 2.5, "cpu", pad_id=0)
    assert kept == [] and info["stm_dropped_examples"] == 1  # nothing left to learn from it


class CountingLM(nn.Module):
    """Puts probability 0.9 on "current token + 1" (mod 4): a token's perplexity depends on the one before it."""

    def forward(self, input_ids, attention_mask=None):
        probs = torch.full((*input_ids.shape, 4), 0.1 / 3)
        probs.scatter_(-1, ((input_ids + 1) % 4).unsqueeze(-1), 0.9)
        return SimpleNamespace(logits=probs.log())


def test_stm_scores_each_label_by_the_prediction_from_the_position_before():
    # 0 -> 1 and 1 -> 2 are likely (ppl 1.1); 2 -> 0 and 0 -> 3 are not (ppl 30)
    items = [item([0, 1, 2, 0, 3], [IGNORE, 1, 2, 0, 3])]
    kept, info = selective_token_mask(CountingLM(), items, 2.5, "cpu", pad_id=0)
    assert kept[0].labels == [IGNORE, 1, 2, IGNORE, IGNORE]
    assert info["stm_masked_share"] == 0.5


def ex(question, answer, i=0, **meta):
    return Example([{"role": "user", "content": question}, {"role": "assistant", "content": answer}], f"e{i}", meta=meta)


def test_key_facts_are_numbers_proper_nouns_and_record_facts():
    e = ex("Price?", "A checkup at Oak Dental costs $80. Cleaning is extra.", key_facts=["checkup"])
    assert key_facts(e) == ["80", "Oak", "Dental", "checkup"]  # "A" and "Cleaning" open sentences


def test_judge_rejects_lost_facts_and_parroting_and_keeps_a_good_rewrite():
    e = ex("How much does a checkup cost at your clinic?", "A checkup at Oak Dental costs $80.", key_facts=["checkup"])
    assert judge(e, "At Oak Dental you pay $80 for a checkup.") is None
    assert judge(e, "At Oak Dental a checkup is cheap.") == "missing fact '80'"
    assert judge(e, "A checkup costs $80.") == "missing fact 'Oak'"
    assert judge(e, "How much does a checkup cost at your clinic? $80 at Oak Dental") == "parrots the instruction"
    assert judge(e, "Here is the reference answer: $80 at Oak Dental for a checkup") == "parrots the instruction"
    assert judge(e, "  ") == "empty"
    assert judge(e, "At Oak Dental a checkup costs $800.") == "missing fact '80'"  # 800 is not 80
    assert judge(e, "Sure.\n\nThe rewritten answer is:\nAt Oak Dental you pay $80 for a checkup.") == "adds a preamble"

    pay = ex("How do I pay?", "You pay at the visit and we give you an itemized receipt and a claim form for Oakridge Health.")
    assert judge(pay, "My insurance is Oakridge Health, so I get a claim form.") == "drifts from the reference"
    mail = ex("Complaints?", "Please write to hello@smile.example and we reply within 2 days.")
    assert key_facts(mail) == ["hello@smile.example", "2"]
    assert judge(mail, "Please write to hello@smle.example and we reply within 2 days.") == (
        "missing fact 'hello@smile.example'")


def test_self_distill_keeps_good_rewrites_rejects_bad_and_caches(tmp_path):
    examples = [ex("Hours?", "We open at 9 am at Oak Road.", 0), ex("Price?", "A checkup costs $80.", 1)]
    answers = {"e0": "Our doors open at 9 am on Oak Road.", "e1": "A checkup is not expensive."}
    asked = []

    def fake_generate(conversations):
        asked.extend(conversations)
        return [answers["e0" if "Hours?" in c[-1]["content"] else "e1"] for c in conversations]

    out, info = self_distill(examples, fake_generate, tmp_path / "targets")
    assert out[0].target == "Our doors open at 9 am on Oak Road." and out[0].meta["original_target"] == examples[0].target
    assert out[1].target == "A checkup costs $80."  # rejected: lost the price
    assert info["self_distill_kept"] == 1 and info["self_distill_kept_share"] == 0.5
    assert info["self_distill_rejected"] == {"missing fact": 1}
    assert "A checkup costs $80." in asked[1][-1]["content"]  # the model sees the reference it rewrites

    cache = [json.loads(line) for line in (tmp_path / "targets" / CACHE_NAME).read_text().splitlines()]
    assert [r["kept"] for r in cache] == [True, False]

    def must_not_run(conversations):
        raise AssertionError("cached rewrites must be reused")

    again, info2 = self_distill(examples, must_not_run, tmp_path / "targets")
    assert [e.target for e in again] == [e.target for e in out] and info2["self_distill_generated"] == 0

    changed = [examples[0], ex("Price?", "A cleaning costs $95.", 1)]  # a new reference: regenerated
    answers["e1"] = "Cleaning costs $95 here."
    out3, info3 = self_distill(changed, fake_generate, tmp_path / "targets")
    assert info3["self_distill_generated"] == 1 and out3[1].target == "Cleaning costs $95 here."


def test_stm_and_self_distill_run_in_training(make_recipe):
    result = train(make_recipe(**{"train.max_steps": 2, "targets.stm_threshold": 49152.0,
                                  "targets.self_distill": True, "targets.self_distill_max_new_tokens": 8}),
                   progress=False)
    run = RunDir(result.run_dir)
    start = next(r for r in run.read_metrics() if r.kind == "event" and r.event == "start").extra
    summary = json.loads(run.train_summary.read_text())["data"]["transforms"]
    # the random tiny model finds its tokens about as likely as 1 / vocabulary: some above, some below
    assert 0 < start["stm_masked_share"] < 1 and summary["stm_masked_share"] == start["stm_masked_share"]
    assert start["self_distill_examples"] == 30 and "self_distill_kept_share" in summary
    assert (run.path / "targets" / CACHE_NAME).exists()


def test_stm_threshold_below_one_is_a_recipe_error(make_recipe):
    from smalltune.errors import RecipeError

    with pytest.raises(RecipeError, match=r"targets.stm_threshold must be >= 1.0"):
        make_recipe(**{"targets.stm_threshold": 0.5})
