"""Terminal output of `smalltune plan`: the plan's reasons and the rules table (through console)."""

from __future__ import annotations

from rich.table import Table

from ..console import out, warn


def print_plan(plan, output=None) -> None:
    """One line per decision (key: value — why), the memory estimate, and what would fit if nothing does."""
    r = plan.recipe
    out.print(f"[bold]smalltune plan[/bold]: {r.method.name} on {r.model.name}"
              + (f" → {output}" if output else ""))
    for line in plan.explanations:
        out.print(f"  {line}", soft_wrap=True)
    if not plan.fits:
        warn("the plan does not fit this device's memory; see the 'would fit' lines above")


def print_rules() -> None:
    """The planner's tables (plan/rules.py): size bands, learning rates, and one row per recipe key."""
    from .planner import explain_rows

    bands, rates, rules = explain_rows()
    t = Table(title="size bands (method/regularisation by the smallest category, schedule by the total)",
              title_justify="left")
    for col in ("examples", "method", "also", "epochs", "evals/epoch", "patience", "eff. batch", "weight decay",
                "dropout", "lora r"):
        t.add_column(col)
    for row in bands:
        t.add_row(*map(str, row))
    out.print(t)
    t = Table(title="methods: learning rates and the method.* keys each reads (train/methods)", title_justify="left")
    for col in ("method", "lr", "--update lr", "source", "keys"):
        t.add_column(col)
    for row in rates:
        t.add_row(*map(str, row))
    out.print(t)
    t = Table(title="rules: one per recipe key the planner sets", title_justify="left", show_lines=False)
    for col in ("key", "rule", "source"):
        t.add_column(col)
    for row in rules:
        t.add_row(*row)
    out.print(t)
    from .hardware import USABLE
    from .memory import CPU_HEAP_OVERHEAD, NF4_BYTES, SHARDING
    from .planner import MICRO_BATCHES

    out.print(f"memory: usable share GPU {USABLE['cuda']:.0%}, CPU RAM {USABLE['cpu']:.0%}; micro-batches tried "
              f"{', '.join(map(str, MICRO_BATCHES))}; CPU activations x{CPU_HEAP_OVERHEAD} heap overhead "
              f"(measured, benchmarks/README.md)")
    shared = {name: " and ".join(p for p, on in zip(("weights", "gradients + optimizer states"), split) if on)
              or "nothing" for name, split in SHARDING.items()}
    out.print("sharding over --processes N divides: " + "; ".join(f"{k} {v}" for k, v in shared.items())
              + f". 4-bit base (model.load_in_4bit, QLoRA arXiv 2305.14314): {NF4_BYTES:.3f} bytes per "
                "decoder-layer linear weight, gradient checkpointing")
