"""Fine-tuning methods: one registry, one plugin shape, and each method owns what is known about it.

A method turns a base model into something trainable (``apply``), says which tensors a
checkpoint must keep (``trainable_state``), and saves / reloads its final artifact. The training
loop only ever talks to this interface, so adding a method is adding one plugin file.

Everything else smalltune knows about a method lives on its class too, so nothing repeats it:

* ``keys``: the ``method.*`` recipe keys it reads (each documented once, in ``recipe/sections.py``);
* ``rate``: its default learning rates, fresh and ``--update``, with their source (the planner's);
* ``trainable_params`` / ``optimizer_params`` / ``layer_activations``: what the memory estimate
  (``plan/memory.py``) needs, from the model's shape alone;
* ``frozen_base``: whether the base weights stay frozen (an adapter) or train;
* ``weight_deltas``: the effective update of each base weight, for EWC (``regularize/ewc.py``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from ...registry import Registry

LARGE_MODEL = 30e9  # parameters; a method's ``rate.large_model_factor`` applies from here on
SMALL_MODEL = 1e9  # parameters; a method's ``rate.small_model_factor`` applies below this


@dataclass(frozen=True)
class Rate:
    """Default peak learning rates of a method, with where they come from (printed by ``plan --explain``)."""

    lr: float
    update_lr: float  # incremental training of an already fine-tuned model (``plan --update``)
    source: str
    large_model_factor: float = 1.0  # multiplier for models of LARGE_MODEL parameters or more
    small_model_factor: float = 1.0  # multiplier for models under SMALL_MODEL parameters (fresh rate only)
    # `smalltune update`'s rate as a share of the parent's: its forgetting budget counts from the base model for the
    # whole lineage, so it bounds what update_lr's low rates protect; None = update_lr / lr (not measured otherwise)
    update_share: float | None = None


@dataclass
class WeightDelta:
    """The effective update a method makes to one base weight (EWC penalises it against that weight's Fisher)."""

    name: str
    base: torch.nn.Parameter  # the frozen base weight the update applies to
    delta: Callable[[], torch.Tensor]  # the current update, same shape as ``base``
    params: tuple  # the trainable tensors the update is made of (not penalised separately)


class Method:
    """Base plugin: subclasses override ``apply``, ``save`` and ``load``, and declare what they know."""

    artifact = "adapter"  # folder name of the final artifact inside the run directory
    keys: tuple[str, ...] = ()  # method.* recipe keys this method reads, besides method.name
    rate: Rate  # default learning rates; every registered method sets one
    frozen_base = True  # the base weights stay frozen; the artifact holds only the method's new tensors
    supports_4bit = False  # trains on a base loaded in 4 bits (model.load_in_4bit, QLoRA)

    # --- what the planner needs, from a model's shape (plan.memory.ModelShape) alone -------------
    def trainable_params(self, shape, cfg) -> tuple[int, int]:
        """(trainable, new) parameter counts for method section ``cfg``: ``new`` are tensors the method
        adds to the model (adapters), which also count as weights."""
        raise NotImplementedError

    def optimizer_params(self, shape, cfg) -> int:
        """Parameters that get AdamW states over the run (default: the trainable ones)."""
        return self.trainable_params(shape, cfg)[0]

    def state_params(self, shape, cfg) -> int:
        """Parameters :meth:`trainable_state` holds: a best-model snapshot's size (default: the trainable ones)."""
        return self.trainable_params(shape, cfg)[0]

    def layer_activations(self, shape, cfg, device: str) -> float:
        """fp32-equivalent elements per token one decoder layer keeps for backward *beyond* the frozen
        block's own (``plan.memory.layer_activations``). Default, for an adapter inserted in a frozen
        base: a hidden-sized input per inserted module (bottleneck, ia3, prefix)."""
        return 2 * shape.hidden

    # --- what regularisers need ------------------------------------------------------------------
    def weight_deltas(self, model) -> list[WeightDelta]:
        """Base weights this method updates through a closed-form delta (LoRA: ``B @ A * scale``).
        Trainable tensors not listed here are their own update (default: none listed)."""
        return []

    # --- recipe ------------------------------------------------------------------------------------
    def ignored_keys(self, cfg) -> list[str]:
        """``method.*`` keys set away from their default that this method does not read."""
        out = []
        for f in dataclasses.fields(cfg):
            key = f"method.{f.name}"
            if key == "method.name" or key in self.keys:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if getattr(cfg, f.name) != default:
                out.append(key)
        return out

    def apply(self, model, cfg, recipe=None):
        """Return the model ready to train (frozen base, trainable parts) for method section ``cfg``."""
        raise NotImplementedError

    def problems(self, cfg) -> list[str]:
        """Recipe problems specific to this method (checked with the rest of the recipe, before any loading)."""
        return []

    def on_epoch_start(self, model, epoch: int, seed: int) -> None:
        """Called by the loop at the start of every epoch (also a resumed one); HFT redraws its mask here."""

    def trainable_state(self, model) -> dict[str, torch.Tensor]:
        """Tensors a checkpoint needs to restore training progress (default: all trainable ones)."""
        return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}

    def load_trainable_state(self, model, state: dict[str, torch.Tensor]) -> None:
        params = dict(model.named_parameters())
        missing = [n for n in state if n not in params]
        if missing:
            raise RuntimeError(f"checkpoint holds tensors the model lacks: {missing[:3]}")
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))

    def save_state(self, model, path: Path) -> None:
        save_file({k: v.contiguous() for k, v in self.trainable_state(model).items()}, str(path))

    def load_state(self, model, path: Path) -> None:
        self.load_trainable_state(model, load_file(str(path)))

    def save(self, model, path: Path) -> None:
        """Write the final artifact to ``path`` (a folder)."""
        raise NotImplementedError

    def load(self, base_model, path: Path):
        """Return ``base_model`` with the artifact at ``path`` applied, in eval mode."""
        raise NotImplementedError


METHODS: Registry[type[Method]] = Registry("method")  # holds classes; instantiate per run


def methods_using(key: str) -> list[str]:
    """Registered methods that read recipe key ``key``.

    >>> methods_using("method.r")
    ['lora', 'dora']
    """
    return [name for name, cls in METHODS.items() if key in cls.keys]


_warned: set[str] = set()


def warn_ignored_keys(cfg) -> list[str]:
    """Warn once per process (on the main rank) about method keys the chosen method ignores; return the lines."""
    if cfg.name not in METHODS:
        return []
    lines = []
    for key in METHODS.get(cfg.name)().ignored_keys(cfg):
        users = methods_using(key)
        lines.append(f"{key} is set but method.name {cfg.name} does not read it"
                     + (f" (read by {', '.join(users)})" if users else ""))
    fresh = [line for line in lines if line not in _warned]
    if fresh and os.environ.get("RANK", "0") == "0":
        from ... import console

        for line in fresh:
            console.warn(line)
    _warned.update(fresh)
    return lines


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# Plugins register themselves on import; this is the one place that imports them.
from . import bottleneck, full, partial, peft_methods  # noqa: E402,F401
