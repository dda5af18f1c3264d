"""Elastic Weight Consolidation against forgetting.

Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks" (arXiv
1612.00796): keep each weight near its starting value in proportion to how much general ability
depends on it, measured by the diagonal of the Fisher information::

    penalty = lambda / 2 * sum_i F_i * (w_i - w*_i) ** 2

What is penalised, per kind of trainable weight:

* **LoRA layers** (peft ``lora.Linear`` without DoRA, found by the method's ``weight_deltas`` hook
  in ``train/methods``): the *effective weight update*
  ``dW = B @ A * scale`` (peft's ``get_delta_weight``) against the Fisher of the frozen base
  weight ``W``. The anchor is the zero update, i.e. the base model itself, so this is exactly
  classical EWC on the merged weights ``W + dW`` -- the form the issue asks for, and the one whose
  lambda means the same thing for LoRA and full fine-tuning.
* **Every other trainable tensor** (full, partial and half fine-tuning; DoRA, IA3, prefix, prompt
  and bottleneck adapters): the tensor itself around its value when training starts, with its
  own Fisher. For full / partial / HFT that is classical EWC (the start is the base model). For
  the other adapters the start is their identity-like initialisation, so the anchor is again
  "no change"; their merged update has no one closed form across methods, hence the simpler
  parameter-space form there.

The Fisher is the empirical one: the mean over reference windows of the squared gradient of the
window's mean token loss under the starting model (eval mode, fp32). The windows are general
Wikipedia text from the training pool of :func:`smalltune.train.splits.reference_roles`, kept
apart from the paragraphs forgetting is measured on. No library offers EWC for transformers + peft models, hence this module.
"""

from __future__ import annotations

import torch

from ...data.tokenize import tokenize_plain
from ..loss import causal_lm_loss
from . import REGULARIZERS, Regularizer

FISHER_MAX_LENGTH = 256  # tokens per reference window: enough context, cheap to score


class Term:
    """One penalised quantity: ``delta()`` (current minus anchor) and the weight whose Fisher applies."""

    def __init__(self, name: str, fisher_param: torch.nn.Parameter, delta):
        self.name, self.fisher_param, self.delta = name, fisher_param, delta
        self.fisher: torch.Tensor | None = None


def penalty_terms(model, method=None) -> list[Term]:
    """The terms EWC penalises for ``model`` as it is now (its trainable tensors decide).

    Updates with a closed form come from the method's ``weight_deltas`` (LoRA's ``B @ A * scale``);
    without a ``method``, from every registered method that finds its layers in ``model``.
    """
    from ..methods import METHODS

    terms, covered, bases = [], set(), set()
    for m in [method] if method is not None else [cls() for _, cls in METHODS.items()]:
        for d in m.weight_deltas(model):
            if id(d.base) not in bases:  # dora inherits lora's hook: one term per base weight
                bases.add(id(d.base))
                covered.update(id(p) for p in d.params)
                terms.append(Term(d.name, d.base, d.delta))
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in covered:
            anchor = p.detach().clone()
            terms.append(Term(name, p, lambda p=p, a=anchor: p - a))
    return terms


def estimate_fisher(model, params: list[torch.nn.Parameter], items, device) -> list[torch.Tensor]:
    """Diagonal empirical Fisher of ``params``: mean over ``items`` of (d mean-token-loss / d param)^2.

    >>> estimate_fisher(model, [model.lm_head.weight], tokenize_plain(tok, texts, 256), "cpu")
    """
    was_training = model.training
    flags = [p.requires_grad for p in params]
    fisher = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    model.eval()  # no dropout: the Fisher of the model as it is
    for p in params:
        p.requires_grad_(True)
    try:
        for item in items:
            ids = torch.tensor([item.input_ids], device=device)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            loss = causal_lm_loss(logits, torch.tensor([item.labels], device=device))
            # autograd.grad, not backward: trainable tensors' .grad stays untouched
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for f, g in zip(fisher, grads):
                if g is not None:
                    f.add_(g.detach().float() ** 2)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    return [f / max(len(items), 1) for f in fisher]


@REGULARIZERS.register("ewc")
class EWC(Regularizer):
    """``regularize.ewc_lambda``: elastic pull towards the starting weights, weighted by the Fisher."""

    name = "ewc"
    keys = ("regularize.ewc_lambda", "regularize.ewc_samples")

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.regularize.ewc_lambda > 0

    def setup(self, env, texts: list[str] | None = None) -> dict:
        recipe, reg = env.recipe, env.recipe.regularize
        self.lam = reg.ewc_lambda
        if texts is None:  # general text outside every measurement sample (splits.reference_roles)
            texts = env.reference.take_train("ewc_fisher", reg.ewc_samples)
        max_len = min(recipe.data.max_length, FISHER_MAX_LENGTH)
        model = env.unwrap(env.model)
        items = tokenize_plain(env.tokenizer, texts, max_len)[: reg.ewc_samples]
        from ..methods import METHODS

        self.terms = penalty_terms(model, METHODS.get(recipe.method.name, "method.name")())
        fishers = estimate_fisher(model, [t.fisher_param for t in self.terms], items, env.device)
        for term, f in zip(self.terms, fishers):
            term.fisher = f.to(term.fisher_param.dtype)
        self.last = 0.0
        return {"ewc_fisher_windows": len(items), "ewc_terms": len(self.terms),
                "ewc_fisher_mean": float(sum(f.sum() for f in fishers) / max(sum(f.numel() for f in fishers), 1))}

    def state_dict(self) -> dict:
        return {}  # recomputed from the starting weights in setup

    def penalty(self, model) -> torch.Tensor | None:
        if not self.terms:
            return None
        total = sum((t.fisher * t.delta() ** 2).sum() for t in self.terms)
        value = 0.5 * self.lam * total
        self.last = float(value.detach())
        return value

    def metrics(self) -> dict:
        return {"ewc_penalty": self.last}
