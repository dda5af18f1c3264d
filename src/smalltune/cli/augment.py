"""smalltune augment DATA --method paraphrase|backtranslate [--model M] [--per-example K] [--pivot L] ..."""

from ..recipe import ModelSection

NAME = "augment"
HELP = ("new variants of each training prompt (paraphrase or back-translation; answers stay yours), filtered for "
        "copies, near-duplicates, lost meaning and leakage into validation/test")


def configure(p):
    p.add_argument("data", help="training data file (.jsonl, .json or .csv); never a validation or test file")
    p.add_argument("--method", default="paraphrase", help="paraphrase (default) or backtranslate")
    p.add_argument("--model", default=ModelSection().name, help="generator: built-in name, model folder or hub id")
    p.add_argument("--per-example", type=int, default=1, metavar="K",
                   help="variants per example: one per paraphrase style (up to 4) or per pivot language")
    p.add_argument("--pivot", default="French", metavar="LANGS",
                   help="back-translation pivot language(s), comma-separated (default French)")
    p.add_argument("--validation", metavar="FILE", help="validation file: variants too close to its prompts are dropped")
    p.add_argument("--test", metavar="FILE", help="test file: variants too close to its prompts are dropped")
    p.add_argument("--output", "-o", metavar="PATH",
                   help="output data file (default DATA's name + .METHOD; .jsonl, .json or .csv)")
    p.add_argument("--with-originals", action="store_true", help="write the original examples first (ready to train)")
    p.add_argument("--threshold", type=float, default=0.8, metavar="X",
                   help="near-duplicate similarity (Jaccard of word shingles, the audit's default 0.8)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="generation batch size")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="longest generated text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..augment import augment
    from ..augment.runner import print_counts
    from ..console import warn
    from ..errors import EXIT_FINDINGS

    result = augment(args.data, args.method, model=args.model, per_example=args.per_example, pivot=args.pivot,
                     validation=args.validation, test=args.test, output=args.output,
                     with_originals=args.with_originals, threshold=args.threshold, batch_size=args.batch_size,
                     max_new_tokens=args.max_new_tokens, progress=not args.no_progress)
    print_counts(result.summary)
    if result.message:
        warn(f"{result.message}; a larger --model may translate where this one does not")
    if not result.records:
        warn("no variant passed the filters (see the counts file for what was rejected and why)")
        return EXIT_FINDINGS
    return 0
