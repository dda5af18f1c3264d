"""Every fine-tuning method on the tiny model: exactly the right tensors train, and the artifact reloads."""

from __future__ import annotations

import pytest
import torch
from accelerate.utils import extract_model_from_parallel
from safetensors.torch import load_file

from smalltune import train
from smalltune.errors import RecipeError, SmalltuneError
from smalltune.recipe import MethodSection
from smalltune.rundir import RunDir
from smalltune.train.artifact import load_trained
from smalltune.train.methods import METHODS
from smalltune.train.methods.partial import hft_groups, hft_mask


def _spy_apply(monkeypatch, name: str) -> dict:
    """Keep the model the loop trains and a copy of every parameter right after ``apply``."""
    cls = METHODS.get(name)
    real, seen = cls.apply, {}

    def apply(self, model, cfg, recipe=None):
        model = real(self, model, cfg, recipe)
        seen["model"], seen["before"] = model, {n: p.detach().clone() for n, p in model.named_parameters()}
        return model

    monkeypatch.setattr(cls, "apply", apply)
    return seen


def _changed(seen) -> set[str]:
    after = dict(seen["model"].named_parameters())
    return {n for n, p in seen["before"].items() if not torch.equal(p.cpu(), after[n].detach().cpu())}


EXPECTED = {  # which parameter names may (and must) change, by method
    "lora": lambda n, m: "lora_" in n,
    "dora": lambda n, m: "lora_" in n,
    "ia3": lambda n, m: "ia3_" in n,
    "prefix": lambda n, m: n.startswith("prompt_encoder."),
    "prompt": lambda n, m: n.startswith("prompt_encoder."),
    "bottleneck": lambda n, m: ".bottleneck." in n,
    "partial": lambda n, m: ".layers.1." in n,  # top_k_layers=1 of 2
    "hft": lambda n, m: n in hft_mask(m, 0, 0),  # seed 0, all steps inside epoch 0
    "full": lambda n, m: True,
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_method_trains_exactly_its_parameters_and_reloads(name, make_recipe, monkeypatch, tokenizer):
    assert set(EXPECTED) == set(METHODS), "a method without a test"
    seen = _spy_apply(monkeypatch, name)
    # Virtual-token methods need larger rates on this random tiny model: at 1e-3 three steps end worse than
    # the base, and a checkpoint worse than the base is never published.
    lr = {"prefix": 1e-1, "prompt": 1e-2}.get(name, 1e-3)
    recipe = make_recipe(**{"method.name": name, "method.top_k_layers": 1, "train.max_steps": 3, "train.lr": lr,
                            "eval.every_steps": 3, "early_stopping.enabled": False, "train.warmup_ratio": 0})
    result = train(recipe, progress=False)
    model = seen["model"].eval()
    expected = {n for n in seen["before"] if EXPECTED[name](n, model)}
    assert expected, "the method trains nothing"
    assert _changed(seen) == expected
    trainable = sum(p.numel() for n, p in model.named_parameters() if n in expected)
    assert result.trainable_params == (result.total_params if name == "hft" else trainable)

    # The artifact alone (reloaded onto a fresh base) reproduces the trained model's logits.
    reloaded, tok, _ = load_trained(result.run_dir)
    # On a GPU the loop moved the model and accelerate wrapped its forward in bf16 autocast: undo that.
    model = extract_model_from_parallel(model, keep_fp32_wrapper=False)
    device = next(model.parameters()).device
    reloaded = reloaded.to(device)
    ids = tok(["Where is the clinic?", "Hi"], return_tensors="pt", padding=True).to(device)
    with torch.no_grad():
        want, got = model(**ids).logits, reloaded(**ids).logits
    assert got.shape[:2] == ids["input_ids"].shape  # prompt tuning's virtual tokens are trimmed
    assert torch.allclose(want, got, atol=1e-6), f"{name}: reloaded logits differ"
    if name == "full":
        _assert_tied_embeddings_survive(RunDir(result.run_dir), reloaded)


def test_hft_mask_halves_each_category_and_redraws_per_epoch(tiny_model_dir):
    from smalltune.models import load_model

    model, _ = load_model(str(tiny_model_dir))
    groups = hft_groups(model)
    # 2 layers x (attention: q,k,v,o; mlp: gate,up,down; norms: 2) + outside (embeddings, final norm; lm_head is tied)
    assert sorted(len(g) for g in groups) == [2, 2, 2, 3, 3, 4, 4]
    masks = [hft_mask(model, epoch, seed=7) for epoch in range(4)]
    assert masks[0] == hft_mask(model, 0, seed=7)  # a resumed run redraws the same mask
    assert len({frozenset(m) for m in masks}) > 1
    for mask in masks:
        for members in groups:
            trained = sum(all(n in mask for n in m) for m in members)
            assert trained in {len(members) // 2, (len(members) + 1) // 2}
            assert all(all(n in mask for n in m) or not any(n in mask for n in m) for m in members)


def test_hft_redraws_the_mask_at_each_epoch_of_training(make_recipe, monkeypatch):
    seen = _spy_apply(monkeypatch, "hft")
    # 30 train examples / batch 8 = 4 steps per epoch: 5 steps span epochs 0 and 1.
    recipe = make_recipe(**{"method.name": "hft", "train.max_steps": 5, "train.batch_size": 8, "eval.every_steps": 5,
                            "early_stopping.enabled": False, "train.seed": 3})
    train(recipe, progress=False)
    model = seen["model"]
    first, second = hft_mask(model, 0, 3), hft_mask(model, 1, 3)
    assert first != second
    assert _changed(seen) == first | second


def _assert_tied_embeddings_survive(run: RunDir, reloaded) -> None:
    snapshot = run.path / "snapshot.safetensors"  # as a best-model snapshot or checkpoint writes the weights
    METHODS.get("full")().save_state(reloaded, snapshot)
    state = load_file(str(snapshot))  # one copy of the shared tensor
    assert "model.embed_tokens.weight" in state and "lm_head.weight" not in state
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    assert (run.path / "model" / "model.safetensors").exists() and not (run.path / "adapter").exists()


def test_partial_selects_named_modules_and_tied_head(tiny_model_dir):
    from smalltune.models import load_model

    model, _ = load_model(str(tiny_model_dir))
    cfg = MethodSection(name="partial", top_k_layers=0, modules=["layers.0.mlp", "lm_head"])
    model = METHODS.get("partial")().apply(model, cfg)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    # lm_head is tied to the input embeddings: choosing it trains that one shared tensor
    assert trained == {n for n, _ in model.named_parameters() if ".layers.0.mlp." in n} | {"model.embed_tokens.weight"}


def test_method_recipe_errors_name_the_key(make_recipe, tiny_model_dir):
    with pytest.raises(RecipeError, match="method.top_k_layers"):
        make_recipe(**{"method.name": "partial", "method.top_k_layers": 0})
    with pytest.raises(RecipeError, match="method.hft_fraction"):
        make_recipe(**{"method.name": "hft", "method.hft_fraction": 0})
    with pytest.raises(RecipeError, match="did you mean 'dora'"):
        make_recipe(**{"method.name": "doar"})
    from smalltune.models import load_model

    model, _ = load_model(str(tiny_model_dir))
    with pytest.raises(SmalltuneError, match="method.modules"):
        METHODS.get("partial")().apply(model, MethodSection(name="partial", modules=["encoder"]))
    with pytest.raises(SmalltuneError, match="method.bottleneck_after"):
        METHODS.get("bottleneck")().apply(model, MethodSection(name="bottleneck", bottleneck_after=["fc9"]))


def test_method_help_lists_every_method():
    import dataclasses

    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(MethodSection)}["name"]
    assert all(name in help_text for name in METHODS)


# --- LoRA's dropout on CPU (methods/dropout.py) ------------------------------------------------------------
def test_bits_dropout_drops_with_probability_p_and_scales_the_rest():
    from smalltune.train.methods.dropout import BitsDropout, keep_mask

    torch.manual_seed(0)
    for p in (0.05, 0.1, 0.5):
        keep = keep_mask((1000, 1000), p)
        assert keep.dtype == torch.uint8 and keep.shape == (1000, 1000) and set(keep.unique().tolist()) == {0, 1}
        # four 16-bit lanes of each 64-bit draw are used: check each alone
        for lane in range(4):
            rate = 1 - keep.flatten()[lane::4].float().mean().item()
            assert abs(rate - p) < 0.003, (p, lane, rate)
    d = BitsDropout(0.1)
    x = torch.randn(4, 64, 32, requires_grad=True)
    y = d(x)
    kept = y != 0
    assert 0.05 < 1 - kept.float().mean().item() < 0.15
    assert torch.allclose(y[kept], x[kept] / 0.9)
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.9))
    torch.manual_seed(3)
    a = d(x)
    torch.manual_seed(3)
    assert torch.equal(a, d(x))  # seeded from torch's generator like every other draw of the run
    assert not torch.equal(a, d(x))  # and a new mask on each call
    assert torch.equal(d.eval()(x), x)


