"""The regression gate: a new version against its parent, metric by metric, on the same items.

The evaluation's own probes run with the *parent* in the place of the base model (``task`` on the
lineage's earlier test set and on the new test data, ``forgetting`` on the measurement paragraphs
and general questions), so every number has the shape ``evaluate`` uses: parent and new values,
the change, and the 95% paired-bootstrap CI of the change (items resampled, both versions together).

A metric *regresses* when its change is worse than its threshold (``update.*`` in the recipe) and,
with ``update.significant_only`` (the default), its CI lies wholly on the worse side of zero: on
16-70 test questions a few points move by chance, and a gate that fires on chance is soon ignored.
The thresholds and why they are what they are: docs/update.md.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import SmalltuneError
from ..evaluate.context import Caps, EvalContext, model_bytes

# (section, metric, recipe key of the threshold, how the change is read)
CHECKS = (
    ("parent_test", "loss", "max_loss_rise", "relative"),
    ("parent_test", "token_accuracy", "max_accuracy_drop", "drop"),
    ("parent_test", "key_fact_recall", "max_recall_drop", "drop"),
    ("new_test", "loss", "max_loss_rise", "relative"),
    ("new_test", "token_accuracy", "max_accuracy_drop", "drop"),
    ("new_test", "key_fact_recall", "max_recall_drop", "drop"),
    ("forgetting", "reference_ppl", "max_reference_ppl_rise", "relative"),
    ("forgetting", "general_accuracy", "max_general_accuracy_drop", "drop"),
)
SECTION_NAMES = {"parent_test": "earlier test set", "new_test": "new test data", "forgetting": "forgetting suite"}


@dataclass
class VersusContext(EvalContext):
    """An evaluation context whose "base" is the parent version (``finetuned`` is the new version).

    The parent's outputs are its own: never the base model's answers shared between evaluations, nor kept as them."""

    parent: Any = None
    BASE_IS_BASE_MODEL: ClassVar[bool] = False

    @contextlib.contextmanager
    def use(self, which: str):
        yield self.model if which == "finetuned" else self.parent

    def weight_bytes(self) -> int:
        return model_bytes(self.model) + model_bytes(self.parent)  # two loaded versions, adapters or not


@dataclass
class GateResult:
    """``gate.json``: both versions measured, each check, the verdict."""

    parent: str
    version: str
    passed: bool
    checks: list[dict] = field(default_factory=list)
    sections: dict = field(default_factory=dict)  # section -> the probe's output (parent = base, new = finetuned)
    sources: dict = field(default_factory=dict)  # section -> where its items came from, and how many
    thresholds: dict = field(default_factory=dict)
    caps: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)  # section -> per-question answers of both versions
    wall_seconds: float = 0.0
    forced: bool = False
    schema_version: int = 1

    @property
    def regressions(self) -> list[dict]:
        return [c for c in self.checks if c["regressed"]]

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _read(section: dict, metric: str, how: str) -> dict | None:
    """(parent, new, worse, worse CI) of one metric, with positive ``worse`` meaning the new version is worse."""
    m = section.get(metric)
    if metric == "reference_ppl":
        est = section.get("reference_ppl_relative_change") or {}
        if not isinstance(m, dict) or est.get("value") is None:
            return None
        return {"parent": m.get("base"), "new": m.get("finetuned"), "worse": est["value"], "ci": est.get("ci"),
                "n": m.get("n")}
    if not isinstance(m, dict) or m.get("delta") is None or not m.get("n"):
        return None
    base, delta, ci = m["base"], m["delta"], m.get("ci") or [None, None]
    if how == "relative":
        scale = base if base else 1.0
        worse, ci = delta / scale, [None if x is None else x / scale for x in ci]
    else:
        worse, ci = -delta, [None if x is None else -x for x in reversed(ci)]
    return {"parent": base, "new": m["finetuned"], "worse": worse, "ci": ci, "n": m["n"]}


def judge(sections: dict, settings) -> list[dict]:
    """One row per check: the change read as 'worse by', its CI, the threshold, and whether it regressed."""
    rows = []
    for section, metric, key, how in CHECKS:
        got = _read(sections.get(section) or {}, metric, how)
        if got is None:
            continue
        threshold = getattr(settings, key)
        low = got["ci"][0] if got["ci"] and got["ci"][0] is not None else None
        sure = low is not None and low > 0 if settings.significant_only else True
        regressed = got["worse"] > threshold + 1e-12 and sure
        rows.append({"section": section, "metric": metric, **got, "threshold": threshold, "how": how,
                     "key": f"update.{key}", "regressed": regressed,
                     "message": describe(section, metric, how, got, threshold)})
    return rows


def describe(section: str, metric: str, how: str, got: dict, threshold: float) -> str:
    """``earlier test set loss rose 12.3% (0.845 -> 0.949; CI +5.1% to +19.0%; allowed 5%)``."""
    worse, ci = got["worse"], got["ci"] or [None, None]
    word = ("rose" if worse > 0 else "fell") if how == "relative" else ("dropped" if worse > 0 else "rose")
    amount = abs(worse)
    unit = "%" if how == "relative" else " points"
    scale = 100
    ci_text = "" if None in ci else f"; CI of the change {_signed(ci, how)}"
    return (f"{SECTION_NAMES.get(section, section)} {metric.replace('_', ' ')} {word} {amount * scale:.1f}{unit} "
            f"({_v(got['parent'])} -> {_v(got['new'])}{ci_text}; allowed {threshold * scale:g}{unit})")


def _v(x) -> str:
    return "—" if x is None else f"{x:.4g}"


def _signed(ci, how: str) -> str:
    # shown as the change of the metric itself (new - parent), in percent or points
    sign = 1 if how == "relative" else -1
    lo, hi = sorted(sign * x * 100 for x in ci)
    return f"{lo:+.1f} to {hi:+.1f}{'%' if how == 'relative' else ' points'}"


def run_gate(parent_dir, new_dir, parent_test: list, new_test: list, caps: Caps, settings,
             progress: bool = False, sources: dict | None = None) -> GateResult:
    """Measure the new version in ``new_dir`` against ``parent_dir`` and judge every check.

    >>> gate = run_gate("runs/v1", "runs/v1-v2", old_tests, new_tests, QUICK, recipe.update)
    >>> [c["message"] for c in gate.regressions]
    """
    from pathlib import Path

    from ..evaluate.probes import PROBES
    from ..train import load_trained
    from ..train.splits import measurement_paragraphs

    started = time.perf_counter()
    parent, _, _ = load_trained(parent_dir)
    model, tok, recipe = load_trained(new_dir)
    device = next(parent.parameters()).device
    model.to(device)
    try:
        texts = measurement_paragraphs(Path(new_dir), recipe, max(caps.reference_paragraphs, 1))
    except SmalltuneError:  # the reference packages are optional: the forgetting suite is then skipped
        texts = []
    ctx = VersusContext(model=model, tokenizer=tok, recipe=recipe, run_dir=Path(new_dir), caps=caps,
                        seed=recipe.train.seed, reference_texts=texts, progress=progress,
                        batch_size=recipe.eval.batch_size, parent=parent)
    sections, samples = {}, {}
    for name, items in (("parent_test", parent_test), ("new_test", new_test)):
        if items:
            ctx.test, ctx.test_source = items, name
            sections[name] = PROBES.get("task").run(ctx)
            samples[name] = ctx.samples
    if texts:
        sections["forgetting"] = PROBES.get("forgetting").run(ctx)
    checks = judge(sections, settings)
    thresholds = {f"update.{key}": getattr(settings, key) for _, _, key, _ in CHECKS}
    thresholds["update.significant_only"] = settings.significant_only
    return GateResult(parent=str(parent_dir), version=str(new_dir), passed=not any(c["regressed"] for c in checks),
                      checks=checks, sections=sections, sources=sources or {}, thresholds=thresholds,
                      caps=dict(caps.__dict__), samples=samples, wall_seconds=round(time.perf_counter() - started, 1))
