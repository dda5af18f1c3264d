"""``train.compile``: compiled decoder layers train like eager ones and save the same artifact."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from smalltune import train
from smalltune.errors import SmalltuneError
from smalltune.rundir import RunDir


def _losses(run_dir) -> list[float]:
    return [r.loss for r in RunDir(run_dir).read_metrics() if r.kind == "train"]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_compiled_layers_train_like_eager_and_save_the_same_keys(make_recipe, tmp_path, method):
    overrides = {"method.name": method, "train.max_steps": 4, "early_stopping.enabled": False,
                 "method.dropout": 0.1, "guards.enabled": False}
    eager = train(make_recipe(**overrides, output_dir=str(tmp_path / "eager")), progress=False)
    compiled = train(make_recipe(**overrides, **{"train.compile": True}, output_dir=str(tmp_path / "compiled")),
                     progress=False)
    # fused kernels sum in another order: the same losses up to float rounding, not bit for bit
    assert _losses(compiled.run_dir) == pytest.approx(_losses(eager.run_dir), rel=1e-4)
    assert len(_losses(eager.run_dir)) == 4
    artifact = "adapter/adapter_model.safetensors" if method == "lora" else "model/model.safetensors"
    a, b = (load_file(str(RunDir(r.run_dir).path / artifact)) for r in (eager, compiled))
    assert a.keys() == b.keys()  # compiling in place does not rename parameters (no "_orig_mod.")
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)


def test_a_toolchain_that_cannot_compile_is_one_clear_error(make_recipe, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore lines")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(SmalltuneError, match=r"^train.compile: torch.compile does not work here \(InvalidCxxCompiler"):
        train(make_recipe(**{"train.compile": True, "train.max_steps": 1}), progress=False)
