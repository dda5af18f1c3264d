"""smalltune run RECIPE [key=value ...] [--resume] [--quick] [--force]"""

NAME = "run"
HELP = "audit, train, evaluate and report in one go, into the recipe's run directory"


def configure(p):
    p.add_argument("recipe", help="recipe YAML file (write one with `smalltune plan`)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted recipe overrides, e.g. train.lr=1e-4 output_dir=runs/x")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in output_dir: finished stages are skipped, training resumes")
    p.add_argument("--quick", action="store_true", help="a capped evaluation (fewer questions, shorter answers)")
    p.add_argument("--force", action="store_true", help="train even when the data audit finds errors")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from .. import load_recipe
    from ..pipeline import run as run_pipeline

    recipe = load_recipe(args.recipe, args.overrides)
    print(run_pipeline(recipe, resume=args.resume, quick=args.quick, force=args.force, progress=not args.no_progress))
    return 0
