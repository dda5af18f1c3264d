"""Successive halving on the first evaluations of each trial (Jamieson & Talwalkar 2016,
"Non-stochastic Best Arm Identification and Hyperparameter Optimization", arXiv 1502.07943;
Li et al., "A System for Massively Parallel Hyperparameter Tuning", arXiv 1810.05934 for the
asynchronous form used here).

Rungs are the 1st, eta-th, eta^2-th ... evaluation of a trial. At a rung, a trial continues only
while its validation loss is within the best 1/eta of what earlier trials scored at that rung, and
below that cutoff by more than ``margin`` (relative): two seeds of one recipe differ by about that
much, so a smaller lead shows nothing and only buys the trial more training (benchmarks/README.md,
"Rung noise"). A weak trial stops there, which is where a search saves most of its time.

Optuna's own pruners do not support multi-objective studies (``Trial.report`` refuses them), so the
rung values live in each trial's user attributes (they survive in the study's storage, and so across
``--resume`` and machines) and this plugin decides. It is a training plugin like any guard: its
``check`` hook sees every evaluation and returns an ``abandon`` event to prune.
"""

from __future__ import annotations

from ..train.plugins import GuardEvent, Plugin

RUNG_ATTR = "rung_{}"


def rungs(eta: int, limit: int = 8) -> list[int]:
    """Evaluation counts at which a trial is compared: 1, eta, eta^2, ... (at most ``limit`` rungs)."""
    out, r = [], 1
    while len(out) < limit:
        out.append(r)
        r *= max(eta, 2)
    return out


class HalvingPruner(Plugin):
    """Stop this trial at a rung where it is outside the best 1/eta of earlier trials.

    >>> p = HalvingPruner(trial, study, eta=2, min_trials=2)
    """

    name = "tune_pruner"
    order = 95  # after every guard has annotated the record
    keys = ("tune.halving_rate", "tune.prune_margin")

    def __init__(self, trial, study, eta: int = 3, min_trials: int = 2, margin: float = 0.0):
        self._trial, self._study, self.eta, self.min_trials, self.margin = trial, study, eta, min_trials, margin
        self.evals, self.pruned_at = 0, None

    def check(self, record: dict, step: int) -> GuardEvent | None:
        self.evals += 1
        if self.evals not in rungs(self.eta):
            return None
        key = RUNG_ATTR.format(self.evals)
        value = float(record["eval_loss"])
        self._trial.set_user_attr(key, value)
        earlier = sorted(t.user_attrs[key] for t in self._study.get_trials(deepcopy=False)
                         if t.number != self._trial.number and key in t.user_attrs)
        if len(earlier) < self.min_trials:
            return None
        keep = max(1, len(earlier) // self.eta)
        cutoff = earlier[keep - 1]
        if value <= cutoff * (1 - self.margin):
            return None
        self.pruned_at = step
        lead = f"; a lead under {self.margin:.1%} counts as a tie" if self.margin and value < cutoff else ""
        return GuardEvent(self.name, "abandon", step,  # a pruned trial keeps no weights
                          f"pruned at evaluation {self.evals}: validation loss {value:.4f} is outside the best "
                          f"1/{self.eta} of {len(earlier)} earlier trials (cutoff {cutoff:.4f}{lead})",
                          {"rung": self.evals, "eval_loss": value, "cutoff": cutoff, "margin": self.margin})

    def state_dict(self) -> dict:
        return {"evals": self.evals, "pruned_at": self.pruned_at}
