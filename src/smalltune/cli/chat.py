"""smalltune chat RUN_DIR [--prompt TEXT ... | --prompts FILE] [--base | --compare]"""

NAME = "chat"
HELP = ("talk to a trained run in the terminal (streamed, in its chat template and system prompt; /base and "
        "/compare switch models), or answer --prompt/--prompts in one batch as JSON lines")


def configure(p):
    p.add_argument("run_dir", help="run directory written by `smalltune train`")
    p.add_argument("--prompt", action="append", metavar="TEXT", help="answer this prompt and exit (repeatable)")
    p.add_argument("--prompts", metavar="FILE", help="answer every record of a JSONL/JSON/CSV file (strings, or "
                                                     "messages / prompt / instruction records; a test file works)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--base", action="store_true", help="answer with the base model instead of the fine-tuned one")
    who.add_argument("--compare", action="store_true", help="answer with both models (side by side in the chat)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest answer in tokens (default 256)")
    p.add_argument("--context", type=int, help="tokens of conversation kept, answer included (default: the model's context)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts answered at once with --prompt/--prompts (default 8)")


def run(args) -> int:
    import json

    from ..errors import SmalltuneError
    from ..use.chat import answer, chat, read_prompts

    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--batch-size", args.batch_size),
                        ("--context", args.context)):
        if value is not None and value < 1:
            raise SmalltuneError(f"{flag} must be >= 1, got {value}")
    options = {"max_new_tokens": args.max_new_tokens, "context": args.context, "batch_size": args.batch_size}
    if args.prompt or args.prompts:
        prompts = list(args.prompt or []) + (read_prompts(args.prompts) if args.prompts else [])
        models = ("finetuned", "base") if args.compare else ("base",) if args.base else ("finetuned",)
        for row in answer(args.run_dir, prompts, models, **options):
            print(json.dumps(row, ensure_ascii=False), flush=True)
        return 0
    chat(args.run_dir, which="base" if args.base else "finetuned", compare=args.compare, **options)
    return 0
