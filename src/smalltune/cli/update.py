"""smalltune update RUN_DIR NEW_DATA [--test NEW_TEST] [--force] [--output DIR] [--quick] [--resume] [key=value ...]"""

import sys

NAME = "update"
HELP = ("train a new version of RUN_DIR on NEW_DATA (corrections welcome) from its weights, audit new against old, "
        "and promote it only if it does not regress against RUN_DIR (docs/update.md)")


def configure(p):
    p.add_argument("run_dir", help="the version to update (a run directory of `smalltune train` or `update`)")
    p.add_argument("new_data", help="new examples and/or corrections (.jsonl, .json or .csv)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides of the parent's recipe, e.g. update.replay_share=0.5 train.epochs=2")
    p.add_argument("--test", help="new test questions (any data format, corrections too) for the gate")
    p.add_argument("--force", action="store_true", help="promote the new version even if the gate finds a regression "
                                                        "(recorded in version.json and the pointer)")
    p.add_argument("--output", help="the new version's folder (default: next to RUN_DIR, named <first>-v<N>)")
    p.add_argument("--quick", action="store_true", help="the gate evaluates with `evaluate --quick`'s small caps")
    p.add_argument("--resume", action="store_true", help="continue an interrupted update in --output")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from ..update import update
    from .versions import print_checks

    result = update(args.run_dir, args.new_data, test=args.test, force=args.force, output_dir=args.output,
                    overrides=args.overrides, quick=args.quick, resume=args.resume, progress=not args.no_progress)
    if result.gate is not None:
        print_checks(result.gate.checks)
    print(("" if result.promoted else "error: ") + result.message, file=sys.stderr)
    print(result.run_dir)
    return result.exit_code
