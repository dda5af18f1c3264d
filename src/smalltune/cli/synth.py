"""smalltune synth DOCS... [--model M] [--per-passage K] [--output PATH] [--validation F] [--test F] ..."""

from ..recipe import ModelSection

NAME = "synth"
HELP = ("question/answer pairs generated from your documents (.md, .txt, .html), each answer checked against its "
        "passage, deduplicated and audited")


def configure(p):
    p.add_argument("docs", nargs="+", metavar="DOC", help="documents: markdown, plain text or HTML pages")
    p.add_argument("--model", default=ModelSection().name, help="generator: built-in name, model folder or hub id")
    p.add_argument("--per-passage", type=int, default=1, metavar="K", help="questions per passage (1-3, one per style)")
    p.add_argument("--output", "-o", default="synth.jsonl", metavar="PATH", help="output data file (default synth.jsonl)")
    p.add_argument("--validation", metavar="FILE", help="validation file: questions too close to its prompts are dropped")
    p.add_argument("--test", metavar="FILE", help="test file: questions too close to its prompts are dropped")
    p.add_argument("--system-prompt", metavar="TEXT", help="the voice answers are written in (e.g. your recipe's)")
    p.add_argument("--max-words", type=int, default=80, metavar="N", help="longest passage in words (default 80)")
    p.add_argument("--threshold", type=float, default=0.8, metavar="X",
                   help="near-duplicate similarity (Jaccard of word shingles, the audit's default 0.8)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="generation batch size")
    p.add_argument("--max-new-tokens", type=int, default=96, metavar="N", help="longest generated question or answer")
    p.add_argument("--no-audit", action="store_true", help="skip the audit of the written file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..audit.summary import audit_summary
    from ..augment import synth
    from ..augment.runner import print_counts
    from ..console import warn
    from ..errors import EXIT_FINDINGS

    result = synth(args.docs, model=args.model, per_passage=args.per_passage, output=args.output,
                   validation=args.validation, test=args.test, max_words=args.max_words,
                   system_prompt=args.system_prompt, threshold=args.threshold, batch_size=args.batch_size,
                   max_new_tokens=args.max_new_tokens, run_audit=not args.no_audit, progress=not args.no_progress)
    print_counts(result.summary)
    if not result.records:
        warn("no question/answer pair passed the checks (see the counts file for what was rejected and why)")
        return EXIT_FINDINGS
    if result.audit is not None:
        audit_summary(result.audit)
        return result.audit.exit_code()
    return 0