def test_lora_uses_bits_dropout_and_peft_config_keeps_the_rate(tiny_model_dir):
    from smalltune.models import load_model
    from smalltune.train.methods.dropout import BitsDropout

    model, _ = load_model(str(tiny_model_dir))
    model = METHODS.get("lora")().apply(model, MethodSection(name="lora", r=4, dropout=0.1))
    dropouts = [m for m in model.modules() if isinstance(m, BitsDropout)]
    assert dropouts and all(d.p == 0.1 for d in dropouts)
    assert model.peft_config["default"].lora_dropout == 0.1  # what the saved adapter_config.json says
    model.train()
    ids = torch.tensor([[1, 2, 3, 4]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_A" in n)


# --- LoRA as one autograd function on CPU (methods/lora_fused.py) -------------------------------------------
def _lora_model(tiny_model_dir, dropout):
    from smalltune.models import load_model

    model, _ = load_model(str(tiny_model_dir))
    model = METHODS.get("lora")().apply(model, MethodSection(name="lora", r=4, alpha=8, dropout=dropout))
    torch.manual_seed(1)
    for n, p in model.named_parameters():
        if "lora_B" in n:  # peft starts B at zero, which would hide the adapter's path
            torch.nn.init.normal_(p, std=0.05)
    return model


def _loss_and_grads(model, fused: bool, seed: int = 5, bf16: bool = False):
    from peft.tuners.lora import Linear as LoraLinear

    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    saved = [m.__dict__.pop("forward") for m in layers] if not fused else []
    try:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1]])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    finally:
        for m, f in zip(layers, saved):
            m.forward = f


