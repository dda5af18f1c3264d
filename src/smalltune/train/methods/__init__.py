"""Fine-tuning methods: one registry, one plugin shape.

A method turns a base model into something trainable (``apply``), says which tensors a
checkpoint must keep (``trainable_state``), and saves / reloads its final artifact. The training
loop only ever talks to this interface, so adding a method is adding one plugin file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...registry import Registry


class Method:
    """Base plugin: subclasses override ``apply``, ``save`` and ``load``."""

    artifact = "adapter"  # folder name of the final artifact inside the run directory

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


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# Plugins register themselves on import; this is the one place that imports them.
from . import bottleneck, full, partial, peft_methods  # noqa: E402,F401
