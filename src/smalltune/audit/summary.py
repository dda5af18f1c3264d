"""The terminal summary of an audit: findings worst first, then the key statistics (rich tables)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
SHOWN = 3  # example pointers shown per finding (the JSON has more)


def _pointer(e: dict) -> str:
    name = Path(e["file"]).name if e.get("file") else ""
    where = f"{name}:{e['line']}" if name and e.get("line") else name
    extra = {k: v for k, v in e.items() if k not in ("file", "line", "id", "worst_tokens")}
    detail = ", ".join(f"{k} {v}" for k, v in extra.items())
    return " ".join(x for x in (where, detail) if x)


def audit_summary(report, console: Console | None = None) -> None:
    """Print ``report`` as tables: one row per finding (worst first), then per-split statistics.

    >>> audit_summary(smalltune.audit("train.jsonl"))
    """
    con = console or Console(highlight=False)
    s = report.stats
    counts = ", ".join(f"{v['examples']} {k}" + (f" (+{v['invalid']} invalid)" if v["invalid"] else "")
                       for k, v in s.get("splits", {}).items())
    con.print(f"[bold]smalltune audit[/bold]: {counts} examples")
    table = Table(show_lines=True, expand=True, title_justify="left")
    table.add_column("severity", no_wrap=True)
    table.add_column("finding", ratio=3)
    table.add_column("count", justify="right")
    # fold, never ellipsis: a long file name must not hide the line number at the end of "file:line"
    table.add_column("where (first few)", ratio=2, min_width=16, overflow="fold")
    for f in report.findings:
        where = "\n".join(_pointer(e) for e in f.examples[:SHOWN])
        if len(f.examples) > SHOWN:
            where += f"\n[dim]... {len(f.examples) - SHOWN} more listed in --json[/dim]"
        table.add_row(f"[{STYLE[f.severity]}]{f.severity}[/]\n[dim]{f.check}[/dim]",
                      f"[bold]{f.title}[/bold]\n[dim]{f.message}[/dim]", f"{f.count:,}", where)
    if report.findings:
        con.print(table)
    lengths = s.get("length", {})
    for name in s.get("splits", {}):
        d = lengths.get(name, {})
        if d.get("n"):
            con.print(f"  tokens {name:10} p50 {d['p50']}, p90 {d['p90']}, max {d['max']} "
                      f"[dim]({lengths['method']}; max_length {lengths['max_length']})[/dim]")
    if "perplexity" in s:
        p = s["perplexity"]
        d = p["example_ppl"]
        con.print(f"  perplexity p50 {d.get('p50', 0):.2f}, p90 {d.get('p90', 0):.2f}, max {d.get('max', 0):.2f}; "
                  f"{p['share_above_threshold']:.1%} of {p['response_tokens']:,} response tokens above "
                  f"{p['token_threshold']:g}")
    n = {sev: len(report.by_severity(sev)) for sev in STYLE}
    con.print(f"[bold]{n['error']} errors, {n['warning']} warnings, {n['info']} notes[/bold]")
