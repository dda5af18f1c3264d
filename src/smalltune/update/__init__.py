"""Continuous learning: new versions of a trained run, a regression gate, and the served-version pointer.

``update`` trains a new version from a run's weights on new data (corrections included) with a
replayed share of the lineage's earlier data, audits the new data against the old, and gates the
new version against its parent; ``promote`` / ``rollback`` move ``<project>/current``; ``list_versions``
is the lineage table. Kept import-light (no torch): each function imports its module on first call.
Docs: docs/update.md.
"""


def update(run_dir, new_data, test=None, force: bool = False, **kwargs):
    """A new version of ``run_dir`` trained on ``new_data``; see :func:`smalltune.update.runner.update`.

    >>> result = smalltune.update("runs/clinic", "week-12.jsonl", test="week-12-test.jsonl")
    >>> result.promoted
    """
    from .runner import update as _update

    return _update(run_dir, new_data, test=test, force=force, **kwargs)


def promote(version_dir, force: bool = False):
    """Serve ``version_dir`` (move its project's ``current`` pointer); see :func:`smalltune.update.pointer.promote`."""
    from .pointer import promote as _promote

    return _promote(version_dir, force=force)


def rollback(project, to=None):
    """Serve the previously served version again; see :func:`smalltune.update.pointer.rollback`."""
    from .pointer import rollback as _rollback

    return _rollback(project, to=to)


def list_versions(project):
    """The lineage table of a project folder; see :func:`smalltune.update.lineage.list_versions`."""
    from .lineage import list_versions as _list

    return _list(project)


__all__ = ["update", "promote", "rollback", "list_versions"]
