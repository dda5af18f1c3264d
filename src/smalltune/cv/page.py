"""The cross-validation report: ``cv.md`` (terminals, pull requests) and ``cv.html`` (the report's look).

Rendered only from ``cv.json``. The page borrows the run report's stylesheet (read from its
template, as ``smalltune compare`` does), so every smalltune page looks alike; it has no scripts.
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from ..report.markdown import cell
from ..report.render import fmt
from ..rundir import atomic_write_text


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def interval(stat: dict | None, signed: bool = False) -> str:
    """'0.512 [0.43, 0.59]' from a t_interval dict; '—' when there is nothing."""
    if not stat or not _num(stat.get("mean")):
        return "—"
    f = (lambda v: f"{v:+.4g}") if signed else fmt
    ci = stat.get("ci") or [None, None]
    return f(stat["mean"]) + (f" [{f(ci[0])}, {f(ci[1])}]" if all(_num(c) for c in ci) else "")


def metric_rows(cv: dict) -> list[dict]:
    """One row per headline metric: fine-tuned mean [CI], change over base mean [CI], each fold's value."""
    rows = []
    for name, m in ((cv.get("aggregate") or {}).get("metrics") or {}).items():
        per_fold = [f["metrics"].get(name, {}).get("finetuned") for f in cv["per_fold"]]
        rows.append({"name": name, "label": m["label"], "finetuned": interval(m.get("finetuned")),
                     "corrected": fmt((m.get("finetuned") or {}).get("ci_corrected")),
                     "delta": interval(m.get("delta"), signed=True), "folds": [fmt(v) for v in per_fold]})
    return rows


def fold_rows(cv: dict) -> list[dict]:
    plan = {f["fold"]: f for f in cv["fold_plan"]}
    rows = []
    for f in cv["per_fold"]:
        t, p = f.get("training") or {}, plan.get(f["fold"], {})
        rows.append({"fold": f["fold"], "train": p.get("train"), "held_out": p.get("validation"),
                     "clusters": len(p.get("clusters") or []),
                     "categories": ", ".join(f"{k} {v}" for k, v in sorted((p.get("categories") or {}).items())),
                     "best_step": fmt(t.get("best_step")), "best_epoch": fmt(t.get("best_epoch")),
                     "steps": fmt(t.get("steps")), "stopped": t.get("stopped") or "—",
                     "eval_loss": fmt(t.get("best_eval_loss")), "note": f.get("note") or ""})
    return rows


def spread_text(s: dict | None) -> str:
    if not s or s.get("median") is None:
        return "—"
    return f"median {fmt(s['median'])} (min {fmt(s['min'])}, max {fmt(s['max'])})"


def summary_lines(cv: dict) -> list[str]:
    c = (cv.get("aggregate") or {}).get("checkpoints") or {}
    stopped = ", ".join(f"{k} {v}" for k, v in (c.get("stopped") or {}).items()) or "—"
    lines = [f"chosen checkpoint step: {spread_text(c.get('best_step'))}",
             f"chosen checkpoint epoch: {spread_text(c.get('best_epoch'))}",
             f"steps trained: {spread_text(c.get('steps'))}; ended by: {stopped}"]
    epoch = (c.get("best_epoch") or {}).get("median")
    if _num(epoch):
        lines.append(f"a final training on all the data would pick its checkpoint near epoch {fmt(epoch)} (the folds' median)")
    return lines


