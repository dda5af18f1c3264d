"""smalltune compare RUN_DIR... [--output page.html] [--md]"""

NAME = "compare"
HELP = ("put several runs side by side on one page: learning vs forgetting, recipe differences, metrics with CIs, "
        "the Pareto front; a directory with trials/*/ (a tuning study) stands for its trials")


def configure(p):
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, or folders holding trials/*/ run directories")
    p.add_argument("--output", metavar="HTML", help="where to write the page (default: compare.html in the current folder)")
    p.add_argument("--md", action="store_true", help="print a Markdown table instead of writing the page")
    p.add_argument("--metric", help="task metric for the learning axis (default: key_fact_recall when every run has it, "
                                    "else rouge_l, else token_accuracy)")


def run(args) -> int:
    from ..use.compare import compare, compare_markdown

    if args.md:
        print(compare_markdown(args.run_dirs, metric=args.metric), end="")
        return 0
    print(compare(args.run_dirs, output=args.output, metric=args.metric))
    return 0
