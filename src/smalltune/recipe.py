"""The recipe: one YAML file that carries everything a run needs.

Each field is defined and documented exactly once, here, through :func:`option`; the CLI help
(``smalltune recipe --explain``), the comments in written YAML and the validation errors all read
that one definition. Validation collects every problem before reporting, and names the key the
user typed (``train.lr must be > 0, got -1``).

>>> r = load_recipe("recipe.yaml", overrides=["train.lr=1e-4"])
>>> r.train.lr
0.0001
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import RecipeError, SmalltuneError

Check = Callable[[Any], "str | None"]


def option(default: Any, help: str, check: Check | None = None, choices: tuple | None = None):
    """A recipe field: its default, its one-line documentation and its validation."""
    meta = {"help": help, "check": check, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# --- checks: each returns the tail of an error message, or None when the value is fine -------
def _shown(v) -> str:
    """A value as the user typed it: -1, not -1.0."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def positive(v):
    return None if v is None or v > 0 else f"must be > 0, got {_shown(v)}"


def non_negative(v):
    return None if v is None or v >= 0 else f"must be >= 0, got {_shown(v)}"


def fraction(v):
    return None if v is None or 0 <= v < 1 else f"must be in [0, 1), got {_shown(v)}"


def at_least(lo):
    def check(v):
        return None if v is None or v >= lo else f"must be >= {lo}, got {_shown(v)}"

    return check


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
        "auto", "fp32, bf16 or fp16 autocast; auto = bf16 on a GPU that supports it, else fp32",
        choices=("auto", "fp32", "bf16", "fp16"),
    )
    group_by_length: bool = option(True, "batch examples of similar length together (less padding, faster)")
    keep_checkpoints: int = option(2, "periodic checkpoints kept besides the best one (for --resume)", non_negative)
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
    lr_factor: float = option(
        8.0, "learning rates are drawn log-uniformly in [prior / f, prior * f] around each method's prior (8 lets "
        "full fine-tuning's 2e-5 prior reach 1.6e-4, where experiment 1 found it learned best)", at_least(1.0))
    replay_max: float = option(0.3, "largest replay share a trial may draw (0 = no replay in the search)", fraction)
    halving_rate: int = option(
        3, "successive halving: at each rung a trial continues only within the best 1/rate of earlier trials",
        at_least(2))
    storage: str | None = option(
        None, "Optuna storage URL shared by workers (postgresql://..., mysql://...); empty = SQLite in the tuning folder")
    study: str | None = option(None, "study name in the storage; empty = the recipe's name")


@dataclass
class UpdateSection:
    """`smalltune update`: what an update trains on and what its regression gate tolerates (docs/update.md)."""

    lr: float | None = option(
        None, "learning rate of update runs; empty = the parent's train.lr times the method's update/fresh rate "
        "ratio (lora 5e-5/2e-4: a quarter)", positive)
    replay_share: float = option(
        0.3, "share of earlier versions' training examples (stale ones left out) replayed beside the new data, "
        "a seeded sample stratified by category", lambda v: None if 0 <= v <= 1 else f"must be in [0, 1], got {v}")
    general_replay: float = option(
        0.1, "regularize.replay_ratio of update runs whose parent replayed no general text", fraction)
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
        return _dump(self, notes or {}, comments)

    def save(self, path: str | Path, notes: dict[str, str] | None = None) -> None:
        from .rundir import atomic_write_text

        atomic_write_text(path, self.to_yaml(notes))


# --- loading and validation -----------------------------------------------------------------
MAX_YAML_VALUES = 10_000  # values a recipe may hold once aliases are expanded (a real one has ~100)
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4


def _r(value: Any, limit: int = 100) -> str:
    """repr of a user value, bounded: an error line must stay one short line whatever the value."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses recursive aliases and documents whose aliases expand past
    :data:`MAX_YAML_VALUES` values (an "alias bomb": a few lines that grow to gigabytes once a
    value is copied or printed), before anything is constructed."""

    def construct_document(self, node):
        _check_expansion(node)
        return super().construct_document(node)


