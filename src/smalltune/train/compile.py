"""Compiled decoder layers (``train.compile``): PyTorch's compiler fuses each layer's small operations.

Most of a training step is matmuls, but a decoder layer also runs dozens of small element-wise operations (norms,
rotary embeddings, the activation, residual adds, and with LoRA the adapters' dropout, scaling and adds) that each
read and write a whole activation tensor. ``torch.compile`` (inductor) fuses them into a few generated kernels.

Each decoder layer is compiled in place (``nn.Module.compile``), not the whole model: the parameters, their names
and the state dict stay the same (checkpoints, artifacts and resume are unchanged), the model's own Python around
the layers (the loss, ``logits_to_keep``, peft's wrappers) stays eager, and the layers share one compiled graph.
Shapes are marked dynamic from the start, so a batch of a new length does not compile again.

Cost: compiling takes up to a minute or more on a small CPU the first time (training, evaluation without gradients
and each precision are separate graphs); inductor's on-disk cache shortens later runs on the same machine but does
not remove the cost. Measured (benchmarks/README.md, experiment 5, "compiled decoder layers"): on a quiet 2-core
Zen 4 the compiled layers trained no faster (LoRA 0.79-0.92x, full 0.96-1.00x eager); with one thread beside two
other processes LoRA ran 1.33-1.40x. Hence off by default.
"""

from __future__ import annotations

import torch

from ..errors import SmalltuneError
from .methods.partial import decoder_layers


def check_compiler(device: torch.device | str = "cpu") -> None:
    """Compile and run a one-line function on ``device``: the toolchain inductor needs (a C++ compiler on a CPU,
    Triton on a GPU) is there, or a one-line error says what is missing. About a second; once per run."""
    try:
        torch.compile(lambda x: x * 2 + 1, dynamic=False)(torch.ones(4, device=device))
    except Exception as e:  # inductor raises many kinds: a missing compiler, an unsupported platform, Triton
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SmalltuneError(f"train.compile: torch.compile does not work here ({first}); install a C++ compiler "
                             f"(g++ or clang++) for a CPU, or set train.compile: false") from None


def compile_layers(model, device: torch.device | str = "cpu") -> int:
    """Compile every decoder layer of ``model`` in place; returns how many were compiled."""
    check_compiler(device)
    _, layers = decoder_layers(model, "train.compile", "set it to false for this model")
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
