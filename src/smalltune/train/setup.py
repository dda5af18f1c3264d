"""Building the parts of a training run, apart from fitting them (``loop.fit``).

Shaped after litgpt's ``setup`` -> ``fit`` and torchtune's recipes: :func:`setup` turns a recipe,
a base model and prepared data into :class:`Parts` (accelerator, method-applied model, optimizer,
scheduler, loader, plugins, selector); nothing here trains. Callers that train many times in one
process (tuning, cross-validation, updates) keep a :class:`Base` and take a fresh copy of the
loaded base model per training instead of reading it from disk again.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from ..data.batching import batch_indices, collate
from ..models import load_from_recipe
from .attention import fp32_attention
from .data import PreparedData
from .guards import GUARDS, CheckpointSelector, build_selector
from .methods import METHODS, Method, count_parameters
from .plugins import PluginSet, build_plugins
from .precision import choose_precision
from .regularize import REGULARIZERS


class EpochBatches(Sampler):
    """Length-grouped shuffled batches, reshuffled per epoch (seed + epoch) so resume is exact.

    The epoch comes from the loop's own state through the prepared loader's ``set_epoch`` (never
    from the loader's iteration counter, which restarts at 0 after a resume).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool):
        self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(batch_indices(self.lengths, self.batch_size, self.seed + self.epoch, self.group))

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


class Base:
    """A base model loaded once, handed out as fresh copies (tuning trials, folds, updates).

    >>> base = Base.load(recipe)
    >>> for trial in trials: train(trial_recipe, base=base)
    """

    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        # Measurements of the untrained model (validation metrics, the forgetting guard's base perplexity),
        # by what they measured: every method starts exactly as the base (LoRA's B, a bottleneck's up-projection
        # are zero; peft measures with its adapter disabled), so trials and folds on the same items share them
        # instead of paying two evaluation passes each.
        self.measured: dict = {}

    def remember(self, key: tuple, measure):
        """``measure()``, once per ``key`` for this base."""
        if key not in self.measured:
            self.measured[key] = measure()
        return self.measured[key]

    @classmethod
    def load(cls, recipe) -> "Base":
        model, tok = load_from_recipe(recipe)
        return cls(model, tok, recipe.model.name)

    def fresh(self):
        """(model, tokenizer): an independent copy, so one training never sees another's weights."""
        return copy.deepcopy(self.model), self.tokenizer


def items_key(items) -> str:
    """A fingerprint of tokenised items (ids and labels): the same items measured the same way give one value."""
    import hashlib

    h = hashlib.sha256()
    for item in items:
        h.update(repr((item.input_ids, item.labels)).encode())
    return h.hexdigest()[:16]


def resolve_precision(precision: str, recipe=None) -> str:
    """accelerate's mixed_precision for ``train.precision``, as :func:`~.precision.choose_precision` decides:
    explicit values as they are; auto = bf16 on a GPU that has it, else fp16 with a loss scaler (accelerate
    adds it); on a CPU bf16 autocast only where it measured clearly faster at ``recipe``'s model and batch
    shapes, else fp32 (also without a recipe to measure).

    >>> resolve_precision("fp32")
    'no'
    """
    chosen = choose_precision(precision, recipe).precision
    return {"fp32": "no"}.get(chosen, chosen)


def make_accelerator(recipe):
    """An Accelerator for this recipe; resets accelerate's process-wide state when the precision changes.

    accelerate keeps one ``AcceleratorState`` per process and refuses a second Accelerator with
    another precision; a tuning search trains several precisions in one process, so we reset that
    state (not the distributed ``PartialState``, which stays valid).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    precision = resolve_precision(recipe.train.precision, recipe)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", precision) != precision:
        AcceleratorState._reset_state()
    # Trackers (train.report_to) are started by the tracking plugin once the run directory exists; a
    # directory is needed here already (accelerate checks it), the plugin points it into the run.
    trackers = list(recipe.train.report_to) or None
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=recipe.train.grad_accum,
                       log_with=trackers, project_dir=f"{recipe.output_dir or '.'}/trackers" if trackers else None)


def build_optimizer(model, t) -> torch.optim.Optimizer:
    # No weight decay on biases and norm weights (1-D tensors), as is standard for AdamW.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over every tensor instead of PyTorch's per-tensor Python loop (its CPU default). For
    # the 135M model's 272 tensors on 1 CPU thread a step took 0.21 s instead of 0.73 s, the weights equal to
    # 3e-8 (benchmarks/optimizer_step.py); CUDA, MPS and XPU have the kernel too.
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr, fused=True)


def build_scheduler(optimizer, t, total_steps: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(t.scheduler, t.scheduler)
    return get_scheduler(name, optimizer, num_warmup_steps=round(t.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


def start_from(model, artifact) -> None:
    """Load a finished run's trained weights (its ``adapter/`` or ``model/`` folder) into ``model``, to
    which the same method has just been applied: a PEFT adapter's tensors, or the model's own weights.

    Every trainable tensor must come from the artifact (another rank or method is refused), so the
    started model computes exactly the artifact's logits before its first step.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    from ..errors import SmalltuneError

    path = Path(artifact)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        raise SmalltuneError(f"{path}: no trained weights (*.safetensors) to start from")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    try:
        if hasattr(model, "peft_config"):  # peft stores tensors without the adapter's name
            from peft import set_peft_model_state_dict

            if not (path / "adapter_model.safetensors").exists():
                raise SmalltuneError(f"{path}: its weights do not fit this model and method (no PEFT adapter: "
                                     f"adapter_model.safetensors is missing)")
            result = set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
        else:
            result = model.load_state_dict({k: v for f in files for k, v in load_file(str(f)).items()}, strict=False)
    except RuntimeError as e:  # a shape mismatch: another rank, size or model
        raise SmalltuneError(f"{path}: its weights do not fit this model and method "
                             f"({str(e).splitlines()[0][:160]})") from None
    missing = set(result.missing_keys)
    wrong = list(result.unexpected_keys) + [n for n in trainable if n in missing]
    if wrong:
        raise SmalltuneError(f"{path}: its weights do not fit this model and method ({wrong[0]} "
                             f"{'is not in the model' if result.unexpected_keys else 'is missing from the artifact'})")


def keep_base(model) -> dict[str, torch.Tensor] | None:
    """Host copies of ``model``'s trainable tensors while it is still the base, for :func:`base_view` once a
    parent's weights replace them; None for a PEFT model (disabling its adapter shows the base)."""
    if hasattr(model, "peft_config"):
        return None
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def base_view(model, kept: dict | None):
    """``model`` computing as the base model inside the context: its PEFT adapter disabled, or the base's values
    of ``kept`` swapped in and put back after (an update of a full model), or as it is (a run from the base,
    before its first step).

    The swap holds a second copy of the trainable weights on the device for one pass, before the optimizer
    allocates its state (Adam: two more copies), so it does not raise the run's peak memory."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
        return
    params = dict(model.named_parameters())
    started = {}
    try:
        with torch.no_grad():
            for name, value in (kept or {}).items():
                started[name] = params[name].data
                params[name].data = value.to(started[name].device, started[name].dtype)
        yield model
    finally:
        for name, value in started.items():
            params[name].data = value


@dataclass
class Parts:
    """Everything ``fit`` needs, built and prepared; ``model`` is the accelerate-wrapped model."""

    recipe: Any
    accelerator: Any
    model: Any
    tokenizer: Any
    method: Method
    optimizer: Any
    scheduler: Any
    loader: Any
    plugins: PluginSet  # regularisers and guards, in order
    selector: CheckpointSelector
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    trainable: int
    total: int
    base_weights: dict | None = None  # keep_base(): the base's tensors a parent's weights replaced (an update)
    started_from: str | None = None  # the parent's artifact the weights started from (an update), else the base

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)


def setup(recipe, model, tokenizer, data: PreparedData, accelerator=None, extra_plugins=(),
          init_from: str | None = None) -> Parts:
    """Apply the method to ``model`` (the base) and build everything around it; trains nothing.

    >>> parts = setup(recipe, model, tok, prepare_data(recipe, tok, model))
    >>> result = fit(parts, data, run)

    ``extra_plugins`` join the recipe's plugins (a tuning search adds its pruner this way).
    ``init_from`` (the ``adapter/`` or ``model/`` folder of a finished run) starts from that run's trained
    weights instead of the method's initialisation (``smalltune update``).
    """
    t = recipe.train
    accelerator = accelerator or make_accelerator(recipe)
    method = METHODS.get(recipe.method.name, "method.name")()
    if accelerator.mixed_precision != "no" and accelerator.device.type == "cpu":
        fp32_attention(model)  # torch's CPU flash attention is 3x slower in bf16 (train/attention.py)
    model = method.apply(model, recipe.method, recipe)
    plugins = build_plugins(recipe, REGULARIZERS, GUARDS)
    plugins += sorted(extra_plugins, key=lambda x: x.order)  # the caller's own (tuning's pruner)
    plugins.sort(key=lambda x: x.order)
    kept = None
    if init_from:
        # what a plugin measures on the base (the forgetting budget) is counted from it, not the parent (base_view)
        kept = keep_base(model) if any(x.needs_base for x in plugins) else None
        start_from(model, init_from)
    if t.compile:  # after the weights are in place; the state dict keeps its names (train/compile.py)
        from .compile import compile_layers

        compile_layers(model, accelerator.device)
    trainable, total = count_parameters(model)
    sampler = EpochBatches([len(x) for x in data.train], t.batch_size, t.seed, t.group_by_length)
    # Its own generator: creating an iterator must not draw from the global RNG (dropout's), or a
    # resumed run would see different dropout masks than an uninterrupted one.
    loader = DataLoader(data.train, batch_sampler=sampler, collate_fn=lambda b: collate(b, tokenizer.pad_token_id),
                        generator=torch.Generator().manual_seed(t.seed))
    optimizer = build_optimizer(model, t)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    # Per process: the prepared loader holds this rank's share of the batches.
    steps_per_epoch = max(1, math.ceil(len(loader) / t.grad_accum))
    total_steps = math.ceil(t.epochs * steps_per_epoch)
    if t.max_steps:
        total_steps = min(total_steps, t.max_steps)
    # Not prepared: accelerate's scheduler wrapper steps once per process, which ran the cosine
    # out N times too fast under N ranks; the loop steps it once per optimizer step.
    scheduler = build_scheduler(optimizer.optimizer, t, total_steps)
    eval_every = recipe.eval.every_steps or max(1, steps_per_epoch // recipe.eval.per_epoch)
    return Parts(recipe, accelerator, model, tokenizer, method, optimizer, scheduler, loader, plugins,
                 build_selector(recipe), steps_per_epoch, total_steps, eval_every, trainable, total, kept, init_from)
