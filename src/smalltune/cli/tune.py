"""smalltune tune RECIPE [key=value ...] [--trials N] [--resume]"""

NAME = "tune"
HELP = "search learning rate, method, LoRA rank and replay share on your data: learn most, forget least"


def configure(p):
    from .train import add_recipe_arguments

    add_recipe_arguments(p, "continue an interrupted search (or join a shared study)")
    p.add_argument("--trials", type=int, metavar="N", help="trials in the search (default: tune.trials)")


def run(args) -> int:
    from .. import load_recipe
    from ..errors import EXIT_FINDINGS
    from ..tune import tune

    recipe = load_recipe(args.recipe, args.overrides)
    result = tune(recipe, resume=args.resume, progress=not args.no_progress, trials=args.trials)
    print(result.why)
    if result.chosen is None:
        return 0 if result.running else EXIT_FINDINGS  # other workers still training: this one did its share
    print(f"chosen recipe: {result.recipe}\ntrained run:   {result.run_dir}\ntrials:        {result.folder}/tune.html")
    return 0
