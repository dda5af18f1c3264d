"""The tuning section: every trial in a table, the learning-vs-forgetting plane with the Pareto front,
and why the chosen trial was chosen. Rendered only from ``tune.json`` into ``tune.md`` and
``tune.html`` (self-contained, the report's look); ``smalltune report`` of the chosen run links it.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from ..rundir import atomic_write_text


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:+.1%}" if pct else f"{v:.3g}"
    return str(v)


def rows(result) -> list[list[str]]:
    out = []
    for r in result.trials:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(r.params.items()))
        marks = ["the recipe's own settings"] if r.from_recipe else []
        marks += ["chosen"] if r.number == result.chosen else (["Pareto"] if r.pareto else [])
        mark = ", ".join(marks)
        out.append([str(r.number), r.state, params, _fmt(r.quality), _fmt(r.forgetting, pct=True),
                    "yes" if r.feasible else "no", _fmt(r.epochs), _fmt(r.seconds), mark])
    return out


HEADER = ["trial", "state", "parameters", "task quality", "forgetting", "within budget", "epochs", "seconds", ""]


def markdown(result) -> str:
    lines = [f"# Tuning: {result.study}", "", f"Chosen: {result.why}", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows(result)]
    return "\n".join(lines) + "\n"


def plane_png(result) -> str:
    """Task quality vs forgetting of finished trials; the Pareto front joined, the chosen one ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in result.trials if r.quality is not None and r.forgetting is not None]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.scatter([r.forgetting * 100 for r in done], [r.quality for r in done], c="#8aa", label="trial")
    front = sorted((r for r in done if r.pareto), key=lambda r: r.forgetting)
    ax.plot([r.forgetting * 100 for r in front], [r.quality for r in front], "-o", c="#245", label="Pareto front")
    for r in done:
        ax.annotate(str(r.number), (r.forgetting * 100, r.quality), fontsize=7, xytext=(3, 3), textcoords="offset points")
    chosen = [r for r in done if r.number == result.chosen]
    if chosen:
        ax.scatter([chosen[0].forgetting * 100], [chosen[0].quality], s=180, facecolors="none", edgecolors="#c33",
                   label="chosen")
    ax.axvline(result.budget * 100, ls="--", c="#c33", lw=0.8, label="forgetting budget")
    ax.set_xlabel("general-text perplexity change (%)")
    ax.set_ylabel("task quality on validation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def page(result) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows(result))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>smalltune tuning</title><style>"
            "body{font:14px system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
            "table{border-collapse:collapse;font-size:12px}td,th{border-bottom:1px solid #ddd;padding:3px 6px;"
            "text-align:left}</style></head><body>"
            f"<h1>Tuning: {html.escape(result.study)}</h1><p><b>Chosen:</b> {html.escape(result.why)}</p>"
            f"<p>{len(result.trials)} trials, {result.wall_seconds:.0f} s, storage {html.escape(result.storage)}</p>"
            f"<img alt='learning vs forgetting' src='data:image/png;base64,{plane_png(result)}'>"
            f"<table><tr>{head}</tr>{body}</table></body></html>")


def write_report(folder: Path, result) -> None:
    atomic_write_text(Path(folder) / "tune.md", markdown(result))
    atomic_write_text(Path(folder) / "tune.html", page(result))
