"""The recipe schema: one dataclass per section, each field defined and documented exactly once
through :func:`~smalltune.recipe.options.option`.

The CLI help (``smalltune recipe --explain``), the comments in written YAML, the validation errors
and every stage's default all read these definitions: code that needs a default takes it from
here (``GuardsSection().ppl_factor``) rather than repeating the number.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .options import at_least, fraction, non_negative, option, positive

TRACKERS = ("tensorboard", "mlflow", "trackio", "wandb")  # train.report_to: accelerate's tracker names we support


# --- sections -------------------------------------------------------------------------------
@dataclass
class ModelSection:
    name: str = option(
        "smollm2-135m-instruct",
        "built-in model name (see `smalltune models`), a local model folder, or a hub id (downloads need network)",
    )
    revision: str | None = option(None, "hub revision (branch, tag or commit) when `name` is a hub id")
    trust_remote_code: bool = option(
        False, "run the model repository's own Python code; only for repositories you trust"
    )
    load_in_4bit: bool = option(
        False, "QLoRA (arXiv 2305.14314): load the base model's decoder linears in 4-bit NF4 and train an adapter "
        "on it; needs a CUDA GPU and bitsandbytes (pip install 'smalltune[qlora]')"
    )


@dataclass
class DataSection:
    train: str = option("", "training data file (.jsonl, .json or .csv; chat, prompt/completion or Alpaca shape)")
    validation: str | None = option(
        None, "validation file; when empty, a split is carved from `train` (stratified by category)"
    )
    test: str | None = option(None, "held-out test file, used only by `smalltune evaluate`")
    max_length: int = option(512, "tokens per example after the chat template; longer examples are truncated", positive)
    validation_fraction: float | None = option(
        None, "share of `train` carved off for validation when no file is given; empty = sized for the data", fraction
    )
    system_prompt: str | None = option(
        None, "system message added to every conversation that has none (training, evaluation and demo alike)"
    )


@dataclass
class MethodSection:
    name: str = option(
        "lora", "fine-tuning method: lora, dora, ia3, prefix, prompt, bottleneck, partial, hft or full "
        "(when to use which: docs/methods.md)"
    )
    # Which methods read each key below is declared by the methods (``keys`` in train/methods/*.py)
    # and added to the help where it is shown (field_help).
    r: int = option(8, "rank: size of the low-rank update", positive)
    alpha: float = option(16, "the low-rank update is scaled by alpha / r", positive)
    dropout: float = option(0.1, "dropout on the adapter input (regularises small data)", fraction)
    target_modules: str | list[str] = option(
        "all-linear", "modules that get adapters: 'all-linear' or a list of module names (q_proj, v_proj, ...)"
    )
    num_virtual_tokens: int = option(20, "number of trained virtual tokens", positive)
    bottleneck_size: int = option(16, "hidden width of each bottleneck adapter (down-projection size)", positive)
    bottleneck_after: list[str] = option(
        ["o_proj", "down_proj"], "linear modules followed by an adapter (attention and MLP output projections)"
    )
    top_k_layers: int | None = option(2, "train the last N decoder layers; empty or 0 = none", non_negative)
    modules: list[str] = option(
        [], "also train every parameter inside these modules (dotted name parts: lm_head, norm, layers.0.mlp)"
    )
    hft_fraction: float = option(
        0.5, "share of each layer's attention, MLP and norm weights trained per epoch (redrawn each epoch)",
        lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {v}",
    )


@dataclass
class TrainSection:
    lr: float = option(2e-4, "peak learning rate", positive)
    epochs: float = option(3, "passes over the training data (upper bound: early stopping may end sooner)", positive)
    max_steps: int | None = option(None, "hard cap on optimizer steps; empty = no cap", positive)
    batch_size: int = option(8, "examples per device per micro-batch", positive)
    grad_accum: int = option(1, "micro-batches per optimizer step (effective batch = batch_size * grad_accum * devices)", positive)
    warmup_ratio: float = option(0.1, "share of the steps spent warming the learning rate up from 0", fraction)
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and norms)", non_negative)
    max_grad_norm: float | None = option(1.0, "clip the gradient norm to this value; empty = no clipping", positive)
    scheduler: str = option("cosine", "learning-rate schedule after warmup", choices=("cosine", "linear", "constant"))
    seed: int = option(42, "seed for splits, shuffling, dropout and adapter initialisation", non_negative)
    precision: str = option(
        "auto", "fp32, bf16 or fp16 autocast; auto = bf16 on a GPU that supports it (else fp16 with a loss "
        "scaler); on a CPU bf16 only where a quick measurement of one decoder layer at the training shapes finds "
        "it clearly faster than fp32, else fp32 (the choice and its measured ratio: the run's start event)",
        choices=("auto", "fp32", "bf16", "fp16"),
    )
    group_by_length: bool = option(True, "batch examples of similar length together (less padding, faster)")
    compile: bool = option(
        False, "compile each decoder layer with torch.compile before training (fuses its small operations; needs a "
        "C++ compiler on a CPU); every run spends seconds to minutes compiling, and on a quiet 2-core CPU it trained "
        "no faster (benchmarks/README.md, experiment 5, \"compiled decoder layers\"); not measured on a GPU")
    keep_checkpoints: int = option(2, "periodic checkpoints kept besides the best one (for --resume)", non_negative)
    # A full fine-tune's checkpoint (weights and two AdamW moments: 3x the model) cost about one training
    # step per evaluation on the 135M model (benchmarks/README.md "Guards overhead"); best-model snapshots
    # are still kept at every evaluation, so selection does not depend on this cadence.
    checkpoint_minutes: float = option(
        5.0, "write a --resume checkpoint at the first evaluation this many minutes of training after the "
        "previous one (a killed run loses at most about this much); 0 = at every evaluation", non_negative)
    report_to: list[str] = option(
        [], "experiment trackers that get training loss, evaluations and guard events as they happen, through "
        "accelerate: tensorboard (<run>/trackers/), mlflow (MLFLOW_TRACKING_URI; also report.html and eval.json "
        "after `smalltune run`), trackio, wandb (offline unless WANDB_MODE is set); empty = none (docs/trackers.md)",
        lambda v: next((f"has unknown tracker {x!r}; choose from {', '.join(TRACKERS)}" for x in v if x not in TRACKERS),
                       None),
    )


@dataclass
class EarlyStoppingSection:
    enabled: bool = option(True, "stop when the metric has not improved for `patience` evaluations")
    patience: int = option(3, "evaluations without improvement before stopping", positive)
    metric: str = option("eval_loss", "metric that decides the best checkpoint (lower is better)", choices=("eval_loss",))
    min_delta: float = option(
        0.0, "an improvement smaller than this does not count; with the forgetting guard on, checkpoint selection "
        "also keeps the least-forgetting evaluation within this of the lowest validation loss", non_negative)


@dataclass
class EvalSection:
    every_steps: int | None = option(None, "evaluate every N optimizer steps; empty = `per_epoch` times per epoch", positive)
    per_epoch: int = option(2, "evaluations per epoch when `every_steps` is empty", positive)
    batch_size: int = option(16, "examples per evaluation batch", positive)
    # `smalltune evaluate` sample caps (--quick uses fixed small caps instead; docs/evaluation.md)
    test_samples: int | None = option(None, "evaluate: held-out questions answered; empty = all", positive)
    memorization_samples: int | None = option(200, "evaluate: training prompts checked for verbatim memorization; empty = all", positive)
    reference_paragraphs: int = option(64, "evaluate: general reference paragraphs scored for forgetting", positive)
    probe_questions: int = option(300, "evaluate: general questions (capitals, trivia) asked for forgetting; --quick asks 200", positive)
    max_new_tokens: int = option(96, "evaluate: greedy generation length cap per answer", positive)
    precision: str = option(
        "auto", "evaluate: arithmetic of the generation and loss passes, both models: fp32, bf16 autocast, or auto = "
        "the arithmetic the run trained in (bf16 when training ran under bf16 autocast, else fp32). bf16 answers "
        "differ from fp32's, the metrics stayed within the fp32 CIs; an AMX Xeon evaluated the demo run 1.6x faster "
        "in bf16 (benchmarks/README.md, \"Evaluation in the training's precision\")",
        choices=("auto", "fp32", "bf16"))
    cache_base_answers: bool = option(
        True, "keep the base model's outputs on disk ($SMALLTUNE_ANSWER_CACHE, else the smalltune cache's answers/), "
        "keyed by the base model, its precision, device, batching and library versions: evaluate's greedy answers "
        "and per-item losses (a later evaluation on the same base runs only the fine-tuned model), and training's "
        "measurements of the untrained model (validation metrics, the forgetting guard's base perplexity)")


@dataclass
class RegularizeSection:
    ewc_lambda: float = option(
        0.0, "Elastic Weight Consolidation strength (arXiv 1612.00796): penalty lambda/2 * sum F*(w-w0)^2 with a "
        "Fisher from general reference text; 0 = off (see docs/anti-forgetting.md for a scale)", non_negative)
    ewc_samples: int = option(16, "reference-text windows used to estimate the EWC Fisher", positive)
    sam_rho: float = option(0.0, "Sharpness-Aware Minimization radius rho (arXiv 2010.01412); 0 = plain steps", non_negative)
    replay_ratio: float = option(
        0.0, "share of training examples that are general data replayed against forgetting; 0 = off", fraction)
    replay_source: str = option(
        "self", "general data to replay when no replay_file is given: self = the base model's own answers to general "
        "prompts (generated once per model, cached; low perplexity for the base, so cheap to keep), reference = "
        "Wikipedia paragraphs from the training pool (never the ones forgetting is measured on)",
        choices=("self", "reference"))
    replay_file: str | None = option(
        None, "general instruction file (any smalltune data format) to replay; empty = general reference text")
    neftune_alpha: float = option(
        0.0, "NEFTune embedding noise alpha (arXiv 2310.05914; 5 in the paper), training only; 0 = off", non_negative)
    unlikelihood: float = option(
        0.0, "weight of an unlikelihood term (arXiv 1908.04319) on answers an example replaces (its `stale_answers`, set "
        "by smalltune update on changed answers, and a correction's model_answer): the first token where each departs "
        "from the new answer is pushed down; 0 = off", non_negative)
    unlikelihood_batch: int = option(4, "stale answers scored per micro-batch by regularize.unlikelihood", positive)


@dataclass
class TargetsSection:
    stm_threshold: float | None = option(
        None, "Selective Token Masking (arXiv 2501.14315): drop response tokens whose base-model perplexity "
        "exceeds this from the loss (2.5 in the paper); empty = off", at_least(1.0))
    self_distill: bool = option(
        False, "rewrite training answers in the base model's own words, keeping the key facts (arXiv 2402.13669)")
    self_distill_max_new_tokens: int = option(160, "token budget for each self-distilled rewrite", positive)


@dataclass
class GuardsSection:
    enabled: bool = option(True, "run the guards below at every evaluation (early stopping has its own section)")
    gap_patience: int = option(
        3, "overfitting: warn when the train/validation gap widened this many evaluations in a row", positive)
    ppl_factor: float = option(
        1.5, "over-memorization (arXiv 2508.04117): flag when validation perplexity reaches this many times its "
        "minimum while token accuracy holds; also the perplexity cap of accuracy-based selection", at_least(1.0))
    acc_tolerance: float = option(
        0.01, "over-memorization: accuracy 'holds' while within this (absolute) of its best", fraction)
    selection: str = option(
        "auto", "checkpoint choice: eval_loss = lowest validation loss; accuracy = best token accuracy under the "
        "perplexity cap; auto = eval_loss until over-memorization is flagged, then accuracy",
        choices=("auto", "eval_loss", "accuracy"))
    forgetting_budget: float | None = option(
        None, "forgetting: allowed relative rise of general reference-text perplexity over the base model "
        "(0.05 = 5%); empty = not measured", non_negative)
    forgetting_action: str = option(
        "stop", "forgetting: stop (keep the best checkpoint within budget) or only warn", choices=("stop", "warn"))
    reference_tokens: int = option(2048, "forgetting: tokens of reference text scored at each evaluation", positive)
    grad_norm_limit: float | None = option(
        1000.0, "numerical health: stop when the gradient norm (before clipping) exceeds this; a NaN/inf loss "
        "always stops; empty = no limit", positive)
    converged_delta: float = option(
        0.1, "convergence: note when the training loss changes by less than this per epoch", non_negative)


@dataclass
class TuneSection:
    enabled: bool = option(False, "`smalltune run` tunes before training (`smalltune tune` always tunes)")
    trials: int = option(12, "trials in the search (a resumed or shared study counts the ones already done)", positive)
    methods: list[str] = option(
        ["lora", "hft", "full"], "methods the search may choose, among those that fit the device's memory")
    start_from_recipe: bool = option(
        True, "the first trial trains the recipe's own method, rate, rank and replay (what `smalltune plan` chose), "
        "and later trials are pruned against it from their first evaluation: the search keeps the plan unless a "
        "trial beats it on validation (benchmarks/README.md, 1e/1f)")
    lr_factor: float = option(
        8.0, "learning rates are drawn log-uniformly in [prior / f, prior * f] around each method's prior (8 lets "
        "full fine-tuning's 2e-5 prior reach 1.6e-4, where experiment 1 found it learned best)", at_least(1.0))
    replay_max: float = option(0.3, "largest replay share a trial may draw (0 = no replay in the search)", fraction)
    halving_rate: int = option(
        3, "successive halving: at each rung a trial continues only within the best 1/rate of earlier trials",
        at_least(2))
    prune_margin: float = option(
        0.02, "successive halving: a trial continues past a rung only when its validation loss is below the cutoff by "
        "more than this share (a smaller lead is within what two seeds of one recipe differ by: benchmarks/README.md, "
        "'Rung noise'); 0 = any lead", fraction)
    storage: str | None = option(
        None, "Optuna storage URL shared by workers (postgresql://..., mysql://...); empty = SQLite in the tuning folder")
    study: str | None = option(None, "study name in the storage; empty = the recipe's name")


@dataclass
class UpdateSection:
    """`smalltune update`: what an update trains on and what its regression gate tolerates (docs/update.md)."""

    lr: float | None = option(
        None, "learning rate of update runs; empty = the parent's train.lr times the method's share: a half for full, "
        "partial and hft (benchmarks/README.md, continual updates), else its update/fresh rate ratio (lora 2e-4/1e-3: "
        "a fifth); each version records its rate here, so later updates keep it", positive)
    replay_share: float = option(
        0.3, "share of earlier versions' training examples (stale ones left out) replayed beside the new data, "
        "a seeded sample stratified by category", lambda v: None if 0 <= v <= 1 else f"must be in [0, 1], got {v}")
    general_replay: float = option(
        0.1, "regularize.replay_ratio of update runs whose parent replayed no general text", fraction)
    unlikelihood: float = option(
        1.0, "regularize.unlikelihood of update runs (unless the update is given one): the answers a changed example "
        "replaces are pushed down (benchmarks/README.md, 'The gate instead of the validation ceiling': the new value "
        "preferred on 59-100% of changed questions, retraining 70-89%; without it 4-52%); 0 = off", non_negative)
    forgetting_room: float = option(
        0.0, "room each update has under guards.forgetting_budget beyond what its parent spent: the update's budget is "
        "the larger of the lineage's and the parent's forgetting + this (0.03 = 3 points); 0 = the lineage's budget "
        "only, which an early version may spend for all later ones (docs/update.md)", non_negative)
    changed_repeats: int = option(
        1, "times per epoch an update trains each new example that changes an earlier answer (1 = as often as the "
        "other examples; more weighs the new answer against the old one the parent learned)", positive)
    validation_slack: float | None = option(
        None, "validation loss (nats) an update's checkpoint may lose against its parent and still be chosen and "
        "published; empty = no limit: the regression gate alone judges the version against its parent "
        "(benchmarks/README.md, 'The gate instead of the validation ceiling')", non_negative)
    conflict_similarity: float = option(
        0.9, "prompts this similar (word-shingle Jaccard) ask the same question: different answers conflict and "
        "the new one wins", lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {v}")
    duplicate_similarity: float = option(
        0.8, "near-duplicate and leakage threshold of the new-vs-old audit (as the audit's)",
        lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {v}")
    corrections_test_share: float = option(
        0.2, "share of corrections without a `split` field held out as gate test examples (seeded)", fraction)
    max_loss_rise: float = option(
        0.05, "gate: largest relative rise of answer loss on the parent's or the new test set (0.05 = 5%)", non_negative)
    max_accuracy_drop: float = option(
        0.02, "gate: largest drop of token accuracy on a test set (absolute: 0.02 = 2 points)", non_negative)
    max_recall_drop: float = option(
        0.05, "gate: largest drop of key-fact recall on a test set (absolute)", non_negative)
    max_reference_ppl_rise: float = option(
        0.05, "gate: largest relative rise of general-text perplexity over the parent", non_negative)
    max_general_accuracy_drop: float = option(
        0.03, "gate: largest drop of general-question accuracy (absolute)", non_negative)
    significant_only: bool = option(
        True, "gate: a change beyond its threshold counts only when its 95% paired-bootstrap CI lies wholly on the worse side "
        "of zero (small test sets move by chance)")


@dataclass
class Recipe:
    name: str | None = option(None, "run name; empty = derived from the training file and time")
    output_dir: str | None = option(None, "run directory; empty = runs/<name>")
    model: ModelSection = field(default_factory=ModelSection, metadata={"help": "the base model"})
    data: DataSection = field(default_factory=DataSection, metadata={"help": "data files and tokenisation"})
    method: MethodSection = field(default_factory=MethodSection, metadata={"help": "what gets trained"})
    train: TrainSection = field(default_factory=TrainSection, metadata={"help": "optimisation"})
    early_stopping: EarlyStoppingSection = field(
        default_factory=EarlyStoppingSection, metadata={"help": "stop before overfitting"}
    )
    eval: EvalSection = field(default_factory=EvalSection, metadata={"help": "evaluation during training, and `smalltune evaluate` sample sizes"})
    guards: GuardsSection = field(
        default_factory=GuardsSection, metadata={"help": "training guards: overfitting, over-memorization, forgetting, numerical health"}
    )
    regularize: RegularizeSection = field(
        default_factory=RegularizeSection, metadata={"help": "anti-forgetting regularisers (off by default)"}
    )
    targets: TargetsSection = field(
        default_factory=TargetsSection, metadata={"help": "training-target transforms (off by default)"}
    )
    update: UpdateSection = field(
        default_factory=UpdateSection, metadata={"help": "`smalltune update`: replay and the regression gate"}
    )
    tune: TuneSection = field(
        default_factory=TuneSection, metadata={"help": "forgetting-aware hyperparameter search (`smalltune tune`)"}
    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self, notes: dict[str, str] | None = None, comments: bool = True) -> str:
        """YAML text; each key commented with its help, or with ``notes[key]`` when given (the planner's why)."""
        from .dump import dump

        return dump(self, notes or {}, comments)

    def save(self, path: str | Path, notes: dict[str, str] | None = None) -> None:
        from ..rundir import atomic_write_text

        atomic_write_text(path, self.to_yaml(notes))

