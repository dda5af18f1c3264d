"""smalltune cv RECIPE [key=value ...] --folds K [--seed S] [--output DIR] [--quick] [--resume]"""

NAME = "cv"
HELP = ("k-fold cross-validation on the training data: folds stratified by category and grouped by near-duplicate "
        "clusters, each trained and evaluated on its held-out fold; mean and confidence interval of every headline metric")


def configure(p):
    p.add_argument("recipe", help="recipe YAML file (its data.train is split into folds)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted recipe overrides, e.g. train.epochs=2")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="number of folds (default 5)")
    p.add_argument("--seed", type=int, help="seed of the fold assignment (default: the recipe's train.seed)")
    p.add_argument("--output", metavar="DIR", help="folder for cv.json, the pages and folds/fold-K/ "
                                                   "(default: the recipe's output_dir, else runs/<name>-cv-<time>)")
    p.add_argument("--threshold", type=float, default=0.8,
                   help="near-duplicate Jaccard threshold for grouping (the audit's default 0.8)")
    p.add_argument("--quick", action="store_true", help="a capped evaluation of each fold")
    p.add_argument("--probes", help="comma-separated evaluation probes per fold (default: all that apply): "
                                    "task, memorization, forgetting, robustness, diversity")
    p.add_argument("--resume", action="store_true", help="continue: finished folds are kept, a stopped one resumes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from .. import load_recipe
    from ..cv import cross_validate
    from ..cv.page import render_markdown
    from ..errors import SmalltuneError

    if not 0 < args.threshold <= 1:
        raise SmalltuneError(f"--threshold must be in (0, 1], got {args.threshold}")
    recipe = load_recipe(args.recipe, args.overrides)
    probes = [p.strip() for p in args.probes.split(",") if p.strip()] if args.probes else None
    cv = cross_validate(recipe, folds=args.folds, seed=args.seed, output=args.output, quick=args.quick,
                        resume=args.resume, threshold=args.threshold, probes=probes, progress=not args.no_progress)
    print(render_markdown(cv), end="")
    return 0
