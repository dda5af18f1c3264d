"""The planner's rules, in one place: every number a plan writes comes from a row here.

Two tables, read by the planner and printed by ``smalltune plan --explain``:

* ``BANDS``: dataset-size bands and what each implies (method, epochs, regularisation, cadence).
  The *method and regularisation* band is chosen by the smallest category's count when the data
  has categories (the least-represented task must not be overfit); the *schedule* band (epochs,
  evaluations, batch) by the total count.
* ``RULES``: one row per recipe key the planner sets: the rule in words, its source, and the
  function that applies it to a :class:`Context` (the facts about data, model and device).

What belongs to a method -- its learning rates (fresh and ``--update``, with sources), the recipe
keys it reads, its memory -- is declared on the method's own class (``train/methods``); the rules
ask it, and ``--explain`` prints it from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ..train.precision import BF16_MIN_SPEEDUP


@dataclass(frozen=True)
class Band:
    label: str
    below: float  # examples; the band holds counts under this
    method: str  # preferred method
    alternatives: tuple[str, ...]  # also suited to this size (named in the note)
    epochs: float  # upper bound; early stopping usually ends sooner
    evals_per_epoch: int
    patience: int  # evaluations without improvement before stopping
    effective_batch: int  # examples per optimizer step (batch_size x grad_accum)
    weight_decay: float
    dropout: float  # adapter dropout
    lora_r: int
    small_model_method: str | None = None  # preferred for models under SMALL_MODEL parameters when it fits


# Method by size follows the seed research's guidance (LoRA / prefix under 1k examples, adapters up
# to 100k, full fine-tuning beyond); epochs 2-3 normally; weight decay 0.01-0.05 and dropout 0.1-0.2,
# stronger for less data. Under 1k examples: 5 epochs as an upper bound that the forgetting budget
# ends (benchmarks/README.md "1d": the 100-example runs stopped past +10% at 3.8 epochs, after the evaluation they
# kept; 3 epochs to the end learned less, 17.6% key-fact recall; experiment 1: a 20-epoch plan stopped at
# 9.2 epochs with its rate still ~56% of peak), rank 16 as in the demo. A model under 1B parameters whose
# full fine-tuning fits is fully fine-tuned under 1k examples ("1c": 17.4% key-fact recall where LoRA at 1e-3
# reached 8.3%).
BANDS = (
    Band("<1k", 1_000, "lora", ("prefix",), 5, 5, 3, 8, 0.05, 0.2, 16, small_model_method="full"),
    Band("1k-10k", 10_000, "lora", ("bottleneck",), 3, 4, 3, 16, 0.02, 0.1, 16),
    Band("10k-100k", 100_000, "bottleneck", ("partial", "lora"), 2, 4, 2, 32, 0.01, 0.1, 16),
    Band(">100k", math.inf, "full", ("partial", "hft"), 2, 8, 2, 64, 0.01, 0.1, 16),
)


def band_for(count: int) -> Band:
    """The size band holding ``count`` examples.

    >>> band_for(300).method
    'lora'
    """
    return next(b for b in BANDS if count < b.below)


@dataclass
class Context:
    """Facts a rule may read; the planner fills it in order (method and memory fit first)."""

    n_train: int  # examples in the training file
    n_smallest: int  # examples in the smallest category (n_train without categories)
    smallest_category: str | None
    has_validation_file: bool
    model_params: int
    update: bool
    band: Band  # by n_smallest: method and regularisation
    schedule: Band  # by n_train: epochs, evaluations, batch
    validation_count: int | None = None  # examples in the validation file, when one is given
    method: str = "lora"
    max_length: int = 512
    batch_size: int = 8
    grad_accum: int = 1
    processes: int = 1  # data-parallel processes (--processes); each takes batch_size examples per micro-batch
    precision: str = "fp32"
    why: dict[str, str] = field(default_factory=dict)  # reasons decided outside the table (method, fit)

    @property
    def validation_fraction(self) -> float | None:
        from ..data.splits import auto_validation_fraction

        return None if self.has_validation_file else auto_validation_fraction(self.n_train)

    @property
    def n_validation(self) -> int:
        """Validation examples: the file's count, else the carved split's size."""
        if self.validation_count is not None:
            return self.validation_count
        return round(self.n_train * (self.validation_fraction or 0))

    @property
    def steps_per_epoch(self) -> int:
        train = self.n_train * (1 - (self.validation_fraction or 0))
        return max(1, math.ceil(train / (self.batch_size * self.grad_accum * self.processes)))

    @property
    def total_steps(self) -> int:
        return math.ceil(self.schedule.epochs * self.steps_per_epoch)


Decide = Callable[[Context], "tuple[Any, str]"]


@dataclass(frozen=True)
class Rule:
    key: str  # the recipe key the rule sets
    rule: str  # the rule in words; numbers live in BANDS or on the method (its rate)
    source: str
    decide: Decide  # (value, one-line why)


def _lr(c: Context):
    from ..train.methods import LARGE_MODEL, METHODS, SMALL_MODEL

    rate = METHODS.get(c.method, "method.name").rate
    lr = rate.update_lr if c.update else rate.lr
    why = f"{c.method} {'update ' if c.update else ''}rate ({rate.source})"
    if rate.small_model_factor != 1 and c.model_params < SMALL_MODEL and not c.update:
        lr = lr * rate.small_model_factor  # the rate's source says why
    if rate.large_model_factor != 1 and c.model_params >= LARGE_MODEL:
        lr = lr * rate.large_model_factor
        scaled = "halved" if rate.large_model_factor == 0.5 else f"x{rate.large_model_factor:g}"
        why += f"; {scaled} for a model over {LARGE_MODEL / 1e9:.0f}B parameters"
    return lr, why


FORGETTING_BUDGET = 0.1  # allowed rise of general-text perplexity, every method
REPLAY_RATIO = 0.0  # general replay share of the mixed training set (1c: greedy self-replay hurt)
MIN_DELTA = 0.02  # validation-loss difference that does not count (early stopping and selection)
EVAL_SHARE = 0.25  # most of the training compute that evaluations may add


def _eval_every(c: Context):
    every = max(1, c.steps_per_epoch // c.schedule.evals_per_epoch)
    why = f"{c.steps_per_epoch} steps per epoch / {c.schedule.evals_per_epoch} evaluations per epoch"
    # A validation pass is a forward pass (~1/3 of a training step's compute per example); with a
    # validation set large next to the training data, the band's cadence would double the run time.
    floor = math.ceil(c.n_validation / (3 * EVAL_SHARE * c.batch_size * c.grad_accum))
    if floor > every:
        every, why = floor, (f"every {floor} steps keeps validation ({c.n_validation} examples) under "
                             f"{EVAL_SHARE:.0%} of the training compute")
    return every, f"{why}: patience {c.schedule.patience} stops within ~{c.schedule.patience * every} steps of the best"


def _warmup(c: Context):
    steps = max(1, min(round(0.1 * c.total_steps), c.steps_per_epoch // 2))
    return round(steps / c.total_steps, 4), (f"{steps} warmup steps: 10% of the {c.total_steps} planned steps, at most "
                                             f"half an epoch, since early stopping may end the run early")


def _band_note(c: Context) -> str:
    if c.smallest_category is None:
        return f"{c.n_train:,} examples (band {c.band.label})"
    return f"smallest category {c.smallest_category!r} has {c.n_smallest:,} examples (band {c.band.label})"


RULES: tuple[Rule, ...] = (
    Rule("method.name", "band method if installed, else lora; under 1k examples a model under 1B parameters is "
         "fully fine-tuned when that fits (else the band method); --update plans the same method at its update rate", "seed research "
         "(LoRA/prefix <1k, adapters to 100k, full beyond); benchmarks/README.md 1c for small models",
         lambda c: (c.method, c.why["method.name"])),
    Rule("method.r", "band lora_r: a small rank for small data (fewer parameters to overfit with)",
         "LoRA arXiv 2106.09685 §7 (r 1-8 already suffices)", lambda c: (c.band.lora_r, f"rank for {_band_note(c)}")),
    Rule("method.alpha", "2 x r: the update's scale stays constant when r changes", "common LoRA practice (peft, "
         "unsloth guides)", lambda c: (2 * c.band.lora_r, "alpha = 2 x r")),
    Rule("method.dropout", "band dropout (0.1-0.2, stronger for less data)", "QLoRA arXiv 2305.14314 (0.05-0.1); "
         "raised for tiny data", lambda c: (c.band.dropout, f"adapter dropout for {_band_note(c)}")),
    Rule("data.max_length", "longest example (tokens, chat template included) rounded up to 64, capped at "
         "the model's context and 2048", "no truncation of answers, no padding beyond the data",
         lambda c: (c.max_length, c.why["data.max_length"])),
    Rule("data.validation_fraction", "empty when a validation file is given, else sized by data.splits "
         "(20% under 150 examples ... 1% at 100k)", "a validation loss from at least ~30 examples",
         lambda c: (c.validation_fraction, "validation file given" if c.has_validation_file else
                    f"{c.validation_fraction:.0%} of {c.n_train:,} examples held out for validation")),
    Rule("train.lr", "the method's rate (update rate with --update), times its large-model factor above 30B "
         "parameters", "each method's rate, in the learning-rates table", _lr),
    Rule("train.epochs", "schedule-band epochs: an upper bound, early stopping decides", "2-3 epochs normally, "
         "up to 20-25 for very small data with early stopping",
         lambda c: (c.schedule.epochs, f"upper bound for {c.n_train:,} examples; early stopping or the forgetting "
                                       "budget usually ends sooner")),
    Rule("train.batch_size", "largest of 8, 4, 2, 1 (up to the effective batch) whose memory estimate fits",
         "memory estimate (plan/memory.py)", lambda c: (c.batch_size, c.why["train.batch_size"])),
    Rule("train.grad_accum", "effective batch / (batch_size x processes); schedule band effective batch "
         "8/16/32/64", "small batches give small data more optimizer steps", lambda c: (
             c.grad_accum, f"effective batch {c.batch_size * c.grad_accum * c.processes} = {c.batch_size} x "
                           f"{c.grad_accum}" + (f" x {c.processes} processes" if c.processes > 1 else ""))),
    Rule("train.precision", "GPU: bf16 (fp16 without bf16 support); CPU: auto where fp32 and bf16 both fit (at "
         f"train time bf16 autocast only where one decoder layer at the training shapes measures >= "
         f"{BF16_MIN_SPEEDUP:g}x fp32's speed), else the one that fits",
         "mixed precision halves activation memory; on CPUs bf16 is 1.5x faster or slower by CPU (benchmarks/"
         "README.md, \"bf16 vs fp32 over whole demo runs\")", lambda c: (c.precision, c.why["train.precision"])),
    Rule("train.warmup_ratio", "10% of planned steps, at most half an epoch", "QLoRA 3%, Alpaca 3%; "
         "common 3-10%", _warmup),
    Rule("train.weight_decay", "band weight decay (0.01-0.05, stronger for less data)", "AdamW arXiv 1711.05101",
         lambda c: (c.band.weight_decay, f"weight decay for {_band_note(c)}")),
    Rule("train.max_grad_norm", "1.0", "standard clipping (LoRA, QLoRA, Alpaca setups)",
         lambda c: (1.0, "clip gradients at norm 1.0")),
    Rule("train.scheduler", "linear decay to zero at the planned end", "transformers' default; benchmarks/README.md 1c "
         "(the 3-epoch linear schedule of experiment 1's best vanilla arm)",
         lambda c: ("linear", "linear decay after warmup, to zero at the planned end")),
    Rule("early_stopping.enabled", "always on", "small-data fine-tuning overfits within epochs",
         lambda c: (True, "stop when validation loss stops improving")),
    Rule("early_stopping.patience", "schedule-band patience (2-3 evaluations)", "seed research",
         lambda c: (c.schedule.patience, f"{c.schedule.patience} evaluations without improvement")),
    Rule("eval.every_steps", "steps per epoch / band evaluations per epoch (5 for <1k examples), but validation "
         f"at most {EVAL_SHARE:.0%} of the training compute", "enough evaluations for early stopping to stop near "
         "the best step without doubling the run time on small data", _eval_every),
    Rule("eval.batch_size", "2 x batch_size, at most 16", "evaluation keeps no activations for backward",
         lambda c: (min(16, 2 * c.batch_size), "evaluation needs no gradients, so twice the training batch")),
    Rule("regularize.replay_ratio", "off", "benchmarks/README.md 1c: 20% replay of the base model's own greedy answers "
         "raised general-text perplexity (+12.1% vs +4.2% without replay, full fine-tuning at 1e-4, seed 0); sampled "
         "self-replay (replay_source: self, now the behaviour) is still being measured",
         lambda c: (REPLAY_RATIO, "no general replay (set 0.2 with replay_source: self to replay the base model's own "
                                  "sampled answers)")),
    Rule("early_stopping.min_delta", f"{MIN_DELTA:g} (nats of validation loss)", "later checkpoints forget more at "
         "nearly the same validation loss (benchmarks/README.md 'learning vs forgetting'); loss-based selection "
         "(guards.selection eval_loss, or auto) keeps the least-forgetting checkpoint within this of the best",
         lambda c: (MIN_DELTA, f"improvements under {MIN_DELTA:g} do not count")),
    Rule("guards.selection", "accuracy: the best validation token accuracy among evaluations whose validation "
         "perplexity is within guards.ppl_factor of its minimum (and within the forgetting budget)", "benchmarks/"
         "README.md experiment 4 (26.6% key-fact recall where the lowest validation loss picked 14.6%) and 1d "
         "(accuracy keeps learning key facts after the loss minimum)",
         lambda c: ("accuracy", "best validation token accuracy under the perplexity cap, within the budget")),
    Rule("guards.forgetting_budget", f"{FORGETTING_BUDGET:.0%} for every method", "an adapter leaves the base "
         "weights intact but the adapted model still forgets (the demo's LoRA run: +16% general-text perplexity); "
         "10% = a third of the forgetting of experiment 1's best-recall vanilla arm (+30%)",
         lambda c: (FORGETTING_BUDGET, f"general-text perplexity may rise at most {FORGETTING_BUDGET:.0%} over the "
                                       f"base model's")),
    Rule("guards.forgetting_action", "stop: the budget is a constraint; the run ends past it and keeps the best "
         "evaluation within it", "benchmarks/README.md 1d (with accuracy selection and 5 epochs; a stop with "
         "loss-based selection and a cosine schedule had ended a run at 1.9 epochs with 5.6% recall)",
         lambda c: ("stop", "the run stops past the budget; only evaluations within it are kept")),
)
