"""Attention in fp32 while the rest of a CPU training step runs under bf16 autocast.

Under CPU autocast torch runs ``scaled_dot_product_attention`` in bf16, and its CPU flash-attention kernel is
slower in bf16 than in fp32 at a small model's shapes: forward and backward of one layer's attention (8 rows of
68 tokens, 9 heads of 64) took 9.8 ms in bf16 against 3.1 ms in fp32 on a 2-core AMX Xeon, and bf16 attention
was 18% of a bf16 LoRA step there. Attention has no weights, so computing it in fp32 costs only the casts of
its inputs: a bf16 full fine-tuning step ran 1.17x faster with it (benchmarks/README.md, "LoRA as one function, and
attention in fp32 under bf16 autocast"). The matmuls of the projections stay in bf16.

transformers lets a model use a registered attention function by name (``AttentionInterface``, with the
mask format of ``AttentionMaskInterface``); this one is transformers' own SDPA function with autocast off and
fp32 inputs on a CPU under autocast, and exactly that function anywhere else.
"""

from __future__ import annotations

import torch

NAME = "sdpa_fp32_on_cpu"


def _attention(module, query, key, value, attention_mask, *args, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                          *args, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)


def fp32_attention(model) -> bool:
    """Switch ``model`` (a transformers model using SDPA attention) to :data:`NAME`; False when it uses another
    attention (eager, flash, a model's own), which is left as it is."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if getattr(getattr(model, "config", None), "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True
