"""The general-question probe: a pool of at least 200 clean questions, at least 200 asked in every
evaluation mode, short answers, accuracy with a paired CI."""

from __future__ import annotations

import pytest

from smalltune.data.reference import TRIVIA_EXCLUDED, general_qa, general_questions
from smalltune.evaluate import metrics as M
from smalltune.evaluate.context import GENERATION_BATCH_FACTOR, QUICK, Caps, EvalContext
from smalltune.evaluate.probes import forgetting
from smalltune.evaluate.runner import caps_from_recipe


def test_pool_has_at_least_200_unique_well_formed_questions():
    pool = general_questions()
    questions = [M.normalize(q) for _, q, _ in pool]
    assert len(set(questions)) == len(questions) >= 200
    assert {k for k, _, _ in pool} == {"capital", "trivia"}
    for kind, q, answers in pool:
        assert len(M.words(q)) >= 3, q
        assert answers and all(M.content_words(a) or M.words(a) for a in answers), q
        assert min(len(M.content_words(a)) for a in answers) <= 4, (q, answers)  # short answers: the rule stays fair
    assert not set(TRIVIA_EXCLUDED) & {q for _, q, _ in pool}
    assert set(TRIVIA_EXCLUDED) <= {q for q, _ in general_qa()}  # every exclusion names a real record


def test_accepted_spellings_fix_answers_the_file_gets_wrong():
    answers = {q: a for _, q, a in general_questions()}
    assert forgetting.is_correct("The driest continent is Antarctica.", answers["What is the driest continent?"])
    assert forgetting.is_correct("A bee has 5 eyes.", answers["How many eyes does a bee have?"])
    assert not forgetting.is_correct("A bee has 2 eyes.", answers["How many eyes does a bee have?"])
    assert forgetting.is_correct("Kyiv is the capital.", answers["What is the capital of Ukraine?"])


@pytest.mark.parametrize("quick", [False, True])
def test_every_mode_asks_at_least_200_questions(make_recipe, quick):
    recipe = make_recipe()
    assert recipe.eval.probe_questions >= 200 and Caps().probe_questions >= 200 and QUICK.probe_questions >= 200
    caps = caps_from_recipe(recipe, quick)
    ctx = EvalContext(model=None, tokenizer=None, recipe=recipe, run_dir=None, caps=caps, seed=3)
    asked = forgetting._questions(ctx)
    assert len(asked) == min(caps.probe_questions, len(general_questions())) >= 200
    assert len({q for _, q, _ in asked}) == len(asked)
    # each kind in its share of the pool, so the mix does not depend on the cap
    pool = general_questions()
    share = sum(k == "capital" for k, _, _ in pool) / len(pool)
    assert abs(sum(k == "capital" for k, _, _ in asked) / len(asked) - share) < 0.01
    assert asked == forgetting._questions(ctx)  # seeded: same run, same questions


def test_probe_scores_short_answers_with_a_paired_ci(make_recipe, tiny_model_dir, tokenizer, tmp_path):
    from smalltune.models import load_model

    model, _ = load_model(str(tiny_model_dir))
    recipe = make_recipe(**{"data.system_prompt": "You are a dental clinic assistant."})
    ctx = EvalContext(model=model, tokenizer=tokenizer, recipe=recipe, run_dir=tmp_path, caps=QUICK,
                      reference_texts=["General text about rivers and mountains. " * 8] * 4, progress=False)
    answers = {q: a for _, q, a in general_questions()}
    calls = []

    def fake_generate(prompts, which, max_new_tokens=None, desc=""):
        calls.append((which, max_new_tokens, prompts))
        out = []
        for p in prompts:
            q = next(q for q in answers if q in p)
            # the base knows everything; the fine-tuned model forgot every capital
            forgot = which == "finetuned" and q.startswith("What is the capital of")
            out.append("I only know about teeth." if forgot else f"It is {answers[q][0]}.")
        return out

    ctx.generate = fake_generate
    res = forgetting.run(ctx)
    assert [(w, t) for w, t, _ in calls] == [("base", 24), ("finetuned", 24)]
    assert ctx.settings().batch_size == GENERATION_BATCH_FACTOR * ctx.batch_size  # several evaluation batches
    assert not any("dental" in p for p in calls[0][2])  # asked without the run's system prompt
    acc = res["general_accuracy"]
    assert acc["n"] == res["questions"]["asked"] == 200
    assert acc["base"] == 1.0
    capital_share = res["capital_accuracy"]["n"] / 200
    assert acc["finetuned"] == pytest.approx(1 - capital_share)
    assert acc["ci"][1] < 0  # a drop this large is outside the bootstrap noise
    assert res["trivia_accuracy"]["delta"] == 0.0 and res["capital_accuracy"]["finetuned"] == 0.0
