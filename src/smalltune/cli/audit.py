"""smalltune audit DATA [--validation FILE] [--test FILE] [--model M] [--recipe R] [--json PATH] ..."""

NAME = "audit"
HELP = "check data files for format, length, duplicate, leakage, balance, consistency and perplexity problems"


def configure(p):
    p.add_argument("data", nargs="?", help="training data file (.jsonl, .json, .csv); optional with --recipe")
    p.add_argument("--validation", metavar="FILE", help="validation file (checked for leakage from train)")
    p.add_argument("--test", metavar="FILE", help="test file (checked for leakage from train and validation)")
    p.add_argument("--model", metavar="M", help="model name or folder: exact token lengths and the perplexity check")
    p.add_argument("--recipe", metavar="R", help="recipe YAML: supplies files, model, max_length, system prompt")
    p.add_argument("--max-length", type=int, metavar="N", help="token limit per example (default: recipe or 512)")
    p.add_argument("--threshold", type=float, default=0.8, metavar="X",
                   help="near-duplicate prompt similarity (Jaccard of word shingles, default 0.8)")
    p.add_argument("--json", metavar="PATH", help="also write the full report as JSON")
    p.add_argument("--fail-on", choices=("error", "warning"), default="error",
                   help="exit 1 on findings at or above this severity (default error)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from .. import audit
    from ..audit.summary import audit_summary
    from ..recipe import load_recipe
    from ..rundir import atomic_write_json

    recipe = load_recipe(args.recipe) if args.recipe else None
    report = audit(args.data, args.validation, args.test, model=args.model, recipe=recipe,
                   max_length=args.max_length, near_dup_threshold=args.threshold, progress=not args.no_progress)
    audit_summary(report)
    if args.json:
        atomic_write_json(args.json, report.to_dict())
    return report.exit_code(args.fail_on)
