"""Dropout for LoRA's adapter input at a third to a half of the CPU cost of ``torch.nn.Dropout``.

peft puts an ``nn.Dropout`` before every adapter's ``A`` matrix. On CPU, torch draws one double-precision
Bernoulli sample per element through its Mersenne Twister, and keeps a float noise tensor of the input's size
for the backward pass: on the 135M built-in model that made dropout 21% of a LoRA step on an AVX-512 Xeon, ten
times the cost of the ``A`` matmul it feeds (benchmarks/README.md, "Where a step's time goes"). Here one 32-bit draw gives
the coin flips of two elements (15 random bits each), and the backward pass keeps a boolean mask: same
distribution up to ``p`` rounded to a multiple of 1/32768 (0.1 becomes 0.100006), same scaling by
``1 / (1 - p)``, same seeded generator (runs stay reproducible). On CUDA torch's fused dropout is already
cheap, and is used.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LEVELS = 1 << 15  # coin-flip resolution: 15 random bits per element


def drop_mask(shape, p: float, device=None) -> torch.Tensor:
    """A boolean tensor of ``shape``, each element True (dropped) with probability ``p`` (to 1/32768)."""
    n = math.prod(shape)
    # int32 random_() fills [0, 2**31 - 1]: the low 16-bit half is 16 random bits, the high half 15 (its top
    # bit is 0); masking both to 15 bits gives two uniform draws in [0, 32767] per 32-bit draw.
    bits = torch.empty((n + 1) // 2, dtype=torch.int32, device=device).random_()
    halves = bits.view(torch.int16)[:n]
    return (halves & (LEVELS - 1)).lt(round(p * LEVELS)).view(shape)


class _ApplyMask(torch.autograd.Function):
    """``x`` with the masked elements zeroed and the rest scaled; the backward pass keeps only the mask."""

    @staticmethod
    def forward(ctx, x, dropped, scale):
        ctx.save_for_backward(dropped)
        ctx.scale = scale
        return x.masked_fill(dropped, 0).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (dropped,) = ctx.saved_tensors
        return grad.masked_fill(dropped, 0).mul_(ctx.scale), None, None


class BitsDropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on CPU (see the module docstring); identity in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p == 1:
            return torch.zeros_like(x)
        return _ApplyMask.apply(x, drop_mask(x.shape, self.p, x.device), 1.0 / (1.0 - self.p))


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
