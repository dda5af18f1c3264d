"""Frozen weights cast to bf16 once per inference pass (train/autocast.py): same numbers, fewer casts."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from smalltune.train.autocast import cast_once


class CountCasts(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.casts += func is torch.ops.aten._to_copy.default
        return func(*args, **(kwargs or {}))


def frozen_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    return model.requires_grad_(False)


def run(model, x, calls: int, once: bool):
    counter, outs = CountCasts(), []
    with torch.autocast("cpu", dtype=torch.bfloat16), counter:
        with cast_once(model) if once else torch.no_grad():
            for _ in range(calls):  # e.g. decoding steps in one generation pass
                outs.append(model(x))
    return torch.stack(outs), counter.casts


def test_cast_once_casts_frozen_weights_once_per_pass_with_the_same_outputs():
    model, x = frozen_model(), torch.randn(3, 8)
    plain, plain_casts = run(model, x, 4, once=False)
    once, once_casts = run(model, x, 4, once=True)
    assert torch.equal(plain, once)
    # per call: two inputs cast; the four weight and bias tensors 4 times without, once with
    assert plain_casts - once_casts == 3 * 4
    assert not any(p.requires_grad for p in model.parameters())  # frozen again after the pass


def test_cast_once_leaves_trainable_weights_alone_and_restores_flags_after_an_error():
    model = frozen_model()
    model[0].weight.requires_grad_(True)
    with pytest.raises(RuntimeError), cast_once(model):
        assert all(p.requires_grad for p in model.parameters()) and not torch.is_grad_enabled()
        raise RuntimeError("stop")
    assert [p.requires_grad for p in model.parameters()] == [True, False, False, False]


@pytest.mark.parametrize("trainable", [False, True])
def test_passes_in_one_outer_context_share_each_weights_cast(trainable):
    """Training evaluates (validation pass, then the guards' passes) inside one autocast + cast_once context
    (train/loop.py): each pass opens its own nested context, and the casts made by the first serve the second."""
    model, x = frozen_model(), torch.randn(3, 8)
    model.requires_grad_(trainable)  # full fine-tuning: every weight requires grad

    def two_passes(shared: bool):
        counter, outs = CountCasts(), []
        with counter, (torch.autocast("cpu", dtype=torch.bfloat16) if shared else contextlib.nullcontext()), \
                (cast_once(model) if shared else contextlib.nullcontext()):
            for _ in range(2):  # each pass as train/loss.item_token_stats runs it
                with torch.autocast("cpu", dtype=torch.bfloat16), cast_once(model):
                    outs.append(model(x))
        return torch.stack(outs), counter.casts

    separate, separate_casts = two_passes(False)
    shared, shared_casts = two_passes(True)
    assert torch.equal(separate, shared)
    assert separate_casts - shared_casts == 4  # the four weight and bias tensors, cast again by the second pass
    assert all(p.requires_grad == trainable for p in model.parameters())


def test_loss_passes_skip_accelerates_fp32_output_copy_with_the_same_metrics(tiny_model_dir, monkeypatch):
    """accelerate's prepare wraps forward to return fp32 copies of the outputs; a loss pass under its own autocast
    calls the unwrapped forward (logits stay bf16 until sliced_token_stats), with the same metrics to the bit,
    and the wrapper is back afterwards (training steps keep it)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from transformers import AutoModelForCausalLM

    from smalltune.data.tokenize import Tokenized
    from smalltune.train import loss

    AcceleratorState._reset_state()  # one precision per process state; earlier tests may have set another
    acc = Accelerator(mixed_precision="bf16", cpu=True)
    model = acc.prepare(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    wrapped = model.forward
    torch.manual_seed(0)
    items = [Tokenized(None, ids, ids) for ids in (torch.randint(5, 500, (n,)).tolist() for n in (9, 14, 6))]
    seen = []
    stats = loss.sliced_token_stats
    monkeypatch.setattr(loss, "sliced_token_stats",
                        lambda logits, *a: (seen.append(logits.dtype), stats(logits, *a))[1])
    own = loss.own_autocast_forward
    monkeypatch.setattr(loss, "own_autocast_forward", contextlib.nullcontext)  # the wrapped forward, as before
    before = loss.dataset_metrics(model, items, 2, "cpu", 0, acc.autocast)
    assert set(seen) == {torch.float32}
    seen.clear()
    monkeypatch.setattr(loss, "own_autocast_forward", own)
    assert loss.dataset_metrics(model, items, 2, "cpu", 0, acc.autocast) == before
    assert set(seen) == {torch.bfloat16}
    assert model.forward == wrapped and model(torch.tensor([[5, 6, 7]])).logits.dtype == torch.float32
