"""smalltune versions DIR [--current] · smalltune promote VERSION_DIR [--force] · smalltune rollback DIR [--to V]

Three verbs in one module (they share the pointer file): ``versions`` is this module, ``promote`` and
``rollback`` are the namespaces below, each registered in ``cli/__init__.py`` like any verb module.
"""

from types import SimpleNamespace

NAME = "versions"
HELP = "list the versions in a project folder: lineage, data added, key metrics, gate, the served one"


def configure(p):
    p.add_argument("dir", help="project folder holding the versions (the folder of the first run)")
    p.add_argument("--current", action="store_true", help="print only the served version's path (for scripts)")


def run(args) -> int:
    from pathlib import Path

    from ..errors import SmalltuneError
    from ..update import list_versions
    from ..update.pointer import read_pointer

    project = Path(args.dir)
    if not project.is_dir():
        raise SmalltuneError(f"{project}: not a folder")
    if args.current:
        pointer = read_pointer(project)
        if pointer is None:
            raise SmalltuneError(f"{project}: no version is served yet (no current pointer)", 1)
        print((project / pointer["version"]).resolve())
        return 0
    rows = list_versions(project)
    if not rows:
        raise SmalltuneError(f"{project}: no versions here (a version is a run that `smalltune update` wrote, "
                             f"or its parent)", 1)
    from rich.table import Table

    from ..console import out

    table = Table(title=f"versions in {project}", title_justify="left")
    for col in ("", "version", "name", "parent", "created", "data added", "key metrics", "gate"):
        table.add_column(col)
    for r in rows:
        table.add_row("▶" if r.current else "", str(r.version), r.name, r.parent or "—", r.created, r.added,
                      r.metrics, r.gate)
    out.print(table)
    return 0


def print_checks(checks: list) -> None:
    """The gate's checks, one line each (regressions marked)."""
    from ..console import out

    for c in checks:
        mark = "[red]regressed[/red]" if c["regressed"] else "[green]ok[/green]       "
        out.print(f"  {mark} {c['message']}", markup=True, highlight=False)


def _configure_promote(p):
    p.add_argument("version_dir", help="the version to serve (a run directory in its project folder)")
    p.add_argument("--force", action="store_true", help="serve it even though its regression gate failed (recorded)")


def _run_promote(args) -> int:
    from ..update import promote as _promote

    pointer = _promote(args.version_dir, force=args.force)
    print(f"serving {pointer['version']}" + (" (forced past a failed gate)" if pointer["forced"] else "")
          + (f"; was {pointer['previous']}" if pointer.get("previous") else ""))
    return 0


def _configure_rollback(p):
    p.add_argument("dir", help="project folder holding the versions")
    p.add_argument("--to", help="the version folder to serve (default: the one served before the current one)")


def _run_rollback(args) -> int:
    from ..update import rollback as _rollback

    pointer = _rollback(args.dir, to=args.to)
    print(f"serving {pointer['version']}; was {pointer['previous']}")
    return 0


promote = SimpleNamespace(NAME="promote", HELP="serve a version: move its project's current pointer to it, atomically",
                          configure=_configure_promote, run=_run_promote)
rollback = SimpleNamespace(NAME="rollback", HELP="serve the previously served version again (or --to a named one)",
                           configure=_configure_rollback, run=_run_rollback)