def _check_expansion(root) -> None:
    size: dict[int, int] = {}  # node id -> values it expands to (memoised: shared nodes count per use)
    stack, active = [(root, False)], set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.ScalarNode):
            size[key] = 1
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        if done:
            active.discard(key)
            size[key] = min(1 + sum(size[id(c)] for c in children), MAX_YAML_VALUES + 1)
            if size[key] > MAX_YAML_VALUES:
                raise yaml.YAMLError(f"aliases expand to more than {MAX_YAML_VALUES:,} values "
                                     f"(line {node.start_mark.line + 1}); a recipe needs far fewer")
            continue
        if key in size:
            continue
        if key in active:
            raise yaml.YAMLError(f"an alias refers to its own anchor (line {node.start_mark.line + 1})")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _yaml_load(text: str) -> Any:
    """Parse YAML like ``yaml.safe_load``, bounded; any failure is a ``yaml.YAMLError``."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        raise
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as e:  # pyyaml's constructors on odd scalars (2001-13-40)
        raise yaml.YAMLError(f"unreadable value: {e}") from None


def _is_section(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> tuple[Any, str | None]:
    """Convert a YAML value to the field's type; return (value, error)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None, None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            v, err = _coerce(value, arg, key)
            if err is None:
                return v, None
            errors.append(err)
        return value, errors[0]
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return value, f"{key} must be a list, got {_r(value)}"
        return value, None if all(isinstance(v, str) for v in value) else f"{key} must be a list of strings"
    if tp is bool:
        return (value, None) if isinstance(value, bool) else (value, f"{key} must be true or false, got {_r(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or int(value) != value:
            return value, f"{key} must be an integer, got {_r(value)}"
        return int(value), None
    if tp is float:
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                return value, f"{key} must be a number, got {_r(value)}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"{key} must be a number, got {_r(value)}"
        if not math.isfinite(value):
            return value, f"{key} must be a finite number, got {_r(value)}"
        return float(value), None
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return value, f"{key} must be a string, got {_r(value)}"
        return str(value), None
    if tp is dict or origin is dict:
        return (value, None) if isinstance(value, dict) else (value, f"{key} must be a mapping, got {_r(value)}")
    return value, None


def _build(cls, raw: dict, prefix: str, problems: list[str]):
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or 'recipe'} must be a mapping, got {_r(raw)}")
        return cls()
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            problems.append(f"unknown key {full if full.isprintable() and len(full) <= 80 else _r(full)}{hint}")
            continue
        tp = hints[key]
        if _is_section(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{full}.", problems)
            continue
        value, err = _coerce(value, tp, full)
        if err:
            problems.append(err)
            continue
        kwargs[key] = value
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            continue
        value = getattr(obj, f.name)
        choices, check = f.metadata.get("choices"), f.metadata.get("check")
        if choices and value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{prefix}{f.name} must be one of {', '.join(map(str, choices))}, got {_r(value)}{hint}")
        elif check and (msg := check(value)):
            problems.append(f"{prefix}{f.name} {msg}")
    return obj


def _cross_checks(r: Recipe, problems: list[str]) -> None:
    """Rules that involve more than one field, or a registry."""
    from .train.methods import METHODS

    if not r.data.train:
        problems.append("data.train is required (path to the training file)")
    if r.method.name not in METHODS:
        problems.append(METHODS.unknown_message(r.method.name, "method.name"))
    else:
        problems.extend(METHODS.get(r.method.name)().problems(r.method))
        if r.model.load_in_4bit and not METHODS.get(r.method.name).supports_4bit:
            able = ", ".join(name for name, cls in METHODS.items() if cls.supports_4bit)
            problems.append(f"model.load_in_4bit needs a method that trains an adapter on a frozen 4-bit base "
                            f"({able}); method.name is {r.method.name}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=1e-4`` -> (['train', 'lr'], 1e-4); the value is parsed as YAML."""
    if "=" not in text:
        raise RecipeError([f"override {text!r} must look like key=value (e.g. train.lr=1e-4)"])
    key, _, value = text.partition("=")
    try:
        parsed = _yaml_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError([f"override {text!r}: {part} is not a section"])
        node[path[-1]] = value
    return raw


def recipe_from_dict(raw: dict, overrides: list[str] = (), source: str | None = None) -> Recipe:
    """Validate a plain mapping (as read from YAML) into a :class:`Recipe`, reporting all problems at once."""
    raw = apply_overrides(dict(raw or {}), list(overrides))
    problems: list[str] = []
    recipe = _build(Recipe, raw, "", problems)
    if not problems:
        _cross_checks(recipe, problems)
    if problems:
        raise RecipeError(problems, source)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read and validate a recipe YAML file; relative data paths resolve against the recipe's folder."""
    path = Path(path)
    if path.is_dir():
        raise SmalltuneError(f"{path}: is a directory, expected a recipe YAML file")
    if not path.is_file():
        raise SmalltuneError(f"{path}: recipe file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SmalltuneError(f"{path}: not UTF-8 text (byte {data[e.start]:#x} on line {line}); "
                             "save the recipe as UTF-8") from None
    try:
        raw = _yaml_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())[:200]
        raise SmalltuneError(f"{path}{line}: not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise SmalltuneError(f"{path}: a recipe must be a YAML mapping of sections")
    recipe = recipe_from_dict(raw, overrides, source=str(path))
    _resolve_paths(recipe, path.parent)
    from .train.methods import warn_ignored_keys

    warn_ignored_keys(recipe.method)  # e.g. method.r set while method.name is ia3: a warning, not an error
    return recipe


FILE_KEYS = (("data", "train"), ("data", "validation"), ("data", "test"), ("regularize", "replay_file"))


def _resolve_paths(recipe: Recipe, base: Path) -> None:
    for section, key in FILE_KEYS:
        value = getattr(getattr(recipe, section), key)
        if value and not Path(value).is_absolute() and (base / value).exists():
            setattr(getattr(recipe, section), key, str((base / value).resolve()))


def file_problems(recipe: Recipe) -> list[str]:
    """What is wrong with the files a valid recipe names: data files missing, folders, of an unknown
    type; a local model folder missing or without config.json / safetensors weights. Reads no data.

    >>> file_problems(load_recipe("recipe.yaml"))
    ['data.train: data/train.jsonl: file not found']
    """
    from .data.readers import file_format
    from .models import BUILTIN_MODELS, check_weights, resolve

    problems = []
    for section, key in FILE_KEYS:
        value = getattr(getattr(recipe, section), key)
        if value:
            try:
                file_format(Path(value))
            except SmalltuneError as e:
                problems.append(f"{section}.{key}: {e}")
    name = recipe.model.name
    if name not in BUILTIN_MODELS and (Path(name).expanduser().exists() or name.startswith((".", "/", "~"))):
        try:
            check_weights(Path(resolve(name)))
        except SmalltuneError as e:
            problems.append(str(e))
    return problems


# --- documentation: one table built from the field definitions ------------------------------
def iter_fields(cls=Recipe, prefix: str = ""):
    """Yield (dotted key, type, default, help, choices) for every leaf field, in schema order."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_section(tp):
            yield from iter_fields(tp, f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            key = f"{prefix}{f.name}"
            yield key, tp, default, field_help(key, f.metadata.get("help", "")), f.metadata.get("choices")


def field_help(key: str, text: str) -> str:
    """A field's help; a ``method.*`` key also names the methods that read it (each method declares its keys).

    >>> field_help("method.r", "rank: size of the low-rank update")
    'lora, dora: rank: size of the low-rank update'
    """
    if not key.startswith("method.") or key == "method.name":
        return text
    from .train.methods import methods_using

    return f"{', '.join(methods_using(key)) or 'no method'}: {text}"


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").removesuffix("...").strip() if value is not None else ""


def _dump(obj, notes: dict[str, str], comments: bool, prefix: str = "", indent: int = 0) -> str:
    lines: list[str] = []
    hints = _hints(type(obj))
    pad = "  " * indent
    for f in dataclasses.fields(obj):
        key = f"{prefix}{f.name}"
        value = getattr(obj, f.name)
        note = notes.get(key) or field_help(key, f.metadata.get("help", ""))
        if _is_section(hints[f.name]):
            if comments and indent == 0:
                lines.append("")
                lines.append(f"# {note}" if note else "")
            lines.append(f"{pad}{f.name}:")
            lines.append(_dump(value, notes, comments, f"{key}.", indent + 1))
        else:
            text = f"{pad}{f.name}: {_yaml_scalar(value)}".rstrip()
            if comments and note:
                text = f"{text}  # {note}"
            lines.append(text)
    return "\n".join(line for line in lines if line is not None) + ("\n" if indent == 0 else "")
