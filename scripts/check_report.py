#!/usr/bin/env python3
"""Check a smalltune report as a person would see it: render it in headless Chromium.

    python scripts/check_report.py runs/dental-demo/report.html --screenshot docs/report.png

Fails (exit 1) when the browser logs a console message (the page has no scripts, so any console
output is an error: a blocked resource, a parse failure), when the rendered page lacks one of the
report's sections, when a section that ran lacks its plot, or when the page refers to anything
outside itself. Saves a screenshot (1280 px wide). The Chromium part (and its installation when
/usr/bin/chromium is missing) is scripts/_chromium.py, shared with scripts/check_compare.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _chromium import PLOT, check_page, sections  # noqa: E402

SECTIONS = ["overview", "verdicts", "audit", "training", "checkpoints", "task", "forgetting", "memorization",
            "robustness", "samples", "provenance"]
# The plot each section draws when it ran (sections without a plot are not listed).
PLOTS = {"training": "training-curves", "checkpoints": "checkpoint-metrics", "task": "task",
         "forgetting": "forgetting", "robustness": "robustness"}


def check_dom(dom: str) -> list[str]:
    """Problems in the rendered report's sections: a missing section, a section that ran without its plot."""
    problems = []
    found = sections(dom)
    for name in SECTIONS:
        if name not in found:
            problems.append(f"section #{name} missing from the rendered page")
            continue
        ran = "not run" not in found[name]
        plot = PLOTS.get(name)
        if ran and plot and f'data-plot="{plot}"' not in found[name]:
            problems.append(f"section #{name} ran but its plot ({plot}) is missing")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="report.html, or the run directory holding it")
    ap.add_argument("--screenshot", metavar="PNG", help="where to save the screenshot (default: beside the report)")
    ap.add_argument("--min-plots", type=int, default=1, help="fail when fewer inline plots render (default 1)")
    args = ap.parse_args(argv)
    path = Path(args.report)
    path = path / "report.html" if path.is_dir() else path
    if not path.is_file():
        print(f"error: {path}: no such report (write one with `smalltune report RUN_DIR`)", file=sys.stderr)
        return 2

    def check(dom: str) -> list[str]:
        n_plots = len(PLOT.findall(dom))
        few = [f"{n_plots} inline plots rendered, expected at least {args.min_plots}"] if n_plots < args.min_plots else []
        return check_dom(dom) + few

    shot = Path(args.screenshot) if args.screenshot else path.with_suffix(".png")
    return check_page(path, check, shot, height=4000)


if __name__ == "__main__":
    sys.exit(main())
