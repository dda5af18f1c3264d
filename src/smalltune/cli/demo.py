"""smalltune demo [--quick]"""

NAME = "demo"
HELP = "fine-tune the built-in model on the dental-clinic demo and compare answers before/after"


def configure(p):
    p.add_argument("--quick", action="store_true", help="a capped run (about 3 minutes on a 2-core CPU)")
    p.add_argument("--output", metavar="DIR", help="run directory (default runs/demo-<time>)")
    p.add_argument("--questions", type=int, default=6, help="held-out questions to compare (default 6)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, as for `train`")


def run(args) -> int:
    from ..demo import run_demo

    result, _ = run_demo(args.quick, args.output, args.questions, args.overrides)
    print(result.run_dir)
    return 0
