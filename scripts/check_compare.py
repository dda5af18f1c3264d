#!/usr/bin/env python3
"""Check a `smalltune compare` page as a person would see it: render it in headless Chromium.

    python scripts/check_compare.py compare.html --screenshot docs/compare.png

The same checks as scripts/check_report.py (the Chromium part of both is scripts/_chromium.py),
for the comparison page's sections: fails (exit 1) on any console message, a missing section, a
plane section that has points but no plot, a plot without drawing, or a reference outside the
page. Saves a screenshot 1280 px wide (--height sets how much of the page it shows).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _chromium import check_page, sections  # noqa: E402

SECTIONS = ["plane", "runs", "settings"]
PLOT = "learning-vs-forgetting"


def check_dom(dom: str) -> list[str]:
    """Problems in the rendered page's sections: a missing section, runs to plot without the plot."""
    found = sections(dom)
    problems = [f"section #{name} missing from the rendered page" for name in SECTIONS if name not in found]
    plane = found.get("plane", "")
    if "nothing to plot" not in plane and f'data-plot="{PLOT}"' not in plane:
        problems.append(f"section #plane has runs to plot but its plot ({PLOT}) is missing")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", help="the HTML page written by `smalltune compare`")
    ap.add_argument("--screenshot", metavar="PNG", help="where to save the screenshot (default: beside the page)")
    ap.add_argument("--height", type=int, default=1400, help="screenshot height in pixels (default 1400)")
    args = ap.parse_args(argv)
    path = Path(args.page)
    if not path.is_file():
        print(f"error: {path}: no such page (write one with `smalltune compare RUN_DIR...`)", file=sys.stderr)
        return 2
    shot = Path(args.screenshot) if args.screenshot else path.with_suffix(".png")
    return check_page(path, check_dom, shot, height=args.height)


if __name__ == "__main__":
    sys.exit(main())
