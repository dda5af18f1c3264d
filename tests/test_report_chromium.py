"""scripts/check_report.py in headless Chromium: passes a good page, fails a broken one (skipped without Chromium)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smalltune.report import report
from test_report import write_run

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_report.py"
pytestmark = pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium package")


def check(path: Path, shot: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(path), "--screenshot", str(shot)],
                          capture_output=True, text=True, timeout=300)


def test_good_page_passes_and_screenshot_is_saved(tmp_path):
    run = write_run(tmp_path / "run")
    report(run)
    result = check(run, tmp_path / "shot.png")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "5 inline plots" in result.stderr
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_error_and_missing_plot_fail(tmp_path):
    run = write_run(tmp_path / "run")
    html = report(run).read_text()
    # Drop the training plot and add a script that logs an error: both must be caught.
    start = html.index('<svg class="plot" data-plot="training-curves"')
    html = html[:start] + html[html.index("</svg>", start) + len("</svg>"):]
    html = html.replace("</main>", '<script>console.error("boom")</script></main>')
    bad = tmp_path / "bad" / "report.html"
    bad.parent.mkdir()
    bad.write_text(html)
    result = check(bad, tmp_path / "bad.png")
    assert result.returncode == 1
    assert "boom" in result.stderr
    assert "section #training ran but its plot (training-curves) is missing" in result.stderr
