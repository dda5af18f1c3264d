"""Methods that train a chosen subset of the base weights: ``partial`` and ``hft``.

``partial`` trains the top-k decoder layers and/or named modules, always the same ones.
``hft`` (HFT: Half Fine-Tuning for Large Language Models, arXiv 2404.18466) trains a random half
of the weights, drawn per category inside every layer and redrawn at every epoch, so that half of
the pre-trained knowledge is untouched at any time. Both save a whole model folder (see full.py).
No maintained library offers HFT; it is a freeze mask, so it is a few lines here.
"""

from __future__ import annotations

import random

import torch
from accelerate import PartialState

from ... import console
from ...errors import SmalltuneError
from . import METHODS, count_parameters
from .full import WholeModelMethod, set_trainable


def decoder_layers(model, needed_by: str = "method.name",
                   instead: str = "use lora or full instead") -> tuple[str, torch.nn.ModuleList]:
    """(dotted name, module list) of the transformer blocks: the ModuleList as long as the layer count.
    ``needed_by`` (a recipe key) and ``instead`` make the error when there is none."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return name, module
    raise SmalltuneError(f"{needed_by}: cannot find this model's decoder layers (no ModuleList of "
                         f"config.num_hidden_layers blocks); {instead}")


def in_module(param_name: str, module: str) -> bool:
    """True when ``module`` is a run of dotted segments in ``param_name`` (``mlp`` in ``layers.0.mlp.up_proj.weight``)."""
    return f".{module.strip('.')}." in f".{param_name}."


@METHODS.register("partial")
class Partial(WholeModelMethod):
    """Train only the last ``method.top_k_layers`` decoder layers plus any ``method.modules``.

    The lower layers hold the most general features; leaving them frozen limits forgetting.
    """

    keys = ("method.top_k_layers", "method.modules")

    def trainable_params(self, s, cfg) -> tuple[int, int]:
        k = min(cfg.top_k_layers or 0, s.layers)  # named extra modules are not counted
        return k * s.layer_params, 0

    def problems(self, cfg) -> list[str]:
        if not cfg.top_k_layers and not cfg.modules:
            return ["method.name partial needs method.top_k_layers > 0 or a list in method.modules"]
        return []

    def apply(self, model, cfg, recipe=None):
        prefix, layers = decoder_layers(model)
        names = [n for n, _ in model.named_parameters(remove_duplicate=False)]  # lm_head too when tied
        chosen = set()
        k = min(cfg.top_k_layers or 0, len(layers))
        for i in range(len(layers) - k, len(layers)):
            chosen |= {n for n in names if in_module(n, f"{prefix}.{i}")}
        for module in cfg.modules:
            hits = {n for n in names if in_module(n, module)}
            if not hits:
                raise SmalltuneError(f"method.modules: no parameter of this model lies in {module!r} "
                                     f"(names look like {names[len(names) // 2]})")
            chosen |= hits
        set_trainable(model, chosen)
        return model


def hft_groups(model) -> list[list[list[str]]]:
    """Categories of parameter names: per layer attention / MLP / norms, plus one for everything outside
    the layers (embeddings, final norm, LM head). Each category is a list of members (one per module)."""
    prefix, layers = decoder_layers(model)
    names = [n for n, _ in model.named_parameters()]
    groups: list[list[list[str]]] = []
    inside: set[str] = set()
    for i in range(len(layers)):
        layer = [n for n in names if in_module(n, f"{prefix}.{i}")]
        inside |= set(layer)
        by_cat: dict[str, dict[str, list[str]]] = {}
        for n in layer:
            module = n.rsplit(".", 1)[0]
            by_cat.setdefault(_category(module[len(prefix) + 1:]), {}).setdefault(module, []).append(n)
        groups += [list(members.values()) for members in by_cat.values()]
    outside: dict[str, list[str]] = {}
    for n in names:
        if n not in inside:
            outside.setdefault(n.rsplit(".", 1)[0], []).append(n)
    if outside:
        groups.append(list(outside.values()))
    return groups


def _category(path: str) -> str:
    segments = path.split(".")
    if "norm" in segments[-1] or segments[-1].startswith("ln"):  # post_attention_layernorm is a norm
        return "norm"
    if any("attn" in s or "attention" in s for s in segments):
        return "attention"
    if any(s in ("mlp", "feed_forward", "ffn") or "mlp" in s for s in segments):
        return "mlp"
    return "other"


def hft_mask(model, epoch: int, seed: int, fraction: float = 0.5) -> set[str]:
    """Names trained in ``epoch``: in every category a random ``fraction`` of its members.

    Odd-sized categories round up or down at random (expected share = ``fraction``). The draw
    depends only on (seed, epoch), so a resumed run redraws the same mask.

    >>> hft_mask(model, epoch=0, seed=42)  # e.g. {'model.layers.0.self_attn.q_proj.weight', ...}
    """
    rng = random.Random(f"hft:{seed}:{epoch}")
    chosen: set[str] = set()
    for members in hft_groups(model):
        exact = fraction * len(members)
        k = int(exact) + (rng.random() < exact - int(exact))
        for member in rng.sample(members, k):
            chosen |= set(member)
    return chosen


@METHODS.register("hft")
class HalfFineTuning(WholeModelMethod):
    """Half Fine-Tuning (arXiv 2404.18466): train ``method.hft_fraction`` of each category, redrawn per epoch.

    ``apply`` leaves every weight trainable so the optimizer holds them all (frozen ones simply get
    no gradient and AdamW skips them); the loop's epoch hook then sets the epoch's mask. With
    several GPUs (DDP) parameters that get no gradient need ``find_unused_parameters``.
    """

    keys = ("method.hft_fraction",)

    def trainable_params(self, s, cfg) -> tuple[int, int]:
        return int(s.layers * s.layer_params * cfg.hft_fraction), 0  # one epoch's share of the layers

    def optimizer_params(self, s, cfg) -> int:
        # Every weight is in the optimizer and gets AdamW states once it has been drawn.
        return s.total_params

    def state_params(self, s, cfg) -> int:
        return s.total_params  # trainable_state keeps every weight

    def __init__(self):
        self.fraction = 0.5

    def apply(self, model, cfg, recipe=None):
        self.fraction = cfg.hft_fraction
        set_trainable(model, {n for n, _ in model.named_parameters()})
        return model

    def on_epoch_start(self, model, epoch: int, seed: int) -> None:
        set_trainable(model, hft_mask(model, epoch, seed, self.fraction))
        # The header counts every weight (all may train over the run); say what this epoch trains.
        if PartialState().is_main_process:
            trainable, total = count_parameters(model)
            console.info(f"hft epoch {epoch}: training {trainable:,} of {total:,} parameters ({trainable / total:.1%})")

    def trainable_state(self, model) -> dict[str, torch.Tensor]:
        # Over several epochs every weight may have changed, not only this epoch's half.
        return {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
