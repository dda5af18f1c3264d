"""``audit()``: load the splits, run every registered check, return (and optionally save) the report."""

from __future__ import annotations

from pathlib import Path

from ..errors import SmalltuneError
from .report import AuditReport

DEFAULT_MAX_LENGTH = 512  # the recipe's data.max_length default


def audit(train, validation=None, test=None, model=None, recipe=None, max_length=None,
          near_dup_threshold=0.8, run_dir=None, progress=True) -> AuditReport:
    """Check data files before spending compute on them; every problem, worst first.

    ``model`` (a name or folder) makes token lengths exact and adds the perplexity check;
    ``recipe`` fills whatever is left as None (data files, model, max_length, system prompt).
    With ``run_dir``, the report is also written to ``<run_dir>/audit.json``.

    >>> report = audit("train.jsonl", validation="val.jsonl")
    >>> report.exit_code(), [f.title for f in report.findings]
    """
    from ..provenance import provenance
    from ..rundir import RunDir, atomic_write_json
    from .checks import CHECKS
    from .context import AuditContext
    from .loading import read_split

    system_prompt = None
    if recipe is not None:
        train = train or recipe.data.train
        validation = validation or recipe.data.validation
        test = test or recipe.data.test
        model = model or recipe.model.name
        max_length = max_length or recipe.data.max_length
        system_prompt = recipe.data.system_prompt
    if not train:
        raise SmalltuneError("audit: no training file given (pass DATA or a recipe with data.train)")
    if not 0 < near_dup_threshold <= 1:
        raise SmalltuneError(f"--threshold must be in (0, 1], got {near_dup_threshold}")
    if max_length is not None and max_length <= 0:
        raise SmalltuneError(f"--max-length must be > 0, got {max_length}")
    max_length = max_length or DEFAULT_MAX_LENGTH
    files = {k: str(v) for k, v in (("train", train), ("validation", validation), ("test", test)) if v}
    splits = {name: read_split(name, Path(path)) for name, path in files.items()}
    ctx = AuditContext(splits, model=model, max_length=max_length, threshold=near_dup_threshold,
                       system_prompt=system_prompt, progress=progress)
    findings = []
    for _name, check in CHECKS.items():
        findings += check(ctx)
    counts = {name: len(s.examples) for name, s in splits.items()}
    report = AuditReport(
        findings=findings, stats=ctx.stats, files=files,
        settings={"model": model, "max_length": max_length, "near_dup_threshold": near_dup_threshold,
                  "system_prompt": system_prompt, "checks": CHECKS.names()},
        provenance=provenance(recipe, **counts),
    )
    if run_dir is not None:
        atomic_write_json(RunDir(run_dir).audit, report.to_dict())
    return report
