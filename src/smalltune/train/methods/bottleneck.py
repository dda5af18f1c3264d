"""Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP", arXiv 1902.00751).

A small two-layer network ``h + up(act(down(h)))`` is inserted after the attention output
projection and after the MLP output projection of every decoder layer; only these adapters train.

Why hand-written: the maintained implementation (the ``adapters`` library) pins transformers 4.x
and peft has no bottleneck adapter, so on transformers 5 no maintained library provides them. The
adapter is attached as a child module of the projection it follows (so base weight names stay
untouched and a checkpoint can name the adapter's tensors) and runs through a forward hook.
The up-projection starts at zero, so the adapted model starts out exactly equal to the base.

Artifact: ``adapter/bottleneck.safetensors`` (adapter tensors only) + ``adapter/bottleneck.json``
(size, placement), re-inserted into the base model on load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...errors import SmalltuneError
from . import METHODS, Method, Rate

WEIGHTS = "bottleneck.safetensors"
CONFIG = "bottleneck.json"
CHILD = "bottleneck"  # attribute name of the adapter on the projection it follows


class Bottleneck(torch.nn.Module):
    """``x + up(gelu(down(dropout(x))))`` with ``up`` zero-initialised (identity at the start)."""

    def __init__(self, dim: int, size: int, dropout: float = 0.0):
        super().__init__()
        self.down = torch.nn.Linear(dim, size)
        self.up = torch.nn.Linear(size, dim)
        self.dropout = torch.nn.Dropout(dropout)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.nn.functional.gelu(self.down(self.dropout(x))))


def _after_hook(module, args, output):
    return getattr(module, CHILD)(output)


def insert_bottlenecks(model, size: int, after: list[str], dropout: float = 0.0) -> list[str]:
    """Freeze ``model`` and add a trainable adapter after every linear module whose last name segment
    is in ``after``; return the adapted modules' names.

    >>> insert_bottlenecks(model, 16, ["o_proj", "down_proj"])[:1]
    ['model.layers.0.self_attn.o_proj']
    """
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [(n, m) for n, m in model.named_modules()
               if n.rsplit(".", 1)[-1] in after and isinstance(m, torch.nn.Linear)]
    if not targets:
        raise SmalltuneError(f"method.bottleneck_after: no linear module of this model is called "
                             f"{' or '.join(after)}; name the attention and MLP output projections")
    for _, module in targets:
        w = module.weight
        adapter = Bottleneck(module.out_features, size, dropout).to(device=w.device, dtype=w.dtype)
        module.add_module(CHILD, adapter)
        module.register_forward_hook(_after_hook)
    return [n for n, _ in targets]


def bottleneck_state(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().cpu().clone() for n, t in model.state_dict().items() if f".{CHILD}." in n}


@METHODS.register("bottleneck")
class BottleneckAdapters(Method):
    """Houlsby bottleneck adapters of width ``method.bottleneck_size`` after ``method.bottleneck_after``."""

    keys = ("method.bottleneck_size", "method.bottleneck_after", "method.dropout")
    rate = Rate(1e-4, 3e-5, "adapters: Houlsby et al. arXiv 1902.00751; AdapterHub arXiv 2007.07779 default 1e-4")

    def trainable_params(self, s, cfg) -> tuple[int, int]:
        # down (out x b + b) and up (b x out + out) after each named projection
        b, after = cfg.bottleneck_size, set(cfg.bottleneck_after)
        n = s.layers * sum(2 * o * b + b + o for name, _, o in s.layer_linears if name.rsplit(".", 1)[-1] in after)
        return n, n

    def apply(self, model, cfg, recipe=None):
        self.config = {"size": cfg.bottleneck_size, "after": list(cfg.bottleneck_after), "dropout": cfg.dropout}
        insert_bottlenecks(model, cfg.bottleneck_size, cfg.bottleneck_after, cfg.dropout)
        return model

    def save(self, model, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        save_file(bottleneck_state(model), str(path / WEIGHTS))
        (path / CONFIG).write_text(json.dumps({"format": "smalltune-bottleneck", "version": 1, **self.config}, indent=2))

    def load(self, base_model, path: Path):
        config = json.loads((path / CONFIG).read_text())
        self.config = {k: config[k] for k in ("size", "after", "dropout")}
        insert_bottlenecks(base_model, config["size"], config["after"], config["dropout"])
        state = load_file(str(path / WEIGHTS))
        missing, unexpected = base_model.load_state_dict(state, strict=False)
        wrong = [k for k in missing if f".{CHILD}." in k] + list(unexpected)
        if wrong:
            raise SmalltuneError(f"{path}: bottleneck weights do not fit this model ({wrong[0]} ...)")
        return base_model.eval()
