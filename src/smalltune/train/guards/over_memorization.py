"""Over-memorization: validation accuracy holds while validation perplexity climbs.

"Over-memorization in fine-tuning LLMs" (arXiv 2508.04117) finds that a model trained past a
point keeps its test accuracy while its test perplexity rises sharply, and that such a model is
less robust and less diverse. We watch the same two numbers at every evaluation: perplexity of
the validation reference answers (``eval_ppl``) and next-token accuracy on them
(``eval_token_acc``). The state is flagged when accuracy is within ``acc_tolerance`` of its best
while perplexity is at least ``ppl_factor`` times its minimum; checkpoint selection then prefers
the best accuracy under that perplexity cap (see ``selection.py``).

Adds ``ppl_ratio`` (perplexity / its minimum so far) and ``over_memorization`` (bool) to the record.
"""

from __future__ import annotations

from .base import GUARD_DEFAULTS, GUARDS, Guard, GuardEvent


@GUARDS.register("over_memorization")
class OverMemorization(Guard):
    """Flag (warn once, keep flagging in the record) when accuracy holds while perplexity climbs.

    >>> g = OverMemorization(ppl_factor=1.5, acc_tolerance=0.02)
    >>> g.check({"eval_ppl": 4.0, "eval_token_acc": 0.60}, 10) is None
    True
    >>> g.check({"eval_ppl": 6.5, "eval_token_acc": 0.59}, 20).action
    'warn'
    """

    name = "over_memorization"
    keys = ("guards.ppl_factor", "guards.acc_tolerance")
    order = 20

    @classmethod
    def from_recipe(cls, recipe):
        return cls(recipe.guards.ppl_factor, recipe.guards.acc_tolerance)

    def __init__(self, ppl_factor: float = GUARD_DEFAULTS.ppl_factor,
                 acc_tolerance: float = GUARD_DEFAULTS.acc_tolerance):
        self.ppl_factor, self.acc_tolerance = ppl_factor, acc_tolerance
        self.min_ppl: float | None = None
        self.min_ppl_step: int | None = None
        self.best_acc: float | None = None
        self.flagged_step: int | None = None
        self.flagged_values: dict = {}

    def check(self, record: dict, step: int) -> GuardEvent | None:
        ppl, acc = record["eval_ppl"], record["eval_token_acc"]
        if self.min_ppl is None or ppl < self.min_ppl:
            self.min_ppl, self.min_ppl_step = ppl, step
        self.best_acc = acc if self.best_acc is None else max(self.best_acc, acc)
        ratio = ppl / self.min_ppl if self.min_ppl > 0 else 1.0
        flagged = ratio >= self.ppl_factor and acc >= self.best_acc - self.acc_tolerance
        record["ppl_ratio"], record["over_memorization"] = ratio, flagged
        if not flagged or self.flagged_step is not None:
            return None
        self.flagged_step = step
        self.flagged_values = {"eval_ppl": ppl, "min_ppl": self.min_ppl, "min_ppl_step": self.min_ppl_step,
                               "ppl_ratio": ratio, "eval_token_acc": acc, "best_acc": self.best_acc}
        return GuardEvent(
            self.name, "warn", step,
            f"over-memorization: validation perplexity {ppl:.3f} is {ratio:.2f}x its minimum {self.min_ppl:.3f} "
            f"(step {self.min_ppl_step}) while token accuracy holds at {acc:.1%} (best {self.best_acc:.1%})",
            dict(self.flagged_values),
        )

    def summary(self) -> dict:
        if self.flagged_step is None:
            return {}
        return {"flagged_step": self.flagged_step, **self.flagged_values}
