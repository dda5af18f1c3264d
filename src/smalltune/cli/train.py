"""smalltune train RECIPE [key=value ...] [--resume]"""

import sys

from ..console import is_main_process
from ..errors import EXIT_FINDINGS

NAME = "train"
HELP = "fine-tune a model as a recipe describes; writes a run directory"


def add_recipe_arguments(p, resume_help: str) -> None:
    """RECIPE, key=value overrides, --resume and --no-progress: shared by `train` and `run`."""
    p.add_argument("recipe", help="recipe YAML file (write one with `smalltune plan`)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted recipe overrides, e.g. train.lr=1e-4 output_dir=runs/x")
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def configure(p):
    add_recipe_arguments(p, "continue the run in output_dir from its latest checkpoint")


def run(args) -> int:
    from .. import load_recipe, train

    recipe = load_recipe(args.recipe, args.overrides)
    result = train(recipe, resume=args.resume, progress=not args.no_progress)
    if is_main_process():  # every rank returns the same result; one prints it
        print(result.run_dir)
    return report_unsafe_stop(result.to_dict())


def report_unsafe_stop(summary: dict) -> int:
    """A run a guard stopped for safety is a finding, not a success (its best checkpoint is kept)."""
    from ..train.guards import unsafe_stop_message

    message = unsafe_stop_message(summary)
    if message:
        if is_main_process():  # the stop was agreed by every rank: one line says it
            print(f"error: {message}", file=sys.stderr)
        return EXIT_FINDINGS
    return 0
