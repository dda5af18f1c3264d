"""Headless Chromium for the page checks (scripts/check_report.py, scripts/check_compare.py).

Both checks render a self-contained HTML page twice (once to dump the DOM, once for a screenshot)
and fail on the same things whatever the page: a console message, a plot without drawing, a
reference outside the page. This module holds that part; each script adds only its own sections.
Installs Debian's ``chromium`` package with apt-get when /usr/bin/chromium is missing (needs root
and a package mirror).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio"]
# Chromium's own chatter on a machine without a display or D-Bus: not about the page.
NOISE = re.compile(r"dbus|bus\.cc|gpu|viz|fontconfig|sandbox|crashpad|GCM|ALSA|pulse|udev|ozone|vaapi|"
                   r"DevTools listening|Fontconfig|object_proxy|policy_logger|headless_shell|x11", re.I)
PLOT = re.compile(r'<svg\b[^>]*class="plot"')


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
    profile = tempfile.mkdtemp(prefix="smalltune-chromium-")  # a fresh profile: no state between runs
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


def sections(dom: str) -> dict[str, str]:
    """The page's ``<section id=X data-section=X>`` bodies by name."""
    return dict(re.findall(r'<section id="([a-z]+)" data-section="\1">(.*?)</section>', dom, flags=re.S))


def self_contained_problems(dom: str) -> list[str]:
    """Plots without drawing and anything the page would fetch from elsewhere."""
    problems = []
    for svg in re.findall(r"<svg\b[^>]*class=\"plot\"[^>]*>(.*?)</svg>", dom, flags=re.S):
        if "<path" not in svg:
            problems.append("an inline plot has no drawing in it")
    external = re.findall(r'(?:src|href)\s*=\s*"((?:https?:)?//[^"]+)"', dom, flags=re.I)
    problems += [f"external reference: {u}" for u in external]
    if re.search(r"<link\b[^>]*stylesheet", dom, flags=re.I):
        problems.append("page links an external stylesheet")
    return problems


def check_page(path: Path, check_dom: Callable[[str], list[str]], screenshot: Path, height: int) -> int:
    """Render ``path``, apply ``check_dom`` to the DOM, save a 1280 x ``height`` screenshot; exit code 0 or 1."""
    binary = ensure_chromium()
    url = path.resolve().as_uri()
    dump = chromium(binary, url, "--dump-dom")
    problems = [f"console: {line}" for line in console_errors(dump.stderr)]
    if dump.returncode != 0 or "<html" not in dump.stdout:
        problems.append(f"chromium could not render the page (exit {dump.returncode}): {dump.stderr.strip()[-300:]}")
    else:
        problems += check_dom(dump.stdout) + self_contained_problems(dump.stdout)
        print(f"rendered {path}: {len(PLOT.findall(dump.stdout))} inline plots", file=sys.stderr)

    screenshot.parent.mkdir(parents=True, exist_ok=True)
    snap = chromium(binary, url, f"--screenshot={screenshot.resolve()}", f"--window-size=1280,{height}")
    if snap.returncode != 0 or not screenshot.exists() or screenshot.stat().st_size == 0:
        problems.append(f"screenshot failed (exit {snap.returncode})")
    else:
        print(f"screenshot: {screenshot}", file=sys.stderr)

    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    print("ok" if not problems else f"{len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0
