"""Frozen weights cast to autocast's lower precision once, not at every forward call.

Autocast keeps the lower-precision copy of a weight until its context exits only for leaf tensors that require
grad. A frozen weight -- an adapter's base, any model loaded for evaluation (peft freezes its base and, for
inference, its adapter) -- is cast again at every call: in generation, at every decoding step. On a 2-core AMX
Xeon, 64 greedy answers of 48 tokens from the built-in model under bf16 autocast took 7.8 s with frozen weights
and 5.0-5.4 s with weights that require grad, the same answers (benchmarks/README.md, "Frozen weights cast once a pass").

:func:`cast_once` runs an inference pass (generation, loss passes) with the model's frozen floating weights marked
as requiring grad, under ``no_grad``, so autocast's own cache keeps their casts: the same casts, hence the same
numbers, made once. Their copies (half their fp32 bytes in bf16) live until the pass ends.

Not done in training, where a frozen weight must stay frozen: a LoRA layer keeping its frozen base weight's cast
itself across steps measured no faster (a step of 1.13 s against 1.10 s, best of two rounds: within noise;
benchmarks/README.md, "Frozen weights cast once a pass").
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


@contextlib.contextmanager
def own_autocast_forward(model):
    """Inside the caller's own autocast context, call ``model``'s forward without accelerate's mixed-precision wrapper.

    ``Accelerator.prepare`` wraps a model's forward in its autocast and ``convert_outputs_to_fp32``: every output
    comes back as an fp32 copy. In a loss pass without a gradient that copy is all the logits, a float per
    vocabulary entry per position (the forgetting guard's 2,194 positions x 49k: 430 MB written), which
    :func:`~.loss.sliced_token_stats` then upcasts again a slice at a time anyway. The conversion is exact, so the
    losses and argmaxes are the same to the bit. Inside the demo's training on a Zen 5 EPYC the guard's pass took
    0.73x its time without the wrapper (1.33-1.35 s against 1.77-1.90 s per evaluation; benchmarks/README.md,
    "accelerate's fp32 outputs in loss passes"). A model accelerate did not wrap, or one with a wrapper around it
    (DDP: the attributes are on the inner module), is called as it is."""
    wrapped = model.__dict__.get("forward")
    original = getattr(model, "_original_forward", None)
    if wrapped is None or original is None:
        yield model
        return
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped
