"""Frozen weights cast to autocast's lower precision once, not at every forward call.

Autocast keeps the lower-precision copy of a weight until its context exits only for leaf tensors that require
grad. A frozen weight -- an adapter's base, any model loaded for evaluation (peft freezes its base and, for
inference, its adapter) -- is cast again at every call: in generation, at every decoding step. On a 2-core AMX
Xeon, 64 greedy answers of 48 tokens from the built-in model under bf16 autocast took 7.8 s with frozen weights
and 5.0-5.4 s with weights that require grad, the same answers (benchmarks/README.md, "Frozen weights cast once").

* :func:`cast_once` -- for an inference pass (generation, loss passes): the model's frozen floating weights are
  marked as requiring grad for the pass, under ``no_grad``, so autocast's own cache keeps their casts: the same
  casts, hence the same numbers, made once. Their copies (half their fp32 bytes in bf16) live until the pass ends.
* :func:`frozen_copy` -- for training, where a frozen weight must stay frozen: a layer keeps its frozen weight's
  cast itself (``methods/lora_fused.py``), made again only when the weight changes.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def cast_once(model):
    """Run an inference pass over ``model`` (inside it: ``no_grad``) with each frozen weight cast once by autocast.
    Nothing changes where several processes shard the model (FSDP2: unverified) or outside autocast."""
    from .checkpoint import sharded

    frozen = [] if sharded(model) else [p for p in model.parameters()
                                        if not p.requires_grad and p.is_floating_point()]
    try:
        with torch.no_grad():
            for p in frozen:
                p.requires_grad_(True)
            yield model
    finally:
        for p in frozen:
            p.requires_grad_(False)


def frozen_copy(owner: torch.nn.Module, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` (frozen) in ``dtype``, cast on first use and kept on ``owner`` until the weight changes (its
    storage or version: a load or an in-place update); not part of the owner's state dict."""
    key = (dtype, weight.data_ptr(), weight._version)
    kept = owner.__dict__.get("_smalltune_cast")
    if kept is None or kept[0] != key:
        kept = (key, weight.detach().to(dtype))
        owner.__dict__["_smalltune_cast"] = kept
    return kept[1]
