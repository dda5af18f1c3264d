"""How one micro-batch turns into gradients: plain backward, or Sharpness-Aware Minimization.

Foret et al. 2020, "Sharpness-Aware Minimization for Efficiently Improving Generalization"
(arXiv 2010.01412), used against forgetting by arXiv 2406.04836: take the gradient ``g`` at the
weights ``w``, step to ``w + rho * g / ||g||`` (the locally worst point within radius rho), take the
gradient there, return to ``w`` and let the base optimizer step with that second gradient. Flat
minima found this way move general ability less.

The perturbation is computed per micro-batch ("m-sharpness" in the paper, which found small m works
as well or better), so gradient accumulation and ``accelerate`` keep working unchanged: gradients
already accumulated from earlier micro-batches are set aside during the two passes and added back.
No maintained PyTorch library ships SAM as a step for an arbitrary optimizer, hence this module.
"""

from __future__ import annotations

from typing import Callable

import torch

from . import REGULARIZERS, Regularizer

Objective = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # () -> (task loss, total loss to minimise)


class PlainStep:
    """One forward and backward pass."""

    def __init__(self, accelerator, params: list[torch.nn.Parameter]):
        self.accelerator, self.params = accelerator, params

    def __call__(self, objective: Objective):
        task, total = objective()
        self.accelerator.backward(total)
        return task, total


class SAMStep(PlainStep):
    """Two passes: gradient at ``w``, then the gradient at ``w + rho * g / ||g||`` is what the optimizer uses.

    >>> step = SAMStep(accelerator, trainable, rho=0.05)
    >>> task, total = step(objective); optimizer.step()
    """

    def __init__(self, accelerator, params, rho: float):
        super().__init__(accelerator, params)
        self.rho = rho

    def __call__(self, objective: Objective):
        params = [p for p in self.params if p.requires_grad]
        earlier = [p.grad for p in params]  # accumulated from earlier micro-batches (or None)
        for p in params:
            p.grad = None
        task, total = objective()
        self.accelerator.backward(total)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        norm = torch.norm(torch.stack([g.detach().float().norm() for g in grads]))
        scale = self.rho / (norm + 1e-12)
        with torch.no_grad():
            originals = [p.detach().clone() for p in params]  # restored by copy: w + e - e may not be w
            for p, g in zip(params, grads):
                p.add_((g.float() * scale).to(p.dtype))
        for p in params:
            p.grad = None
        _, perturbed = objective()
        self.accelerator.backward(perturbed)
        with torch.no_grad():
            for p, w, old in zip(params, originals, earlier):
                p.copy_(w)
                if old is not None:
                    p.grad = old if p.grad is None else p.grad + old
        return task, total


@REGULARIZERS.register("sam")
class SAM(Regularizer):
    """``regularize.sam_rho``: replace the plain step with SAM's two passes."""

    name = "sam"
    keys = ("regularize.sam_rho",)

    def __init__(self, rho: float = 0.05):
        self.rho = rho

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.regularize.sam_rho > 0

    @classmethod
    def from_recipe(cls, recipe):
        return cls(recipe.regularize.sam_rho)

    def setup(self, env) -> dict:
        return {"sam_rho": self.rho}

    def wrap_step(self, step: PlainStep) -> PlainStep:
        return SAMStep(step.accelerator, step.params, self.rho)

    def state_dict(self) -> dict:
        return {}
