"""The comparison as a page and as a Markdown table: the learning-vs-forgetting plane and the runs table.

The page reuses the report's look: the stylesheet is read from the report template itself (one
source for both pages) and the plot is drawn with the report's matplotlib style and inline-SVG
helper, so the page stays self-contained (no scripts, no network).
"""

from __future__ import annotations

import re

from markupsafe import Markup

from ..report.markdown import cell
from ..report.render import fmt
from .compare import Comparison, RunRow, _num

FRONT_MARK = "★"


def pct(x, signed: bool = True) -> str:
    return "—" if not _num(x) else f"{x:+.1%}" if signed else f"{x:.0%}"


def ci_text(ci, percent: bool = False) -> str:
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(c) for c in ci)):
        return ""
    return f" [{pct(ci[0])}, {pct(ci[1])}]" if percent else f" [{ci[0]:+.3g}, {ci[1]:+.3g}]"


def metric_parts(m: dict | None, percent: bool = False) -> tuple[str, str]:
    """(fine-tuned value, "change [CI]") of a base-vs-fine-tuned metric; rates as percentages."""
    if not m or not _num(m.get("finetuned")):
        return "—", ""
    value = pct(m["finetuned"], signed=False) if percent else fmt(m["finetuned"])
    if not _num(m.get("delta")):
        return value, ""
    change = pct(m["delta"]) if percent else f"{m['delta']:+.3g}"
    return value, f"{change}{ci_text(m.get('ci'), percent)}"


def forgetting_parts(f: dict | None) -> tuple[str, str]:
    return ("—", "") if not f else (pct(f["value"]), ci_text(f.get("ci"), True).strip())


def row_cells(r: RunRow) -> dict[str, tuple[str, str]]:
    """Per result column: (the number, its change and CI) for the page; the table joins them on one line."""
    return {"task": metric_parts(r.task), "forgetting": forgetting_parts(r.forgetting),
            "general": metric_parts(r.general, percent=True), "memorization": metric_parts(r.memorization, percent=True)}


def plane(c: Comparison) -> str | None:
    """Held-out task score against forgetting, one point per evaluated run; marker area grows with the
    memorized share of training answers; the Pareto front joined by a dashed line."""
    from ..report.plots import BASE, BEST, STYLE, TUNED, _svg, plt

    points = [r for r in c.rows if r.plotted]
    if not points:
        return None
    size = lambda m: 40 + 560 * m if _num(m) else 40  # noqa: E731  (memorized share 0..1 -> marker area)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.6))
        for r in points:
            x, y = 100 * r.forgetting["value"], r.task["finetuned"]
            lo, hi = r.forgetting.get("ci") or [None, None]
            xerr = [[x - 100 * lo], [100 * hi - x]] if _num(lo) and _num(hi) else None
            t_lo, t_hi = r.task.get("ci") or [None, None]
            base = r.task.get("base")  # the CI is of the change; placed on the fine-tuned score via the base
            yerr = [[y - (base + t_lo)], [base + t_hi - y]] if all(_num(v) for v in (t_lo, t_hi, base)) else None
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="none", ecolor="#c0c6cf", lw=1, zorder=1)
            ax.scatter([x], [y], s=size((r.memorization or {}).get("finetuned")), color=TUNED if r.on_front else BASE,
                       alpha=0.85, edgecolors="white", linewidths=0.8, zorder=3)
            ax.annotate(r.label, (x, y), xytext=(7, 5), textcoords="offset points", fontsize=8)
        front = sorted((100 * r.forgetting["value"], r.task["finetuned"]) for r in points if r.on_front)
        ax.plot([p[0] for p in front], [p[1] for p in front], ls="--", lw=1.2, color=TUNED, zorder=2, label="Pareto front")
        bases = {round(r.task["base"], 9) for r in points if _num(r.task.get("base"))}
        if len(bases) == 1:  # one base model on one test set: mark where every run started
            ax.scatter([0], [bases.pop()], marker="*", s=160, color=BEST, zorder=3, label="base model")
        ax.axvline(0, color="black", lw=0.6, alpha=0.4)
        for m in (0.0, 0.5, 1.0):
            ax.scatter([], [], s=size(m), color=BASE, alpha=0.5, label=f"memorized {m:.0%}")
        ax.set_xlabel("forgetting: general-text perplexity change (%)")
        ax.set_ylabel(f"held-out {c.metric} (fine-tuned)" + ("" if c.higher_is_better else ", lower is better"))
        if not c.higher_is_better:
            ax.invert_yaxis()  # better is always up
        ax.margins(0.15)
        ax.text(0.01, 0.99, "better: up and to the left", transform=ax.transAxes, va="top", fontsize=8, color=BASE)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, labelspacing=1.3)
        fig.tight_layout()
        return _svg(fig, "learning-vs-forgetting")


def report_css() -> str:
    """The report page's stylesheet, read from its template (so both pages always look alike)."""
    from ..report.render import _environment

    env = _environment()
    source = env.loader.get_source(env, "report.html.j2")[0]
    found = re.search(r"<style>(.*?)</style>", source, flags=re.S)
    return found.group(1) if found else ""


def context(c: Comparison) -> dict:
    rows = [{"label": r.label, "path": str(r.run.path), "status": r.status, "front": r.on_front,
             "training": r.training, "differences": [(k, fmt(r.differences.get(k))) for k in c.keys],
             "problems": r.run.problems, **row_cells(r)} for r in c.rows]
    return {
        "title": f"{len(c.rows)} run{'s' if len(c.rows) != 1 else ''}", "css": Markup(report_css()),
        "metric": c.metric, "higher_is_better": c.higher_is_better, "keys": c.keys, "rows": rows,
        "svg": Markup(plane(c) or ""),
        "unplotted": [r.label for r in c.rows if not r.plotted],
        "common": [{"name": k, "value": fmt(v)} for k, v in c.common.items() if v not in (None, "", [], {})],
    }


def render_html(c: Comparison) -> str:
    from ..report.render import _environment

    return _environment().get_template("compare.html.j2").render(**context(c))


def render_markdown(c: Comparison) -> str:
    head = ["run", *c.keys, "status", f"{c.metric} (change [95% CI])", "forgetting [95% CI]",
            "general questions", "memorized", "Pareto front"]
    lines = [f"# smalltune compare: {len(c.rows)} runs", "",
             f"Learning: held-out `{c.metric}` of the fine-tuned model ({'higher' if c.higher_is_better else 'lower'} is "
             "better), its change over the base model and the 95% paired bootstrap CI of the change. Forgetting: "
             f"general-text perplexity change. {FRONT_MARK} = on the Pareto front: no other run learned more and "
             "forgot less.", "",
             "| " + " | ".join(cell(h) for h in head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in c.rows:
        cells = {k: f"{v} ({c})" if c else v for k, (v, c) in row_cells(r).items()}
        cells["forgetting"] = " ".join(p for p in row_cells(r)["forgetting"] if p)
        status = r.status if r.evaluated else f"{r.status}: {r.training}"
        values = [r.label, *(fmt(r.differences.get(k)) for k in c.keys), status, cells["task"], cells["forgetting"],
                  cells["general"], cells["memorization"], FRONT_MARK if r.on_front else ""]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"
