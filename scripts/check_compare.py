#!/usr/bin/env python3
"""Check a `smalltune compare` page as a person would see it: render it in headless Chromium.

    python scripts/check_compare.py compare.html --screenshot docs/compare.png

The same checks as scripts/check_report.py (whose Chromium helpers it uses), for the comparison
page's sections: fails (exit 1) on any console message, a missing section, a plane section that
has points but no plot, a plot without drawing, or a reference outside the page. Saves a
screenshot 1280 px wide (--height sets how much of the page it shows).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_report import chromium, console_errors, ensure_chromium  # noqa: E402

SECTIONS = ["plane", "runs", "settings"]
PLOT = "learning-vs-forgetting"


def check_dom(dom: str) -> list[str]:
    problems = []
    found = dict(re.findall(r'<section id="([a-z]+)" data-section="\1">(.*?)</section>', dom, flags=re.S))
    problems += [f"section #{name} missing from the rendered page" for name in SECTIONS if name not in found]
    plane = found.get("plane", "")
    if "nothing to plot" not in plane and f'data-plot="{PLOT}"' not in plane:
        problems.append(f"section #plane has runs to plot but its plot ({PLOT}) is missing")
    for svg in re.findall(r"<svg\b[^>]*class=\"plot\"[^>]*>(.*?)</svg>", dom, flags=re.S):
        if "<path" not in svg:
            problems.append("an inline plot has no drawing in it")
    problems += [f"external reference: {u}" for u in re.findall(r'(?:src|href)\s*=\s*"((?:https?:)?//[^"]+)"', dom, flags=re.I)]
    if re.search(r"<link\b[^>]*stylesheet", dom, flags=re.I):
        problems.append("page links an external stylesheet")
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
    binary = ensure_chromium()
    url = path.resolve().as_uri()
    dump = chromium(binary, url, "--dump-dom")
    problems = [f"console: {line}" for line in console_errors(dump.stderr)]
    if dump.returncode != 0 or "<html" not in dump.stdout:
        problems.append(f"chromium could not render the page (exit {dump.returncode}): {dump.stderr.strip()[-300:]}")
    else:
        problems += check_dom(dump.stdout)
        print(f"rendered {path}: {len(re.findall(r'<svg[^>]*class=.plot.', dump.stdout))} inline plots", file=sys.stderr)
    shot = Path(args.screenshot) if args.screenshot else path.with_suffix(".png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    snap = chromium(binary, url, f"--screenshot={shot.resolve()}", f"--window-size=1280,{args.height}")
    if snap.returncode != 0 or not shot.exists() or shot.stat().st_size == 0:
        problems.append(f"screenshot failed (exit {snap.returncode})")
    else:
        print(f"screenshot: {shot}", file=sys.stderr)
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    print("ok" if not problems else f"{len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
