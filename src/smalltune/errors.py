"""The one exception type users see.

Every error caused by user input (a bad file, a bad recipe value, a model that cannot be found)
is raised as :class:`SmalltuneError` with a one-line message that names the file and line or the
recipe key. The CLI prints the message and exits with ``exit_code``; it never shows a traceback
for these.
"""

from __future__ import annotations

# Exit codes shared by every verb (documented in the README).
EXIT_OK = 0
EXIT_FINDINGS = 1  # the command ran, and what it checked failed (audit errors, a guard, ...)
EXIT_USAGE = 2  # unusable input: missing file, malformed record, invalid recipe


class SmalltuneError(Exception):
    """A user-facing error: ``str(err)`` is a complete one-line explanation."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


class DataError(SmalltuneError):
    """A data file is missing, unreadable or malformed; the message names file and line."""

    def __init__(self, path, line: int | None, message: str):
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class RecipeError(SmalltuneError):
    """One or more recipe values are invalid; all problems are listed, one per line."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        head = f"invalid recipe{f' {source}' if source else ''}: "
        if len(problems) == 1:
            super().__init__(head + problems[0])
        else:
            super().__init__(head + f"{len(problems)} problems\n  " + "\n  ".join(problems))
