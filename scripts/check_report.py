#!/usr/bin/env python3
"""Check a smalltune report as a person would see it: render it in headless Chromium.

    python scripts/check_report.py runs/dental-demo/report.html --screenshot docs/report.png

Fails (exit 1) when the browser logs a console message (the page has no scripts, so any console
output is an error: a blocked resource, a parse failure), when the rendered page lacks one of the
report's sections, when a section that ran lacks its plot, or when the page refers to anything
outside itself. Saves a screenshot (1280 px wide). Installs Debian's ``chromium`` package with
apt-get when /usr/bin/chromium is missing (needs root and a package mirror).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio"]
SECTIONS = ["overview", "verdicts", "audit", "training", "checkpoints", "task", "forgetting", "memorization",
            "robustness", "samples", "provenance"]
# The plot each section draws when it ran (sections without a plot are not listed).
PLOTS = {"training": "training-curves", "checkpoints": "checkpoint-metrics", "task": "task",
         "forgetting": "forgetting", "robustness": "robustness"}
# Chromium's own chatter on a machine without a display or D-Bus: not about the page.
NOISE = re.compile(r"dbus|bus\.cc|gpu|viz|fontconfig|sandbox|crashpad|GCM|ALSA|pulse|udev|ozone|vaapi|"
                   r"DevTools listening|Fontconfig|object_proxy|policy_logger|headless_shell|x11", re.I)


def ensure_chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() != 0:
        sys.exit(f"error: {CHROMIUM} is missing; install Debian's chromium package (apt-get install chromium) as root")
    print("installing chromium with apt-get ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            sys.exit(f"error: `{' '.join(cmd)}` failed; install chromium by hand")
    return CHROMIUM


def chromium(binary: str, url: str, *extra: str, timeout: int = 120) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="smalltune-chromium-")
    try:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                               *extra, url], capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(log: str) -> list[str]:
    """Lines where the page itself said something (console messages, failed loads, blocked requests)."""
    out = []
    for line in log.splitlines():
        if "CONSOLE" in line or "Failed to load" in line or "net::ERR" in line:
            out.append(line.strip())
        elif ":ERROR:" in line and not NOISE.search(line):
            out.append(line.strip())
    return out


def check_dom(dom: str) -> list[str]:
    """Problems in the rendered DOM: missing sections, missing plots, references outside the page."""
    problems = []
    found = dict(re.findall(r'<section id="([a-z]+)" data-section="\1">(.*?)</section>', dom, flags=re.S))
    for name in SECTIONS:
        if name not in found:
            problems.append(f"section #{name} missing from the rendered page")
            continue
        ran = "not run" not in found[name]
        plot = PLOTS.get(name)
        if ran and plot and f'data-plot="{plot}"' not in found[name]:
            problems.append(f"section #{name} ran but its plot ({plot}) is missing")
    for svg in re.findall(r"<svg\b[^>]*class=\"plot\"[^>]*>(.*?)</svg>", dom, flags=re.S):
        if "<path" not in svg:
            problems.append("an inline plot has no drawing in it")
    external = re.findall(r'(?:src|href)\s*=\s*"((?:https?:)?//[^"]+)"', dom, flags=re.I)
    problems += [f"external reference: {u}" for u in external]
    if re.search(r"<link\b[^>]*stylesheet", dom, flags=re.I):
        problems.append("page links an external stylesheet")
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
    binary = ensure_chromium()
    url = path.resolve().as_uri()

    dump = chromium(binary, url, "--dump-dom")
    problems = [f"console: {line}" for line in console_errors(dump.stderr)]
    if dump.returncode != 0 or "<html" not in dump.stdout:
        problems.append(f"chromium could not render the page (exit {dump.returncode}): {dump.stderr.strip()[-300:]}")
    else:
        problems += check_dom(dump.stdout)
        n_plots = len(re.findall(r'<svg\b[^>]*class="plot"', dump.stdout))
        if n_plots < args.min_plots:
            problems.append(f"{n_plots} inline plots rendered, expected at least {args.min_plots}")
        print(f"rendered {path}: {n_plots} inline plots", file=sys.stderr)

    shot = Path(args.screenshot) if args.screenshot else path.with_suffix(".png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    snap = chromium(binary, url, f"--screenshot={shot.resolve()}", "--window-size=1280,4000")
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
