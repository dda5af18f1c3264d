"""The ``smalltune`` command: one module per verb, each a thin adapter over the Python API.

A verb module defines ``NAME``, ``HELP``, ``configure(parser)`` and ``run(args) -> int``; the
list below is the one place verbs are registered. User errors (:class:`SmalltuneError`) print one
line and exit with their code; ``--debug`` shows tracebacks for anything unexpected.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .. import __version__, memory
from ..errors import SmalltuneError
from . import audit, augment, chat, compare, cv, demo, evaluate, export, models, plan, recipe, report, run, synth, train, tune
from . import update, versions

# In the order of the flow, then the helpers.
VERBS = [augment, synth, audit, plan, tune, train, cv, evaluate, report, run, chat, export, compare,
         update, versions, versions.promote, versions.rollback, demo, recipe, models]

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smalltune",
        description="Fine-tune language models on small datasets: audit -> plan -> train -> evaluate -> report.",
    )
    parser.add_argument("--version", action="version", version=f"smalltune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on unexpected errors")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        p = sub.add_parser(verb.NAME, help=verb.HELP, description=verb.HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        verb.configure(p)
        p.set_defaults(_run=verb.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse takes positionals in one run: key=value after an option (`train R --resume k=v`) is left over
        if not hasattr(args, "overrides") or any("=" not in x or x.startswith("-") for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*(args.overrides or []), *extra]
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    # Quiet the libraries' own chatter; our progress bars and summaries say what happens.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' per-load bars; ours say what runs
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft calling a deprecated alias
    memory.keep_freed_memory()  # large tensors reuse pages this process has mapped already (smalltune/memory.py)
    try:
        code = int(args._run(args) or 0)
        _leave_process_group()
        return code
    except SmalltuneError as e:
        _report(f"error: {e}", shared=getattr(e, "reported_by_main", False) or not _process_group_started())
        return e.exit_code
    except KeyboardInterrupt:
        _report("interrupted; a training run continues with `smalltune train RECIPE --resume`", shared=True)
        return 130
    except Exception as e:  # a bug, not a user error: one line by default, the trace with --debug
        if args.debug:
            raise
        if _lost_peer(e):  # not this process's failure: say so, instead of the backend's connection message
            _report("error: stopped because another process of this run failed or was killed (its own line, if it "
                    "printed one, and the launcher's report say which)", shared=False)
        else:
            _report(f"error: unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", shared=False)
        return 3


def _report(line: str, shared: bool) -> None:
    """Print a failure line once for a multi-process run (``accelerate launch``, ``torchrun``).

    ``shared``: every rank failed the same way (an error before the processes joined one group comes
    from input they all read; training gathers the others' errors to the main process), so the main
    process's line speaks for all. Otherwise a rank's own failure gets its own line, naming the rank.
    """
    from ..console import process_rank

    rank = process_rank()
    if rank == 0:
        print(line, file=sys.stderr)
    elif not shared:
        print(f"error: rank {rank}: {line.removeprefix('error: ')}", file=sys.stderr)


def _process_group_started() -> bool:
    dist = sys.modules.get("torch.distributed")  # never import torch just to answer this
    return bool(dist and dist.is_available() and dist.is_initialized())


def _leave_process_group() -> None:
    """Destroy the process group of a multi-process run that finished on every rank (torch asks for it at exit:
    otherwise gloo's worker threads can outlive the interpreter and abort the process, rc -6, after a good run).
    Only on success: after a failure the other ranks may still be inside a collective, and waiting on them hangs."""
    if _process_group_started():
        sys.modules["torch.distributed"].destroy_process_group()


def _lost_peer(e: Exception) -> bool:
    """A collective failed because another rank of the run exited (gloo raises a plain RuntimeError)."""
    if not _process_group_started():
        return False
    dist = sys.modules["torch.distributed"]
    text = str(e)
    return isinstance(e, getattr(dist, "DistError", ())) or any(
        s in text for s in ("closed by peer", "reset by peer", "remote worker"))


if __name__ == "__main__":
    sys.exit(main())
