"""smalltune report RUN_DIR"""

NAME = "report"
HELP = "write report.html (one self-contained page) and report.md into a run directory from its result files"


def configure(p):
    p.add_argument("run_dir", help="run directory (written by `smalltune run` or `smalltune train`)")


def run(args) -> int:
    from ..report import report

    print(report(args.run_dir))
    return 0
