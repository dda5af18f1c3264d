"""The terminal summary of an evaluation: headline deltas with CIs, then verdicts with fixes."""

from __future__ import annotations

from rich.table import Table

from .. import console
from ..schema.evaluation import EvalResult, Metric, probe_value

# (probe, metric, label, format) rows of the headline table, in reading order.
HEADLINES = [
    ("task", "key_fact_recall", "key-fact recall (held-out)", "{:.1%}"),
    ("task", "rouge_l", "ROUGE-L (held-out)", "{:.3f}"),
    ("task", "exact_match", "exact match (held-out)", "{:.1%}"),
    ("task", "perplexity", "answer perplexity (held-out)", "{:.2f}"),
    ("memorization", "verbatim_rate_long", "verbatim on long train answers", "{:.1%}"),
    ("memorization", "prefix_verbatim_rate", "completes train answer from prefix", "{:.1%}"),
    ("memorization", "loss_gap", "held-out minus train loss", "{:.3f}"),
    ("forgetting", "reference_ppl", "general-text perplexity", "{:.2f}"),
    ("forgetting", "general_accuracy", "general-question accuracy", "{:.1%}"),
    ("diversity", "distinct_2", "distinct-2 of answers", "{:.3f}"),
    ("diversity", "repetition_rate", "repeated trigrams", "{:.1%}"),
]
STYLE = {"ok": "green", "warn": "yellow", "problem": "red"}


def _fmt(fmt: str, v) -> str:
    return "–" if v is None else fmt.format(v)


def _delta(fmt: str, m: Metric) -> str:
    if m.delta is None:
        return "–"
    d = fmt.replace("{:", "{:+").format(m.delta)
    lo, hi = m.ci_low, m.ci_high
    return d if lo is None else f"{d} [{_fmt(fmt, lo)}, {_fmt(fmt, hi)}]"


def print_summary(result: EvalResult) -> None:
    precision = (result.settings.generation or {}).get("precision", "fp32")  # compare evaluations of one precision
    table = Table(title=f"evaluation in {precision}: base vs fine-tuned (95% CI of the change)", title_justify="left")
    for col in ("metric", "base", "fine-tuned", "change [CI]", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for probe, key, label, fmt in HEADLINES:
        m = result.metric(probe, key)
        if m and m.n:
            table.add_row(label, _fmt(fmt, m.base), _fmt(fmt, m.finetuned), _delta(fmt, m), str(m.n))
    perturbations = probe_value(result.probes, "robustness", "perturbations") or {}
    for name in perturbations:
        if (d := result.metric("robustness", "perturbations", name, "drop")) is not None:
            table.add_row(f"quality drop: {name}", _fmt("{:.2f}", d.base), _fmt("{:.2f}", d.finetuned),
                          _delta("{:.2f}", d), str(d.n))
    console.out.print(table)
    for v in result.verdicts:
        style = STYLE[v.status]
        line = f"[{style}]{v.status:>7}[/{style}]  {v.name}: {v.message}"
        if v.fix:
            line += f"\n          [dim]fix:[/dim] {v.fix}"
        console.out.print(line)
    for name, reason in (result.settings.skipped or {}).items():
        console.warn(f"probe {name} skipped: {reason}")
    if line := cost_line(result.settings):
        console.out.print(f"[dim]{line}[/dim]")


def cost_line(settings) -> str:
    """Where an evaluation's time went, as far as a user can act on it: a first evaluation on a base model also
    generates the base's answers (about half its time on the demo, benchmarks/README.md "Cold and warm
    evaluations"), which later evaluations on the same base and data read from disk."""
    if settings.wall_seconds is None:
        return ""
    gen = settings.generation or {}
    made, reused = gen.get("base_answers_generated") or 0, gen.get("base_answers_reused") or 0
    line = f"evaluated in {settings.wall_seconds:.0f} s"
    if made:
        spent = (settings.phase_seconds or {}).get("answers (base)")
        line += f"; the base model's {made} answers generated" + (f" in {spent:.0f} s" if spent is not None else "")
        if gen.get("base_answers_kept"):
            line += " and kept on disk: later evaluations on this base model read them (eval.cache_base_answers)"
    if reused:
        line += f"; {reused} base answers read from an earlier evaluation"
    return line
