"""Several runs side by side: which learned most and forgot least?

Each run becomes one row: its recipe settings that differ from the other runs', the held-out task
score (fine-tuned, and its change over the base model with the 95% paired bootstrap CI), forgetting
(the relative change of general-text perplexity, with its CI), general-question accuracy and
verbatim memorization. A run is on the **Pareto front** when no other run has both a higher task
score and less forgetting (memorization is shown as the marker size, not ranked). Runs without
``eval.json`` are listed with what training recorded and "not evaluated"; they are never plotted.

Inputs are run directories; a directory that is not a run but holds ``trials/*/`` run directories
(a tuning study) stands for its trials, in trial order.

>>> compare(["runs/lr-1e-4", "runs/lr-1e-3", "studies/lr"], output="compare.html")
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SmalltuneError
from .results import RunView, read_run

# Held-out task metrics in order of preference (key facts say most about a small domain; ROUGE-L
# needs only references; token accuracy is always there). The same order robustness uses.
TASK_METRICS = ("key_fact_recall", "rouge_l", "token_accuracy")
LOWER_IS_BETTER = {"loss", "perplexity"}
IGNORED_KEYS = {"name", "output_dir"}  # differ between any two runs by construction


@dataclass
class RunRow:
    run: RunView
    label: str = ""
    task: dict | None = None  # the chosen task metric: {"base", "finetuned", "delta", "ci", "n"}
    forgetting: dict | None = None  # {"value": relative perplexity change, "ci": [lo, hi], "n"}
    general: dict | None = None  # forgetting.general_accuracy metric
    memorization: dict | None = None  # memorization.memorized_rate metric
    differences: dict[str, Any] = field(default_factory=dict)
    on_front: bool = False

    @property
    def evaluated(self) -> bool:
        return self.run.eval is not None

    @property
    def status(self) -> str:
        if self.evaluated:
            return "evaluated"
        return "not evaluated" if self.run.summary is not None else "not evaluated, training not finished"

    @property
    def plotted(self) -> bool:
        return _num((self.task or {}).get("finetuned")) and _num((self.forgetting or {}).get("value"))

    @property
    def training(self) -> str:
        s = self.run.summary
        if s is None:
            return "no train_summary.json"
        best = (s.get("best_metrics") or {}).get("eval_loss")
        text = f"{s.get('steps', '?')} steps, stopped by {s.get('stopped', '?')}"
        return text + (f"; best validation loss {best:.4g}" if _num(best) else "")


@dataclass
class Comparison:
    rows: list[RunRow]
    metric: str  # the task metric on the learning axis
    keys: list[str]  # recipe keys that differ between runs
    common: dict[str, Any]  # recipe keys shared by every run (dotted) -> value

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER


def expand(paths: list[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: each a run, or a study folder whose ``trials/*/`` are runs."""
    from ..report.load import RESULT_FILES

    def is_run(p: Path) -> bool:
        return p.is_dir() and any((p / name).exists() for name in RESULT_FILES)

    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if is_run(p):
            out.append(p)
            continue
        trials = sorted((d for d in (p / "trials").glob("*") if is_run(d)), key=_natural) if p.is_dir() else []
        if not trials:
            what = "does not exist" if not p.exists() else "is not a run directory (no recipe.yaml, eval.json, ...) " \
                                                           "and holds no trials/*/ run directories"
            raise SmalltuneError(f"{p}: {what}")
        out += trials
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _natural(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def build(paths: list[str | Path], metric: str | None = None) -> Comparison:
    """Read every run and work out the rows, the differing recipe keys and the Pareto front."""
    rows = [RunRow(run=read_run(p)) for p in expand(paths)]
    _label(rows)
    metric = pick_metric([r.run for r in rows], metric)
    for r in rows:
        probes = r.run.probes
        r.task = _metric(probes, "task", metric)
        r.forgetting = _forgetting(probes)
        r.general = _metric(probes, "forgetting", "general_accuracy")
        r.memorization = _metric(probes, "memorization", "memorized_rate") or _metric(probes, "memorization", "verbatim_rate")
    flat = [_flatten(r.run.recipe) | _evaluated_in(r.run) for r in rows]
    keys = sorted({k for f in flat for k in f} - IGNORED_KEYS)
    differing = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    for r, f in zip(rows, flat):
        r.differences = {k: f.get(k) for k in differing}
    common = {k: flat[0].get(k) for k in keys if k not in differing} if flat else {}
    comparison = Comparison(rows=rows, metric=metric, keys=differing, common=common)
    mark_front(comparison)
    return comparison


def pick_metric(runs: list[RunView], requested: str | None) -> str:
    evaluated = [r for r in runs if r.eval is not None]
    have = lambda name, r: _num((_metric(r.probes, "task", name) or {}).get("finetuned"))  # noqa: E731
    if requested:
        available = sorted({k for r in evaluated for k, v in (r.probes.get("task") or {}).items() if isinstance(v, dict)})
        if evaluated and not any(have(requested, r) for r in evaluated):
            raise SmalltuneError(f"--metric {requested}: no run's eval.json has task.{requested}; "
                                 f"available: {', '.join(available) or 'none'}")
        return requested
    for name in TASK_METRICS:
        if evaluated and all(have(name, r) for r in evaluated):
            return name
    return TASK_METRICS[-1]


def mark_front(c: Comparison) -> None:
    """Flag the runs no other run beats on both axes (higher task score and lower forgetting)."""
    sign = 1 if c.higher_is_better else -1
    points = [(r, sign * r.task["finetuned"], r.forgetting["value"]) for r in c.rows if r.plotted]
    for r, score, forget in points:
        r.on_front = not any(s >= score and f <= forget and (s > score or f < forget) for _, s, f in points)


def _label(rows: list[RunRow]) -> None:
    names = [r.run.name for r in rows]
    for r in rows:
        r.label = r.run.name
        if names.count(r.label) > 1:  # same name twice (e.g. copies of one recipe): the path tells them apart
            r.label = f"{r.run.path.parent.name}/{r.run.path.name}"


def _metric(probes: dict, probe: str, name: str) -> dict | None:
    value = (probes.get(probe) or {}).get(name) if isinstance(probes.get(probe), dict) else None
    return value if isinstance(value, dict) and ("finetuned" in value or "base" in value) else None


def _forgetting(probes: dict) -> dict | None:
    f = probes.get("forgetting") if isinstance(probes.get("forgetting"), dict) else {}
    rel = f.get("reference_ppl_relative_change")
    if isinstance(rel, dict) and _num(rel.get("value")):
        return {"value": rel["value"], "ci": rel.get("ci") or [None, None], "n": rel.get("n")}
    ppl = _metric(probes, "forgetting", "reference_ppl")
    if ppl and _num(ppl.get("base")) and _num(ppl.get("finetuned")) and ppl["base"] > 0:  # older eval.json: no CI
        return {"value": ppl["finetuned"] / ppl["base"] - 1, "ci": [None, None], "n": ppl.get("n")}
    return None


def _evaluated_in(run: RunView) -> dict[str, Any]:
    """``eval.precision`` as the evaluation resolved it (``auto`` follows each run's training), so runs evaluated in
    different arithmetic show it among their differences."""
    precision = (((run.eval or {}).get("settings") or {}).get("generation") or {}).get("precision")
    return {"eval.precision": precision} if precision else {}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


def compare(paths: list[str | Path], output: str | Path | None = None, metric: str | None = None) -> Path:
    """Write the comparison page (default ``compare.html`` in the current folder) and return its path."""
    from ..rundir import atomic_write_text
    from .compare_page import render_html

    page = Path(output or "compare.html")
    atomic_write_text(page, render_html(build(paths, metric)))
    return page


def compare_markdown(paths: list[str | Path], metric: str | None = None) -> str:
    """The comparison as a Markdown table (for terminals and pull requests)."""
    from .compare_page import render_markdown

    return render_markdown(build(paths, metric))
