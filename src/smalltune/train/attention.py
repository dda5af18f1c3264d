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

Its mask (:func:`causal_unless_padded_left`) also lets a right-padded batch run SDPA's causal kernel. Training and
loss passes pad on the right (``data.batching.collate``), and transformers passes SDPA an explicit mask whenever a
row has padding; with a mask the CPU flash kernel computes every query against every key, where with
``is_causal`` it skips the upper triangle. For right padding the two agree wherever it matters: a real token sees
only positions before it, all real, so its output is the same; only padded positions, which carry no label, see
other keys.
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
    from transformers.masking_utils import AttentionMaskInterface

    if getattr(getattr(model, "config", None), "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, causal_unless_padded_left)
    model.set_attn_implementation(NAME)
    return True


def causal_unless_padded_left(**kwargs):
    """transformers' SDPA mask, or None (SDPA's ``is_causal``) for a plain causal pass over a right-padded batch:
    no KV cache (queries are all keys, from position 0), no sliding window or other mask function, every row's
    padding at its end."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    mask = kwargs.get("attention_mask")
    offsets = (kwargs.get("q_offset", 0), kwargs.get("kv_offset", 0))
    plain = (kwargs.get("allow_is_causal_skip", True) and kwargs.get("mask_function") is causal_mask_function
             and kwargs.get("local_size") is None and all(isinstance(o, int) and o == 0 for o in offsets)
             and kwargs.get("q_length") == kwargs.get("kv_length"))
    if plain and mask is not None and mask.dim() == 2 and mask.shape[-1] == kwargs["kv_length"] and right_padded(mask):
        return None
    return sdpa_mask(**kwargs)


def right_padded(mask) -> bool:
    """Whether every row of a 2D 0/1 attention mask is ones then zeros, starting with a one."""
    keep = mask.bool()
    return bool(keep[:, 0].all() and (keep[:, 1:] <= keep[:, :-1]).all())
