"""Dropout for LoRA's adapter input, several times cheaper on CPU than ``torch.nn.Dropout``.

peft puts an ``nn.Dropout`` before every adapter's ``A`` matrix. On CPU, torch draws one double-precision
Bernoulli sample per element through its Mersenne Twister, and keeps a float noise tensor of the input's size
for the backward pass: on the 135M built-in model that made dropout 21% of a LoRA step on an AVX-512 Xeon, ten
times the cost of the ``A`` matmul it feeds (benchmarks/README.md, "Where a step's time goes"). Here the coin
flips come from numpy's SFC64 generator, 16 random bits per element (four per 64-bit draw), seeded per call by
one draw of torch's generator (so ``torch.manual_seed`` and a resumed run's restored generator state make the
masks reproducible), and the mask is a ``uint8`` tensor of ones and zeros: multiplying by it is one vectorised
pass, where ``masked_fill`` with a boolean mask and boolean-to-float conversion are not vectorised on CPU (5x and
4x slower on a 2-core AMX Xeon; benchmarks/README.md, "LoRA as one function, ..."). Same distribution up to ``p``
rounded to a multiple of 1/65536 (0.1 becomes 0.100006), same scaling by ``1 / (1 - p)``. On CUDA torch's fused
dropout is already cheap, and is used.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

LEVELS = 1 << 16  # coin-flip resolution: 16 random bits per element


@torch.compiler.disable  # drawn eagerly under train.compile too: the same masks as an eager run (tests/test_compile.py)
def keep_mask(shape, p: float, device=None) -> torch.Tensor:
    """A ``uint8`` tensor of ``shape``: 0 (dropped) with probability ``p`` (to 1/65536), else 1."""
    n = math.prod(shape)
    seed = int(torch.randint(0, 1 << 62, (1,)))  # one draw of torch's generator seeds this call's bits
    bits = np.random.SFC64(seed).random_raw((n + 3) // 4).view(np.uint16)[:n]
    keep = torch.from_numpy((bits >= round(p * LEVELS)).view(np.uint8)).view(shape)
    return keep if device is None else keep.to(device)


class _ApplyMask(torch.autograd.Function):
    """``x`` with the dropped elements zeroed and the rest scaled; the backward pass keeps only the mask."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return (x * keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None, None


class BitsDropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on CPU (see the module docstring); identity in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p == 1:
            return torch.zeros_like(x)
        return _ApplyMask.apply(x, keep_mask(x.shape, self.p, x.device), 1.0 / (1.0 - self.p))


def use_bits_dropout(model) -> int:
    """Replace the ``nn.Dropout`` in front of every LoRA adapter of ``model``; returns how many were replaced."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, d in dropouts.items():
            if type(d) is nn.Dropout and d.p > 0:
                new = BitsDropout(d.p)
                new.train(d.training)
                dropouts[name] = new
                replaced += 1
    return replaced
