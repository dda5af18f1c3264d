"""Forgetting budget: perplexity on general reference text may rise at most ``budget`` over the base.

At every evaluation we score a small fixed sample of general English (the measurement paragraphs
of :func:`smalltune.train.splits.reference_roles`, never trained on; ``reference_tokens`` tokens, a few percent of an evaluation's
cost) and compare with the base model's perplexity on the same tokens, measured once before
training (``PluginEnv.as_base``): with the adapter disabled for PEFT models, otherwise before the
first step, and in an update of a full model with the base's weights swapped in for that one pass.
So the budget of every version of a lineage is counted from the base model, not from its parent:
per parent, it would compound (v3 could sit 1.1³ - 1 = +33% over the base under a +10% budget).
The base value is part of the guard state, so ``--resume`` keeps it.

Adds ``ref_ppl``, ``ref_ppl_base``, ``forgetting`` (relative rise) and
``within_forgetting_budget`` to the record. With ``action="stop"`` the run stops and checkpoint
selection only considers evaluations within budget; with ``"warn"`` it only warns.
"""

from __future__ import annotations

from .base import GUARD_DEFAULTS, GUARDS, Guard, GuardContext, GuardEvent


def reference_items(tokenizer, texts: list[str], tokens: int, max_length: int = 256) -> list:
    """Tokenised windows of ``texts``, about ``tokens`` tokens in all, in order."""
    from ...data.tokenize import tokenize_plain

    items, total = [], 0
    for item in tokenize_plain(tokenizer, texts, max_length):
        if total >= tokens:
            break
        items.append(item)
        total += len(item)
    return items


def reference_ppl(ctx: GuardContext, items: list) -> float:
    from ..loss import dataset_metrics

    return dataset_metrics(ctx.model, items, ctx.batch_size, ctx.device, ctx.tokenizer.pad_token_id,
                           ctx.autocast, accuracy=False)["eval_ppl"]


@GUARDS.register("forgetting_budget")
class ForgettingBudget(Guard):
    """Compare reference perplexity with the base model's; stop or warn past ``budget``.

    >>> g = ForgettingBudget(budget=0.05); g.base_ppl = 20.0
    >>> g.check({"ref_ppl": 21.5}, 30).message
    'forgetting: reference perplexity 21.500 is 7.5% above the base model's 20.000 (budget 5.0%) at step 30'
    """

    name = "forgetting_budget"
    keys = ("guards.forgetting_budget", "guards.forgetting_action", "guards.reference_tokens")
    order = 10
    needs_base = True

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.guards.enabled and recipe.guards.forgetting_budget is not None

    @classmethod
    def from_recipe(cls, recipe):
        g = recipe.guards
        return cls(g.forgetting_budget, g.forgetting_action, g.reference_tokens)

    def __init__(self, budget: float, action: str = GUARD_DEFAULTS.forgetting_action,
                 tokens: int = GUARD_DEFAULTS.reference_tokens):
        self.budget, self.action, self.tokens = budget, action, tokens
        self.base_ppl: float | None = None
        self.last_within_step: int | None = None
        self.fired_step: int | None = None
        self.fired_values: dict = {}
        self._items: list = []

    def setup(self, ctx: GuardContext) -> None:
        from ..splits import GUARD_PARAGRAPHS

        texts = ctx.reference.take_measure("measure_forgetting_guard", GUARD_PARAGRAPHS)
        self._items = reference_items(ctx.tokenizer, texts, self.tokens)
        if self.base_ppl is None:  # a resumed run keeps the value measured at its start
            from ..setup import items_key

            def measure():
                with ctx.as_base():
                    return reference_ppl(ctx, self._items)

            self.base_ppl = ctx.once(("reference_ppl", items_key(self._items)), measure)

    def measure(self, ctx: GuardContext) -> dict:
        return {"ref_ppl": reference_ppl(ctx, self._items)}

    def check(self, record: dict, step: int) -> GuardEvent | None:
        rise = record["ref_ppl"] / self.base_ppl - 1
        within = rise <= self.budget
        record.update(ref_ppl_base=self.base_ppl, forgetting=rise, within_forgetting_budget=within)
        if within:
            self.last_within_step = step
            return None
        if self.fired_step is not None and self.action == "warn":
            return None  # warn once; the record still carries the numbers
        self.fired_step = self.fired_step or step
        self.fired_values = {"ref_ppl": record["ref_ppl"], "base_ppl": self.base_ppl, "rise": rise,
                             "budget": self.budget, "last_within_step": self.last_within_step}
        return GuardEvent(
            self.name, self.action, step,
            f"forgetting: reference perplexity {record['ref_ppl']:.3f} is {rise:.1%} above the base model's "
            f"{self.base_ppl:.3f} (budget {self.budget:.1%}) at step {step}",
            dict(self.fired_values),
        )

    def summary(self) -> dict:
        out = {"base_ppl": self.base_ppl, "budget": self.budget, "last_within_step": self.last_within_step}
        return {**out, "fired_step": self.fired_step, **self.fired_values} if self.fired_step else out
