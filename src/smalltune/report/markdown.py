"""The short Markdown summary (``report.md``): the verdicts and key numbers, for terminals and pull requests.

It reads the same :class:`RunResults` as the HTML page and links to it for the plots and examples.
"""

from __future__ import annotations

from ..schema import EvalRecord
from .load import RunResults
from .render import SEVERITY_ORDER, STATUS_ORDER, compare_rows, fmt, robustness_rows

ICON = {"ok": "ok", "warn": "WARN", "problem": "PROBLEM"}


def cell(value) -> str:
    """A value safe inside a Markdown table cell: one line, pipes escaped."""
    text = value if isinstance(value, str) else fmt(value)
    return " ".join(text.split()).replace("|", "\\|")


def render_markdown(res: RunResults) -> str:
    """The summary text.

    >>> print(render_markdown(load_results("runs/dental-demo")))
    """
    r = res.recipe or {}
    title = r.get("name") or res.run_dir.name
    lines = [f"# smalltune report: {cell(title)}", ""]
    model, method = (r.get("model") or {}).get("name"), (r.get("method") or {}).get("name")
    if model:
        lines += [f"Model `{model}`, method `{method}`; run directory `{res.run_dir}`.", ""]
    lines += ["## Stages", "", "| stage | result |", "| --- | --- |"]
    lines.append(f"| audit | {_audit_line(res)} |")
    lines.append(f"| training | {_train_line(res)} |")
    lines.append(f"| evaluation | {_eval_line(res)} |")
    lines.append("")
    if res.verdicts:
        lines += ["## Verdicts", "", "| status | check | value | fix to try |", "| --- | --- | --- | --- |"]
        for v in sorted(res.verdicts, key=lambda v: STATUS_ORDER.get(v.status, 3)):
            fix = v.fix if v.status != "ok" else ""
            lines.append(f"| {ICON.get(v.status, cell(v.status))} | {cell(v.name)}: {cell(v.message)} | {cell(v.value)} | {cell(fix)} |")
        lines.append("")
    rows = []
    for name in ("task", "forgetting", "memorization"):
        probe = res.probes.get(name)
        if isinstance(probe, dict):
            # Top-level metrics only: breakdowns (by_category.x, ...) stay on the page, the summary stays short.
            rows += [(f"{name}: {row['name']}", row) for row in compare_rows({k: v for k, v in probe.items() if k != "worst"})[0]
                     if "." not in row["name"]]
    if rows:
        lines += ["## Base model vs fine-tuned", "", "| metric | base | fine-tuned | change |", "| --- | --- | --- | --- |"]
        for label, row in rows:
            delta = f"{row['delta']:+.4g}" if isinstance(row["delta"], (int, float)) else fmt(row["delta"])
            lines.append(f"| {cell(label)} | {cell(row['base'])} | {cell(row['finetuned'])} | {delta} |")
        lines.append("")
    rob = robustness_rows(res.probes.get("robustness") if isinstance(res.probes.get("robustness"), dict) else {})[0]
    if rob:
        lines += ["## Robustness", "", "| perturbation | clean | perturbed | drop |", "| --- | --- | --- | --- |"]
        lines += [f"| {cell(x['name'])} | {cell(x['clean'])} | {cell(x['perturbed'])} | {cell(x['drop'])} |" for x in rob]
        lines.append("")
    if res.problems:
        lines += ["## Unreadable files", ""] + [f"- {cell(p)}" for p in res.problems] + [""]
    from ..update.report import update_markdown  # an update run: the version against its parent

    lines += update_markdown(res.run_dir)
    lines += ["Plots, audit findings and sample answers: `report.html` in the run directory.", ""]
    return "\n".join(lines)


def _audit_line(res: RunResults) -> str:
    if res.findings is None:
        return "not run"
    counts: dict[str, int] = {}
    for f in res.findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    if not counts:
        return "no findings"
    return ", ".join(f"{n} {sev}{'s' if n != 1 else ''}" for sev, n in sorted(counts.items(), key=lambda kv: SEVERITY_ORDER.get(kv[0], 3)))


def _train_line(res: RunResults) -> str:
    s = res.summary
    if s is None:
        return "not run" if res.curves is None else "started, not finished (no train_summary.json)"
    m = s.best or EvalRecord()
    text = f"{fmt(s.steps)} steps, stopped: {cell(s.stopped or '')}"
    if s.best_step is not None:
        text += (f"; chosen step {s.best_step}: validation loss {fmt(m.eval_loss)}, "
                 f"perplexity {fmt(m.eval_ppl)}, token accuracy {fmt(m.eval_token_acc)}")
    return text


def _eval_line(res: RunResults) -> str:
    if res.eval is None:
        return "not run"
    counts = {k: sum(v.status == k for v in res.verdicts or []) for k in ("problem", "warn", "ok")}
    probes = ", ".join(res.probes) or "no probes"
    return f"{probes}; verdicts: {counts['problem']} problem, {counts['warn']} warn, {counts['ok']} ok"
