"""smalltune run RECIPE [key=value ...] [--resume] [--quick] [--force]"""

NAME = "run"
HELP = "audit, train, evaluate and report in one go, into the recipe's run directory"


def configure(p):
    from .train import add_recipe_arguments

    add_recipe_arguments(p, "continue the run in output_dir: finished stages are skipped, training resumes")
    p.add_argument("--quick", action="store_true", help="a capped evaluation (fewer questions, shorter answers)")
    p.add_argument("--force", action="store_true", help="train even when the data audit finds errors")


def run(args) -> int:
    from .. import load_recipe
    from ..pipeline import run as run_pipeline

    from ..rundir import RunDir
    from ..schema import read_train_summary
    from .train import report_unsafe_stop

    recipe = load_recipe(args.recipe, args.overrides)
    report_path = run_pipeline(recipe, resume=args.resume, quick=args.quick, force=args.force,
                               progress=not args.no_progress)
    print(report_path)
    return report_unsafe_stop(read_train_summary(RunDir(report_path.parent).train_summary).to_dict())
