"""smalltune demo [--quick]"""

NAME = "demo"
HELP = "run the whole pipeline on the built-in dental-clinic demo: audit, train, evaluate, report"


def configure(p):
    p.add_argument("--quick", action="store_true", help="a capped run (24 training steps, about 3.5 minutes on a 2-core CPU); the demo always evaluates with the quick caps")
    p.add_argument("--output", metavar="DIR", help="run directory (default runs/demo-<time>)")
    p.add_argument("--questions", type=int, default=6, help="held-out questions to compare (default 6)")
    p.add_argument("--no-vanilla", action="store_true", help="skip the vanilla arm (smalltune's recipe only)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, as for `train`")


def run(args) -> int:
    from ..demo import run_demo

    report_path, _ = run_demo(args.quick, args.output, args.questions, args.overrides, vanilla=not args.no_vanilla)
    print(report_path)
    return 0
