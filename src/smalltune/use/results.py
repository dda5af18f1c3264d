"""A run's result files as the after-training commands read them: one place, on top of the report's loader.

``train_summary.json`` and ``eval.json`` are read by :func:`smalltune.report.load.load_results`
(which is moving to the typed records of :mod:`smalltune.schema`); here they become plain mappings
either way (``to_dict()`` of a typed record is exactly the file), so export and compare never care
which form the loader hands out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def plain(value) -> dict | None:
    """A result file's content as a mapping: a typed record's ``to_dict()``, or the dict itself."""
    if value is None:
        return None
    out = value.to_dict() if hasattr(value, "to_dict") else value
    return out if isinstance(out, dict) else None


@dataclass
class RunView:
    path: Path
    recipe: dict = field(default_factory=dict)  # {} when recipe.yaml is missing
    provenance: dict = field(default_factory=dict)
    summary: dict | None = None  # train_summary.json; None: training did not finish
    eval: dict | None = None  # eval.json; None: not evaluated
    problems: list[str] = field(default_factory=list)  # files that exist but could not be read

    @property
    def name(self) -> str:
        return str(self.recipe.get("name") or self.path.name)

    @property
    def probes(self) -> dict:
        probes = (self.eval or {}).get("probes")
        return probes if isinstance(probes, dict) else {}

    @property
    def verdicts(self) -> list[dict]:
        return [v for v in (self.eval or {}).get("verdicts") or [] if isinstance(v, dict)]


def read_run(run_dir: str | Path) -> RunView:
    """Read ``run_dir``'s result files; missing files stay empty; raises SmalltuneError if it holds none."""
    from ..report.load import load_results

    res = load_results(run_dir)
    return RunView(path=Path(res.run_dir), recipe=res.recipe or {}, provenance=res.provenance or {},
                   summary=plain(res.summary), eval=plain(res.eval), problems=list(res.problems))
