"""The two numbers a trial is judged by, both measured on data the trial never trained on.

* **task quality** on the validation split: key-fact recall of greedy answers (the examples'
  ``key_facts``, else the facts of the reference answer that a rewrite must keep: numbers,
  addresses, proper nouns -- the rule self-distillation uses), or minus the validation loss when
  no validation answer holds a fact;
* **forgetting**: the relative rise of general-text perplexity at the chosen checkpoint, measured by
  the forgetting guard on the measurement paragraphs (``train/splits.py``: never replayed, never
  used for a Fisher). The forgetting budget is a constraint, not an objective: the guard stops a
  trial at the budget and checkpoint selection only keeps checkpoints within it.

General-question accuracy (capitals, trivia) costs hundreds of generations per trial, so the search
leaves it to ``smalltune evaluate`` of the chosen run, where it is measured with its CI.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Scores:
    quality: float  # higher is better
    quality_name: str  # "key_fact_recall" or "neg_eval_loss"
    forgetting: float  # lower is better (relative rise of reference perplexity; 0 = none)
    answered: int  # validation questions answered for the quality score


def validation_facts(example) -> list[str]:
    from ..train.targets.self_distill import key_facts

    return list(example.meta.get("key_facts") or key_facts(example))


def trial_forgetting(result) -> float:
    """The forgetting guard's number at the trial's chosen checkpoint (inf when it measured none)."""
    forgetting = (result.best_metrics or {}).get("forgetting")
    return float(forgetting) if forgetting is not None else float("inf")


def score_trial(result, base, recipe, validation: list, max_new_tokens: int = 48) -> Scores:
    """Scores of a finished trial; ``base`` is the search's loaded base model (a fresh copy is used)."""
    from ..evaluate.metrics import key_fact_recall
    from ..generate import GenerationSettings, generate
    from ..train.methods import METHODS

    forgetting = trial_forgetting(result)
    with_facts = [(ex, facts) for ex in validation if (facts := validation_facts(ex))]
    if not with_facts or not result.artifact_written:
        loss = (result.best_metrics or {}).get("eval_loss", float("inf"))
        return Scores(-float(loss), "neg_eval_loss", forgetting, 0)
    method = METHODS.get(recipe.method.name, "method.name")()
    model, tok = base.fresh()
    model = method.load(model, f"{result.run_dir}/{method.artifact}")
    prompts = [ex.prompt(recipe.data.system_prompt) for ex, _ in with_facts]
    answers = generate(model, tok, prompts, GenerationSettings(max_new_tokens=max_new_tokens,
                                                               batch_size=recipe.eval.batch_size))
    recall = sum(key_fact_recall(a, facts) for a, (_, facts) in zip(answers, with_facts)) / len(with_facts)
    return Scores(recall, "key_fact_recall", forgetting, len(with_facts))