def render_markdown(cv: dict) -> str:
    k = cv["folds"]
    out = [f"# smalltune cv: {k} folds of {cv['train_file']}", "",
           f"Folds stratified by {cv['stratified_by']} and grouped by {cv['grouped_by']} (threshold "
           f"{cv['near_dup_threshold']}); seed {cv['seed']}{'; quick evaluation' if cv.get('quick') else ''}. "
           f"Each fold validates and is evaluated on its held-out examples. CI: {cv['ci']}.", ""]
    rows = metric_rows(cv)
    if rows:
        head = ["metric", "fine-tuned mean [95% CI]", "corrected CI", "change over base [95% CI]",
                *(f"fold {f['fold']}" for f in cv["per_fold"])]
        out += ["## Metrics", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        out += ["| " + " | ".join(cell(v) for v in (r["label"], r["finetuned"], r["corrected"], r["delta"], *r["folds"]))
                + " |" for r in rows]
        out.append("")
    head = ["fold", "train", "held out", "clusters held out", "categories held out", "best step", "best epoch",
            "steps", "ended by", "best validation loss", "note"]
    out += ["## Folds", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    out += ["| " + " | ".join(cell(str(v)) for v in r.values()) + " |" for r in fold_rows(cv)]
    out += ["", "## Chosen checkpoint across folds", ""] + [f"- {line}" for line in summary_lines(cv)]
    return "\n".join(out) + "\n"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>smalltune cv: {{ cv.folds }} folds</title><style>{{ css }} .wide { overflow-x: auto; }</style></head>
<body><main>
<header><h1>smalltune cv: {{ cv.folds }} folds of {{ cv.train_file }}</h1>
<div class="lead">Folds stratified by {{ cv.stratified_by }} and grouped by {{ cv.grouped_by }} (threshold
{{ cv.near_dup_threshold }}); seed {{ cv.seed }}{% if cv.quick %}; quick evaluation{% endif %}. Each fold validates and
is evaluated on its held-out examples.</div>
<nav><a href="#metrics">metrics</a><a href="#folds">folds</a><a href="#checkpoints">chosen checkpoint</a></nav></header>
<section id="metrics" data-section="metrics"><h2>Metrics across folds</h2>
{% if metrics %}<p class="muted">{{ cv.ci }}.</p><div class="wide"><table>
<thead><tr><th>metric</th><th class="num">fine-tuned mean [95% CI]</th><th class="num">corrected CI</th>
<th class="num">change over base [95% CI]</th>{% for f in cv.per_fold %}<th class="num">fold {{ f.fold }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in metrics %}<tr><td title="{{ r.name }}">{{ r.label }}</td><td class="num"><strong>{{ r.finetuned }}</strong></td>
<td class="num">{{ r.corrected }}</td><td class="num">{{ r.delta }}</td>{% for v in r.folds %}<td class="num">{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>
{% else %}<p class="not-run"><strong>not evaluated</strong>: no fold has an eval.json yet.</p>{% endif %}</section>
<section id="folds" data-section="folds"><h2>Folds</h2><div class="wide"><table>
<thead><tr><th class="num">fold</th><th class="num">train</th><th class="num">held out</th><th class="num">clusters held out</th>
<th>categories held out</th><th class="num">best step</th><th class="num">best epoch</th><th class="num">steps</th>
<th>ended by</th><th class="num">best validation loss</th><th>note</th></tr></thead>
<tbody>{% for r in folds %}<tr><td class="num">{{ r.fold }}</td><td class="num">{{ r.train }}</td><td class="num">{{ r.held_out }}</td>
<td class="num">{{ r.clusters }}</td><td>{{ r.categories }}</td><td class="num">{{ r.best_step }}</td><td class="num">{{ r.best_epoch }}</td>
<td class="num">{{ r.steps }}</td><td>{{ r.stopped }}</td><td class="num">{{ r.eval_loss }}</td><td>{{ r.note }}</td></tr>
{% endfor %}</tbody></table></div></section>
<section id="checkpoints" data-section="checkpoints"><h2>Chosen checkpoint across folds</h2>
<ul>{% for line in spread %}<li>{{ line }}</li>{% endfor %}</ul></section>
</main></body></html>
"""


def render_html(cv: dict) -> str:
    import jinja2

    from ..use.compare_page import report_css

    env = jinja2.Environment(autoescape=True)
    return env.from_string(PAGE).render(cv=cv, css=Markup(report_css()), metrics=metric_rows(cv), folds=fold_rows(cv),
                                        spread=summary_lines(cv))


def write_pages(out: Path, cv: dict) -> tuple[Path, Path]:
    """``cv.md`` and ``cv.html`` next to ``cv.json``."""
    md, html = Path(out) / "cv.md", Path(out) / "cv.html"
    atomic_write_text(md, render_markdown(cv))
    atomic_write_text(html, render_html(cv))
    return md, html
