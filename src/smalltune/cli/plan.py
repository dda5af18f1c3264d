"""smalltune plan DATA --model M [--output recipe.yaml] [--device-memory GiB] [--processes N --sharding S]
[--update] [--explain]"""

from ..recipe import ModelSection

NAME = "plan"
HELP = "write a recipe for DATA: method, hyperparameters and memory from dataset size and hardware"


def configure(p):
    p.add_argument("data", nargs="?", help="training data file (.jsonl, .json or .csv)")
    p.add_argument("--model", default=ModelSection().name, help="built-in model name, model folder or hub id")
    p.add_argument("--output", "-o", metavar="RECIPE", help="write the recipe YAML here (commented with the reasons)")
    p.add_argument("--validation", help="validation file (otherwise a split is carved from DATA)")
    p.add_argument("--test", help="held-out test file for `smalltune evaluate`")
    p.add_argument("--device-memory", type=float, metavar="GiB",
                   help="plan for a device with this much memory instead of the detected GPU / RAM")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="plan per process for N data-parallel processes, one device each (accelerate launch); "
                        "the effective batch is shared among them")
    p.add_argument("--sharding", default="ddp", choices=("ddp", "fsdp", "zero2", "zero3"),
                   help="what the processes divide: ddp nothing, zero2 gradients and optimizer states, "
                        "zero3 / fsdp also the weights (docs/multi-gpu.md)")
    p.add_argument("--update", action="store_true",
                   help="incremental training of an already fine-tuned model: lower learning rates")
    p.add_argument("--explain", action="store_true", help="print the planner's rules table and exit")


def run(args) -> int:
    from ..errors import EXIT_FINDINGS, SmalltuneError

    if args.explain:
        from ..plan.show import print_rules

        print_rules()
        return 0
    if not args.data:
        raise SmalltuneError("plan needs a DATA file (or --explain to print the rules)")
    from .. import plan
    from ..plan.show import print_plan

    result = plan(args.data, model=args.model, device_memory_gib=args.device_memory, update=args.update,
                  validation=args.validation, test=args.test, output=args.output, processes=args.processes,
                  sharding=args.sharding)
    print_plan(result, args.output)
    if not args.output:
        print(result.to_yaml(), end="")
    return 0 if result.fits else EXIT_FINDINGS
