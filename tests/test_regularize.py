"""Anti-forgetting regularisers: EWC, SAM, NEFTune, replay -- hand computations on toy models, then the loop."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import crash_at_call
from smalltune import train
from smalltune.data.example import Example
from smalltune.data.tokenize import Tokenized
from smalltune.rundir import RunDir
from smalltune.train.regularize.ewc import EWC, estimate_fisher, penalty_terms


class ToyLM(nn.Module):
    """logits_t = W @ E[id_t]: a softmax regression whose loss gradient has a closed form."""

    def __init__(self, vocab=5, dim=3):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, dim)
        self.emb.weight.requires_grad_(False)
        self.lin = nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.lin(self.emb(input_ids)))


def toy_items(seqs):
    return [Tokenized(Example([{"role": "assistant", "content": "x"}], f"t{i}"), s, list(s)) for i, s in enumerate(seqs)]


def hand_fisher(model, seqs, weight):
    """Mean over sequences of (dL/dW)^2 with dL/dW = mean_t (softmax(W e_t) - onehot(next)) e_t^T."""
    E = model.emb.weight.detach()
    total = torch.zeros_like(weight)
    for s in seqs:
        grad = torch.zeros_like(weight)
        for a, b in zip(s[:-1], s[1:]):
            p = torch.softmax(weight @ E[a], dim=0)
            p[b] -= 1
            grad += torch.outer(p, E[a])
        total += (grad / (len(s) - 1)) ** 2
    return total / len(seqs)


SEQS = [[0, 1, 2, 3], [4, 2, 2], [1, 0, 4, 3, 2]]


def test_fisher_matches_closed_form_gradient():
    model = ToyLM()
    (fisher,) = estimate_fisher(model, [model.lin.weight], toy_items(SEQS), "cpu")
    torch.testing.assert_close(fisher, hand_fisher(model, SEQS, model.lin.weight.detach()))


def test_ewc_penalty_equals_hand_computation_for_full_weights():
    model = ToyLM()
    w0 = model.lin.weight.detach().clone()
    reg = EWC()
    reg.lam = 7.0
    reg.terms = penalty_terms(model)
    assert [t.name for t in reg.terms] == ["lin.weight"]  # the frozen embedding is not penalised
    (reg.terms[0].fisher,) = estimate_fisher(model, [model.lin.weight], toy_items(SEQS), "cpu")
    assert float(reg.penalty(model).detach()) == 0.0  # at the anchor
    with torch.no_grad():
        model.lin.weight.add_(torch.linspace(-0.5, 0.4, w0.numel()).view_as(w0))
    expected = 7.0 / 2 * (hand_fisher(model, SEQS, w0) * (model.lin.weight.detach() - w0) ** 2).sum()
    got = reg.penalty(model)
    torch.testing.assert_close(got, expected)
    got.backward()  # and it pulls the weights back towards the anchor
    assert torch.all(model.lin.weight.grad * (model.lin.weight.detach() - w0) >= 0)


def test_ewc_penalty_for_lora_is_on_the_effective_update():
    from peft import LoraConfig, get_peft_model

    model = ToyLM()
    w0 = model.lin.weight.detach().clone()
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["lin"], lora_dropout=0.0))
    reg = EWC()
    reg.lam = 3.0
    reg.terms = penalty_terms(peft_model)
    assert len(reg.terms) == 1 and reg.terms[0].name.endswith("lin.delta_weight")  # A and B are not separate terms
    (reg.terms[0].fisher,) = estimate_fisher(peft_model, [t.fisher_param for t in reg.terms], toy_items(SEQS), "cpu")
    assert not reg.terms[0].fisher_param.requires_grad  # the base weight is frozen again after the estimate
    lin = peft_model.base_model.model.lin
    with torch.no_grad():
        lin.lora_B["default"].weight.copy_(torch.arange(10.0).view(5, 2) / 10)
    A, B = lin.lora_A["default"].weight.detach(), lin.lora_B["default"].weight.detach()
    delta = B @ A * (4 / 2)
    expected = 3.0 / 2 * (hand_fisher(model, SEQS, w0) * delta**2).sum()
    torch.testing.assert_close(reg.penalty(peft_model), expected)


def sam_setup():
    torch.manual_seed(1)
    model = nn.Linear(4, 2)
    x, y = torch.randn(6, 4), torch.randn(6, 2)
    return model, lambda m: ((m(x) - y) ** 2).mean()


@pytest.mark.parametrize("earlier_grad", [False, True])
def test_sam_step_equals_manual_two_step_update(earlier_grad):
    from accelerate import Accelerator

    from smalltune.train.regularize.sam import SAMStep

    rho, lr = 0.1, 0.5
    model, loss_fn = sam_setup()
    manual, _ = sam_setup()
    old = [torch.full_like(p, 0.25) for p in model.parameters()]  # from an earlier micro-batch
    if earlier_grad:
        for p, g in zip(model.parameters(), old):
            p.grad = g.clone()

    step = SAMStep(Accelerator(cpu=True), list(model.parameters()), rho)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    task, total = step(lambda: (loss_fn(model), loss_fn(model)))
    opt.step()

    # by hand: gradient at w, perturb by rho * g / ||g||, gradient there, SGD from the original w
    w = [p.detach().clone() for p in manual.parameters()]
    loss_at_w = float(loss_fn(manual).detach())
    g = torch.autograd.grad(loss_fn(manual), list(manual.parameters()))
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(manual.parameters(), g):
            p.add_(rho * gi / norm)
    g2 = torch.autograd.grad(loss_fn(manual), list(manual.parameters()))
    for p, w_i, g2_i, o in zip(model.parameters(), w, g2, old):
        expected = w_i - lr * (g2_i + (o if earlier_grad else 0))
        torch.testing.assert_close(p.detach(), expected)
    assert float(task) == pytest.approx(loss_at_w)  # the reported loss is the one at w, not at w + e


def test_neftune_noise_has_the_paper_scale_and_is_off_in_eval(tiny_model_dir):
    from smalltune.models import load_model
    from smalltune.train.plugins import PluginEnv
    from smalltune.train.regularize.neftune import NEFTune

    model, _ = load_model(str(tiny_model_dir))
    emb = model.get_input_embeddings()
    ids = torch.randint(0, 1000, (4, 50))
    clean = emb(ids).detach()
    reg = NEFTune()
    reg.setup(PluginEnv(model, None, recipe=SimpleNamespace(regularize=SimpleNamespace(neftune_alpha=5.0))))
    L, d = ids.shape[1], clean.shape[-1]
    bound = 5.0 / (L * d) ** 0.5
    model.train()
    noise = emb(ids).detach() - clean
    assert noise.abs().max() <= bound * (1 + 1e-5)
    assert noise.abs().max() > 0.95 * bound  # uniform on [-bound, bound]: the extremes are reached
    assert noise.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
    model.eval()
    assert torch.equal(emb(ids), clean)
    model.train()
    reg.close()
    assert torch.equal(emb(ids), clean)  # hook removed


def test_replay_mixes_the_requested_share(make_recipe, tokenizer, tmp_path):
    from smalltune.train.data import prepare_data
    from smalltune.train.regularize.replay import REPLAY_SOURCE

    data = prepare_data(make_recipe(**{"regularize.replay_ratio": 0.25}), tokenizer)
    replayed = [x for x in data.train if x.example.source == REPLAY_SOURCE]
    assert len(replayed) == 10 and len(data.train) == 40  # 30 domain examples + 10 = 25% general
    assert data.counts()["replay_examples"] == 10
    measured = set(data.reference.measure)
    assert not any(x.example.target in measured for x in replayed)  # never the text forgetting is measured on

    from conftest import chat, write_jsonl

    general = write_jsonl(tmp_path / "general.jsonl", [chat(f"What is {i} + {i}?", f"{2 * i}.") for i in range(4)])
    data = prepare_data(make_recipe(**{"regularize.replay_ratio": 0.5, "regularize.replay_file": str(general)}), tokenizer)
    assert sum(x.example.source == str(general) for x in data.train) == 30  # repeated to reach the share


REGULARIZERS_E2E = [
    {"regularize.sam_rho": 0.05},
    {"regularize.ewc_lambda": 1e6},
    {"regularize.neftune_alpha": 5.0},
    {"regularize.replay_ratio": 0.2},
]


@pytest.mark.parametrize("setting", REGULARIZERS_E2E, ids=lambda s: next(iter(s)))
def test_each_regularizer_trains_the_tiny_model(make_recipe, setting):
    result = train(make_recipe(**setting, **{"train.max_steps": 2}), progress=False)
    assert result.steps == 2
    records = RunDir(result.run_dir).read_metrics()
    start = next(r for r in records if r.kind == "event" and r.event == "start")
    steps = [r for r in records if r.kind == "train"]
    assert all(torch.isfinite(torch.tensor(r.loss)) for r in steps)
    if "regularize.ewc_lambda" in setting:  # regularisers' numbers are extra signals of the records
        assert start.extra["regularizers"] == ["ewc"] and start.extra["ewc_fisher_windows"] > 0
        assert steps[0].extra["ewc_penalty"] == 0.0 < steps[1].extra["ewc_penalty"]  # LoRA starts at the zero update
    if "regularize.sam_rho" in setting:
        assert start.extra["regularizers"] == ["sam"]
    summary = json.loads(RunDir(result.run_dir).train_summary.read_text())
    assert "regularizers" in summary["data"]


def test_resume_with_regularizers_matches_uninterrupted_run(make_recipe, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    common = {"train.max_steps": 6, "eval.every_steps": 2, "early_stopping.enabled": False,
              "regularize.sam_rho": 0.05, "regularize.ewc_lambda": 1e4, "regularize.neftune_alpha": 5.0}
    clean = train(make_recipe(**common, output_dir=str(tmp_path / "clean")), progress=False)

    restore = crash_at_call(monkeypatch, 10)  # SAM: two calls per step, so this is step 5
    with pytest.raises(KeyboardInterrupt):
        train(make_recipe(**common, output_dir=str(tmp_path / "crashed")), progress=False)
    restore()
    resumed = train(make_recipe(**common, output_dir=str(tmp_path / "crashed")), resume=True, progress=False)
    assert resumed.steps == 6
    a = load_file(str(RunDir(clean.run_dir).adapter / "adapter_model.safetensors"))
    b = load_file(str(RunDir(resumed.run_dir).adapter / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_missing_replay_file_is_a_one_line_error_naming_the_key(make_recipe, tokenizer):
    from smalltune.errors import SmalltuneError
    from smalltune.train.data import prepare_data

    recipe = make_recipe(**{"regularize.replay_ratio": 0.2, "regularize.replay_file": "nowhere.jsonl"})
    with pytest.raises(SmalltuneError, match=r"^regularize.replay_file: nowhere.jsonl not found$"):
        prepare_data(recipe, tokenizer)


def test_default_replay_source_is_the_base_models_own_answers(make_recipe, tokenizer, tiny_model_dir, monkeypatch):
    from smalltune.data import Example
    from smalltune.data import self_replay
    from smalltune.models import load_model
    from smalltune.train.data import prepare_data

    asked = {}

    def fake(model, tok, n, seed=0, **kw):
        asked["n"] = n
        return [Example([{"role": "user", "content": f"Name a colour ({i})."},
                         {"role": "assistant", "content": "Blue is a colour."}], f"s{i}", source=self_replay.SOURCE)
                for i in range(n)]

    monkeypatch.setattr(self_replay, "self_replay_examples", fake)
    model, _ = load_model(str(tiny_model_dir))
    recipe = make_recipe(**{"regularize.replay_ratio": 0.25})
    assert recipe.regularize.replay_source == "self"
    data = prepare_data(recipe, tokenizer, model)
    replayed = [x for x in data.train if x.example.source == self_replay.SOURCE]
    assert asked["n"] == 10 and len(replayed) == 10
    assert data.counts()["replay_source"].startswith("the base model's own answers")
    # Generating is the expensive part: at most SELF_REPLAY_MAX distinct answers, repeated to reach the share.
    data = prepare_data(make_recipe(**{"regularize.replay_ratio": 0.6}), tokenizer, model)
    assert asked["n"] == 32 and sum(x.example.source == self_replay.SOURCE for x in data.train) == 45
