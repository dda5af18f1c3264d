"""The foundation's regularisers reach the model: LoRA dropout, AdamW weight decay, gradient clipping."""

from __future__ import annotations

import torch

from smalltune import train
from smalltune.models import load_model
from smalltune.rundir import RunDir
from smalltune.train.loop import build_optimizer
from smalltune.train.methods import METHODS


def lora_model(make_recipe, tiny_model_dir, **overrides):
    recipe = make_recipe(**overrides)
    base, _ = load_model(str(tiny_model_dir))
    return recipe, METHODS.get("lora")().apply(base, recipe.method, recipe)


def test_lora_dropout_module_has_the_recipe_probability(make_recipe, tiny_model_dir):
    recipe, model = lora_model(make_recipe, tiny_model_dir, **{"method.dropout": 0.3})
    drops = [m.lora_dropout["default"] for m in model.modules() if hasattr(m, "lora_dropout")]
    assert drops and all(isinstance(d, torch.nn.Dropout) and d.p == 0.3 for d in drops)


def test_adamw_groups_carry_the_weight_decay(make_recipe, tiny_model_dir):
    recipe, model = lora_model(make_recipe, tiny_model_dir, **{"train.weight_decay": 0.07})
    opt = build_optimizer(model, recipe.train)
    assert isinstance(opt, torch.optim.AdamW)
    decayed = [g for g in opt.param_groups if g["weight_decay"] == 0.07]
    assert decayed and sum(len(g["params"]) for g in decayed) > 0
    assert all(p.ndim >= 2 for g in decayed for p in g["params"])  # matrices decay, 1-D tensors do not
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable


def test_gradient_clipping_bounds_the_norm_the_optimizer_sees(make_recipe, monkeypatch):
    # A large learning rate makes big gradients; record the norm after clipping, just before each step.
    seen = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append(float(torch.norm(torch.stack([g.norm() for g in grads]))))
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    result = train(make_recipe(**{"train.max_steps": 3, "train.max_grad_norm": 0.01}), progress=False)
    logged = [r.grad_norm for r in RunDir(result.run_dir).read_metrics() if r.kind == "train"]
    assert len(seen) == 3 and all(n <= 0.01 * (1 + 1e-4) for n in seen)
    assert all(n > 0.01 for n in logged)  # the raw norm was above the bound, so clipping did act
