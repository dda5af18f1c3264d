"""smalltune export RUN_DIR --to DIR [--merge] [--gguf [--converter PATH]]"""

NAME = "export"
HELP = ("copy a run's trained adapter (or model) to a folder with a model card; --merge adds a plain transformers "
        "model with the adapter merged (checked against the adapter's logits); --gguf adds a GGUF file")


def configure(p):
    p.add_argument("run_dir", help="run directory written by `smalltune train`")
    p.add_argument("--to", required=True, metavar="DIR", help="export folder (created; must not hold files yet unless --force)")
    p.add_argument("--merge", action="store_true", help="also write DIR/merged/: the adapter merged into the base weights")
    p.add_argument("--gguf", action="store_true", help="also write DIR/model.gguf with llama.cpp's converter (implies --merge)")
    p.add_argument("--converter", metavar="PATH", help="llama.cpp's convert_hf_to_gguf.py (default: found on PATH)")
    p.add_argument("--force", action="store_true", help="replace an existing export folder")


def run(args) -> int:
    from ..use.export import export

    result = export(args.run_dir, args.to, merge=args.merge, gguf=args.gguf, converter=args.converter, force=args.force)
    for line in result.lines():
        print(line)
    return 0
