"""The report: one self-contained HTML page (plus a short Markdown summary) built from a run's files.

Import-light on purpose: matplotlib and jinja2 load only when a report is written.

>>> from smalltune import report
>>> report("runs/dental-demo")
PosixPath('runs/dental-demo/report.html')
"""

from __future__ import annotations

from pathlib import Path


def report(run_dir: str | Path) -> Path:
    """Write ``report.html`` and ``report.md`` into ``run_dir`` from its result files; return the HTML path.

    Sections whose result file is missing say "not run"; a directory with no result files at all is
    a :class:`~smalltune.errors.SmalltuneError` (exit code 2).
    """
    from .render import write_report

    return write_report(run_dir)


__all__ = ["report"]
