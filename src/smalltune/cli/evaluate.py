"""smalltune evaluate RUN_DIR [--test FILE] [--reference FILE] [--quick] [--probes a,b] [--precision fp32|bf16|auto]"""

NAME = "evaluate"
HELP = "compare base and fine-tuned model: task quality, memorization, forgetting, robustness; writes eval.json"


def configure(p):
    p.add_argument("run_dir", help="run directory written by `smalltune train`")
    p.add_argument("--test", help="held-out test file (default: the recipe's data.test)")
    p.add_argument("--reference", help="general reference text for forgetting (.txt paragraphs or .jsonl with \"text\"); "
                                       "default: Wikipedia paragraphs")
    p.add_argument("--quick", action="store_true", help="small sample caps (a couple of minutes on a CPU)")
    p.add_argument("--probes", help="comma-separated probes to run (default: all that apply): "
                                    "task, memorization, forgetting, robustness, diversity")
    p.add_argument("--precision", help="eval.precision for this evaluation: fp32, bf16 or auto (default: the run's "
                                       "recipe; auto = the precision the run trained in; docs/evaluation.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from ..evaluate import evaluate
    from ..evaluate.summary import print_summary

    probes = [p.strip() for p in args.probes.split(",") if p.strip()] if args.probes else None
    result = evaluate(args.run_dir, test=args.test, reference=args.reference, quick=args.quick, probes=probes,
                      progress=not args.no_progress, precision=args.precision)
    print_summary(result)
    print(result.path)
    return 0
