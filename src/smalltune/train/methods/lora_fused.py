"""LoRA's adapted linear layer as one autograd function on CPU: the same math as peft's, fewer passes over memory.

peft computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling``: on CPU each adapter then costs, besides its
two thin matmuls, element-wise passes over tensors as wide as the layer's input or output -- the dropout's
rescaling, the ``* scaling``, the ``+``, and the same again in the backward pass. On a 2-core AMX Xeon, where
fp32 matmuls run near peak, those passes and the dropout made a LoRA step (r=16, dropout 0.1, every linear
layer) as slow as a full fine-tuning step, which does 1.5x the matmul work (benchmarks/README.md, "LoRA as one
function, and attention in fp32 under bf16 autocast": 1.07x per fp32 LoRA step from this function, 1.21x with the
cheaper masks of ``dropout.py``). Here both scalings are applied to the r-wide bottleneck instead, the adapter's
output is added inside the base matmul's result (``addmm_``), and the backward pass is written out: the same
gradients, with the dropout masks drawn as ``BitsDropout`` draws them (same generator, same order), so a run's
losses match peft's forward to float rounding (tests/test_methods.py).

Only the plain case takes this path: one active vanilla adapter (no DoRA, no adapter bias), unmerged, on a
frozen ``nn.Linear`` on CPU, in one dtype or under CPU autocast (every tensor cast to the autocast dtype, as
autocast casts a linear layer's); anything else (GPU, 4-bit bases, several adapters, ``adapter_names``) runs
peft's own forward.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from .dropout import keep_mask


class _LoraLinear(torch.autograd.Function):
    """``x W^T + bias + s * B A drop(x)``, with ``drop`` LoRA's input dropout of rate ``p``."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling: float, p: float):
        flat = x.reshape(-1, x.shape[-1])
        keep = keep_mask(flat.shape, p, x.device) if p > 0 else None  # as BitsDropout draws it
        kept = flat if keep is None else flat * keep
        scale = scaling / (1 - p)  # dropout's rescaling and LoRA's scaling, both on the r-wide bottleneck
        low = (kept @ a.t()).mul_(scale)
        out = torch.nn.functional.linear(flat, weight, bias).addmm_(low, b.t())
        ctx.save_for_backward(weight, a, b, kept, low, keep)
        ctx.scale = scale
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        weight, a, b, kept, low, keep = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        g_low = (g @ b).mul_(ctx.scale)  # the gradient at the bottleneck, scaled as the forward pass scaled it
        grad_a = g_low.t() @ kept if ctx.needs_input_grad[3] else None
        grad_b = g.t() @ low if ctx.needs_input_grad[4] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            if keep is None:
                grad_x = (g @ weight).addmm_(g_low, a)
            else:
                grad_x = (g_low @ a).mul_(keep).add_(g @ weight)
            grad_x = grad_x.view(*grad.shape[:-1], grad_x.shape[-1])
        return grad_x, None, None, grad_a, grad_b, None, None


def _plain_adapter(layer, x, args, kwargs) -> str | None:
    """The one active adapter ``layer`` can run through ``_LoraLinear`` for input ``x``, or None."""
    if args or kwargs or layer.disable_adapters or layer.merged or x.device.type != "cpu":
        return None
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    if len(active) != 1 or active[0] in getattr(layer, "lora_variant", {}):  # DoRA and other variants
        return None
    name = active[0]
    base, a, b = layer.get_base_layer(), layer.lora_A[name], layer.lora_B[name]
    if type(base) is not nn.Linear or b.bias is not None or base.weight.requires_grad:
        return None
    if base.bias is not None and base.bias.requires_grad:
        return None
    if torch.is_autocast_enabled("cpu"):  # every tensor is cast to the autocast dtype, as autocast casts a linear's
        return name if all(t.is_floating_point() for t in (x, base.weight, a.weight, b.weight)) else None
    return name if x.dtype == base.weight.dtype == a.weight.dtype == b.weight.dtype else None


def _forward(self, x, *args, **kwargs):
    name = _plain_adapter(self, x, args, kwargs)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    base, dropout = self.get_base_layer(), self.lora_dropout[name]
    p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
    tensors = (x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight)
    if torch.is_autocast_enabled("cpu"):  # the casts are recorded by autograd: the adapter's gradients come back
        low = torch.get_autocast_dtype("cpu")  # in its own dtype, as under autocast's linear
        tensors = tuple(None if t is None else t.to(low) for t in tensors)
    return _LoraLinear.apply(*tensors, float(self.scaling[name]), float(p))


def fuse_lora(model) -> int:
    """Route every peft LoRA ``Linear`` of ``model`` through ``_LoraLinear`` where it applies (falling back to
    peft's forward call by call); returns how many layers were routed. Weights and saved adapters are untouched."""
    try:
        from peft.tuners.lora import Linear as LoraLinear
    except ImportError:
        return 0
    routed = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.forward = types.MethodType(_forward, module)
            routed += 1
    return routed