@pytest.mark.parametrize("dropout,bf16", [(0.0, False), (0.1, False), (0.1, True)])
def test_fused_lora_gives_peft_s_loss_and_gradients(tiny_model_dir, dropout, bf16):
    from smalltune.train.methods.lora_fused import _LoraLinear

    model = _lora_model(tiny_model_dir, dropout)
    model.train()
    calls = []
    original = _LoraLinear.forward
    _LoraLinear.forward = staticmethod(lambda *a: calls.append(1) or original(*a))
    try:
        loss, grads = _loss_and_grads(model, fused=True, bf16=bf16)
    finally:
        _LoraLinear.forward = staticmethod(original)
    assert calls, "the LoRA layers did not take the fused path"
    ref_loss, ref_grads = _loss_and_grads(model, fused=False, bf16=bf16)  # peft's forward, the same masks drawn
    # under bf16 autocast the two paths round at different places (peft scales the bf16 output, we the bottleneck)
    tol = dict(rtol=5e-2, atol=1e-3) if bf16 else dict(rtol=1e-4, atol=1e-6)
    assert loss == pytest.approx(ref_loss, rel=1e-2 if bf16 else 1e-6)
    assert grads.keys() == ref_grads.keys() and any("lora_A" in n for n in grads)
    for n, g in grads.items():
        assert g.dtype == ref_grads[n].dtype and torch.allclose(g, ref_grads[n], **tol), n
    if dropout:  # dropout acts: another seed draws other masks, and evaluation mode draws none
        assert _loss_and_grads(model, fused=True, seed=6)[0] != pytest.approx(loss, rel=1e-7)
        model.eval()
        with torch.no_grad():
            ids = torch.tensor([[1, 2, 3, 4]])
            torch.manual_seed(0)
            a = model(input_ids=ids).logits
            torch.manual_seed(1)
            assert torch.equal(a, model(input_ids=ids).logits)


def test_fused_lora_leaves_other_cases_to_peft(tiny_model_dir):
    from smalltune.train.methods.lora_fused import _plain_adapter

    model = _lora_model(tiny_model_dir, 0.1)
    layer = next(m for m in model.modules() if "forward" in m.__dict__)
    x = torch.randn(2, 3, layer.get_base_layer().in_features)
    assert _plain_adapter(layer, x, (), {}) == "default"
    assert _plain_adapter(layer, x, (), {"adapter_names": ["default"]}) is None
    assert _plain_adapter(layer, x.double(), (), {}) is None
    assert _plain_adapter(layer, x.bfloat16(), (), {}) is None  # mixed dtypes without autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _plain_adapter(layer, x, (), {}) == "default"  # autocast casts every tensor
    with model.disable_adapter():
        assert _plain_adapter(layer, x, (), {}) is None
        base_out = layer(x)
    assert torch.equal(base_out, layer.get_base_layer()(x))
