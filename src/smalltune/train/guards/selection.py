"""Checkpoint selection: which evaluation's weights become the run's artifact.

Three rules (``guards.selection``):

* ``eval_loss``: lowest validation loss (equivalently, lowest validation perplexity).
* ``accuracy``: best validation token accuracy among evaluations whose perplexity is at most
  ``ppl_factor`` x the lowest seen: the over-memorization-aware choice of "Over-memorization in
  fine-tuning LLMs" (arXiv 2508.04117), trading a bounded perplexity rise for accuracy.
* ``auto`` (default): ``eval_loss`` until the over-memorization guard flags, then ``accuracy``.

With a forgetting budget whose action is ``stop``, only evaluations within the budget count. With a
``loss_ceiling`` (the loop sets the start's validation loss plus a slack: nothing worse than where the run started
is published; an update has none unless ``update.validation_slack`` is set: its gate judges it), the evaluations
under it are chosen from whenever there are any; only when none is does the rule pick among all, and the loop then
publishes nothing. Before, the rule chose first and the ceiling vetoed after: an
update whose most accurate checkpoint was over the ceiling published nothing although an earlier one was under it
(benchmarks/README.md, "Unlikelihood on the stale answers", seed 1).

Least forgetting within a tolerance (``early_stopping.min_delta``): when the forgetting guard
measures, the loss rule keeps, among the evaluations within ``tolerance`` of the lowest validation
loss, the one that forgot least. Later checkpoints forget more at nearly the same validation loss
(benchmarks/README.md, "learning vs forgetting": LoRA's general-text perplexity rose every epoch
while its task loss flattened), so a difference smaller than the one early stopping ignores should
not buy extra forgetting.

The accuracy rule can change its mind about the past (the cap shrinks when perplexity reaches a
new minimum), so the weights of every evaluation that could still be chosen are kept (the accuracy/perplexity
Pareto front under the cap: :meth:`CheckpointSelector.candidates`; ``snapshots.py`` keeps them).
"""

from __future__ import annotations

import math

from .base import EARLY_STOPPING_DEFAULTS, GUARD_DEFAULTS

ACC, PPL = "eval_token_acc", "eval_ppl"


