"""Terminal output: progress bars and the short summaries each stage prints.

Everything a person reads on the terminal goes through here (rich for tables, tqdm for the
progress bar), so the stages themselves stay free of formatting.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def process_rank() -> int:
    """This process's rank under a launcher (torchrun and accelerate set RANK; MPI its own), else 0.

    Read from the environment, not from accelerate's state, so it answers before (and without)
    joining the process group, e.g. for an error raised while loading the recipe.
    """
    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def is_main_process() -> bool:
    return process_rank() == 0


# Only the main process prints: N ranks of one run would otherwise show every line N times.
out = Console(stderr=True, highlight=False, quiet=not is_main_process())


def info(text: str) -> None:
    out.print(text)


def warn(text: str) -> None:
    out.print(f"[yellow]warning:[/yellow] {text}")


def progress(total: int, initial: int = 0, disable: bool = False, desc: str = "training"):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=disable, dynamic_ncols=True,
                file=sys.stderr, mininterval=0.5)


def train_header(recipe, data, trainable: int, total: int, run_path, precision) -> None:
    """The run's opening lines; ``precision`` is its :class:`~smalltune.train.precision.PrecisionChoice`."""
    t = recipe.train
    s = data.train_stats
    out.print(f"[bold]smalltune train[/bold] → {run_path}")
    out.print(f"  model   {recipe.model.name}; method {recipe.method.name}: "
              f"{trainable:,} trainable of {total:,} parameters ({trainable / max(total, 1):.2%})")
    out.print(f"  data    {len(data.train)} train examples ({s.trainable_tokens:,} trainable of {s.tokens:,} tokens), "
              f"{len(data.validation)} validation: {data.validation_source}")
    out.print(f"  train   lr {t.lr:g}, up to {t.epochs:g} epochs, batch {t.batch_size}×{t.grad_accum}, "
              f"{t.scheduler} schedule, seed {t.seed}, precision {precision.precision} ({precision.reason})")
    for stats, split in ((data.train_stats, "train"), (data.validation_stats, "validation")):
        if stats.truncated_examples:
            warn(f"{split}: {stats.truncated_examples} examples exceed data.max_length={recipe.data.max_length}; "
                 f"{stats.truncated_tokens} tokens cut ({stats.truncated_trainable} of them trainable)")
        if stats.dropped:
            warn(f"{split}: {len(stats.dropped)} examples have no trainable token left after truncation and are "
                 f"left out: {', '.join(stats.dropped[:3])}{' ...' if len(stats.dropped) > 3 else ''}")


def train_footer(result) -> None:
    table = Table(title="training finished", show_header=False, title_justify="left")
    table.add_row("stopped", f"{result.stopped}{': ' + result.stop_message if result.stop_message else ''}")
    table.add_row("steps", f"{result.steps} ({result.epochs:g} epochs), {result.train_tokens:,} tokens "
                           f"in {result.wall_seconds:.0f}s ({result.train_tokens / max(result.wall_seconds, 1e-9):.0f} tokens/s)")
    if result.best_metrics:
        m = result.best_metrics
        table.add_row("best", f"step {result.best_step}: eval_loss {m['eval_loss']:.4f}, "
                              f"perplexity {m['eval_ppl']:.3f}, token accuracy {m['eval_token_acc']:.1%}")
        table.add_row("chosen", result.selection)
    gap = getattr(result, "guards", {}).get("overfitting")
    if gap and gap.get("gap") is not None:
        trend = gap.get("trend_per_epoch")
        table.add_row("gap", f"validation - train loss {gap['gap']:+.3f} at the last evaluation"
                             + (f", trend {trend:+.3f} per epoch" if trend is not None else ""))
    for e in result.events:  # which guard fired, when, and on what numbers
        colour = {"stop": "red", "abandon": "red", "warn": "yellow"}.get(e["action"], "dim")
        table.add_row(f"[{colour}]{e['guard']}[/{colour}]", f"{e['action']} at step {e['step']}: {e['message']}")
    table.add_row("run", result.run_dir)
    out.print(table)


def comparison_table(comparisons) -> None:
    """Base vs fine-tuned answers side by side, with key facts found."""
    table = Table(title="held-out questions: base model vs fine-tuned", show_lines=True, expand=True)
    table.add_column("question", ratio=2)
    table.add_column("base model", ratio=3)
    table.add_column("fine-tuned", ratio=3)
    for c in comparisons:
        n = len(c.key_facts)
        mark = lambda a: f"\n[dim]key facts {c.facts_found(a)}/{n}[/dim]" if n else ""  # noqa: E731
        table.add_row(escape(c.question), escape(c.base) + mark(c.base), escape(c.finetuned) + mark(c.finetuned))
    Console(highlight=False).print(table)  # stdout: this table is the demo's result