class CheckpointSelector:
    """Decide the best evaluation from all evaluation records seen so far.

    >>> s = CheckpointSelector("accuracy", ppl_factor=1.5)
    >>> for step, ppl, acc in ((10, 4.0, 0.50), (20, 5.0, 0.58), (30, 7.0, 0.60)):
    ...     _ = s.update({"eval_loss": 0, "eval_ppl": ppl, "eval_token_acc": acc}, step)
    >>> s.best_step   # step 30 is over the cap 1.5 x 4.0 = 6.0
    20
    """

    # mode defaults to the plain rule, what a run with its guards off uses, not the recipe's "auto"
    # (which reads the over-memorization guard's flags in the records).
    def __init__(self, mode: str = "eval_loss", metric: str = EARLY_STOPPING_DEFAULTS.metric,
                 ppl_factor: float = GUARD_DEFAULTS.ppl_factor, respect_budget: bool = False,
                 tolerance: float = EARLY_STOPPING_DEFAULTS.min_delta):
        self.mode, self.metric, self.ppl_factor, self.respect_budget = mode, metric, ppl_factor, respect_budget
        self.tolerance = tolerance
        self.loss_ceiling: float | None = None  # validation loss above which an evaluation is chosen only if all are
        self.records: list[dict] = []
        self.best_step: int | None = None
        self.best_record: dict | None = None
        self.rule = ""

    # --- the decision ---------------------------------------------------------------------------
    def eligible(self, r: dict) -> bool:
        finite = math.isfinite(r[self.metric]) and math.isfinite(r[PPL])  # never keep weights that scored NaN
        return finite and (r.get("within_forgetting_budget", True) or not self.respect_budget)

    def pool(self) -> list[dict]:
        """The evaluations the rule chooses from: the eligible ones under the loss ceiling, else every eligible one."""
        pool = [r for r in self.records if self.eligible(r)]
        return self.under_ceiling(pool) or pool

    def under_ceiling(self, pool: list[dict]) -> list[dict]:
        return [r for r in pool if self.loss_ceiling is None or r["eval_loss"] <= self.loss_ceiling]

    def cap(self) -> float | None:
        ppls = [r[PPL] for r in self.records if math.isfinite(r[PPL])]
        return self.ppl_factor * min(ppls) if ppls else None

    def accuracy_rule_active(self) -> bool:
        return self.mode == "accuracy" or (self.mode == "auto" and any(r.get("over_memorization") for r in self.records))

    def update(self, record: dict, step: int) -> bool:
        """Add one evaluation; return True when the choice is now this evaluation."""
        self.records.append({**record, "step": step})
        pool = self.pool()
        best, self.rule = None, ""
        if pool and self.accuracy_rule_active() and self.cap() is not None:
            under = [r for r in pool if r[PPL] <= self.cap()]
            if under:
                best = max(under, key=lambda r: (r[ACC], -r[PPL], -r["step"]))
                self.rule = "accuracy"
        if pool and best is None:
            best = min(pool, key=lambda r: r[self.metric])  # first of equals: earliest
            self.rule = self.metric
            near = self.within_tolerance(pool, best)
            if len(near) > 1:
                best = min(near, key=lambda r: (r["forgetting"], r[self.metric]))
                self.rule = "least_forgetting" if best is not near[0] else self.metric
        self.best_step, self.best_record = (best["step"], dict(best)) if best else (None, None)
        return self.best_step == step

    def within_tolerance(self, pool: list[dict], best: dict) -> list[dict]:
        """Evaluations within ``tolerance`` of ``best`` on the metric that measured forgetting (best first)."""
        if self.tolerance <= 0 or best.get("forgetting") is None:
            return [best]
        near = [r for r in pool if r.get("forgetting") is not None
                and r[self.metric] <= best[self.metric] + self.tolerance]
        return [best] + [r for r in near if r is not best]

    def candidates(self) -> set[int]:
        """Steps that may still be chosen later (their weights must be kept). Once an evaluation is under the loss
        ceiling, none over it can be chosen again; while none is, a later one under it wins without the past."""
        keep = {self.best_step} if self.best_step is not None else set()
        pool = self.pool()
        if pool and self.tolerance > 0:  # a later best may pull an earlier, less-forgetting one back in
            low = min(r[self.metric] for r in pool)
            keep |= {r["step"] for r in pool if r.get("forgetting") is not None
                     and r[self.metric] <= low + self.tolerance}
        if self.mode == "eval_loss":
            return keep  # a past non-best outside the tolerance can never win again
        cap = self.cap()
        pool = [r for r in pool if cap is not None and r[PPL] <= cap]
        for r in pool:
            dominated = any(s is not r and s[ACC] >= r[ACC] and s[PPL] <= r[PPL]
                            and (s[ACC] > r[ACC] or s[PPL] < r[PPL] or s["step"] < r["step"]) for s in pool)
            if not dominated:
                keep.add(r["step"])
        return keep

    def reason(self) -> str:
        """One line for the summary: which checkpoint, and why."""
        if self.best_record is None:
            budget = " within the forgetting budget" if self.respect_budget else ""
            return f"no evaluation{budget} to choose from"
        r = self.best_record
        skipped = sum(not self.eligible(x) for x in self.records)
        budget = f"; {skipped} evaluations over the forgetting budget not considered" if skipped else ""
        worse = len([x for x in self.records if self.eligible(x)]) - len(self.pool())
        budget += f"; {worse} evaluations worse on validation than the start not considered" if worse else ""
        if self.rule == "accuracy":
            low = min((x for x in self.records if math.isfinite(x[PPL])), key=lambda x: x[PPL])
            why = "over-memorization flagged, so " if self.mode == "auto" else ""
            return (f"step {r['step']}: {why}best token accuracy {r[ACC]:.1%} with perplexity {r[PPL]:.3f} under the cap "
                    f"{self.cap():.3f} ({self.ppl_factor:g} x minimum {low[PPL]:.3f} at step {low['step']}){budget}")
        if self.rule == "least_forgetting":
            low = min(self.pool(), key=lambda x: x[self.metric])
            return (f"step {r['step']}: least forgetting ({r['forgetting']:+.1%}) among evaluations within "
                    f"{self.tolerance:g} of the lowest {self.metric} {low[self.metric]:.4f} (step {low['step']}){budget}")
        return f"step {r['step']}: lowest {self.metric} {r[self.metric]:.4f}{budget}"

    def state_dict(self) -> dict:
        return {"records": self.records, "best_step": self.best_step, "best_record": self.best_record, "rule": self.rule}

    def load_state_dict(self, state: dict) -> None:
        self.records = state.get("records", [])
        self.best_step, self.best_record = state["best_step"], state["best_record"]
        self.rule = state.get("rule", "")


BestSelector = CheckpointSelector  # the foundation's name
