"""End to end with the real built-in model: `smalltune demo --quick` as a user runs it (minutes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from smalltune.rundir import RunDir

pytestmark = pytest.mark.slow


def test_quick_demo_trains_a_real_adapter_and_reports(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "smalltune", "demo", "--quick", "--output", str(out)],
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-2000:]
    run = RunDir(out / "smalltune")  # smalltune's recipe; out/vanilla is the same LoRA without guards or replay
    assert res.stdout.strip().splitlines()[-1] == str(run.report)
    for path in (run.recipe, run.provenance, run.audit, run.metrics, run.train_summary, run.eval, run.report,
                 run.adapter / "adapter_model.safetensors"):
        assert path.exists(), path

    # Both arms evaluated and on one learning-vs-forgetting page
    assert (out / "vanilla" / "eval.json").exists() and (out / "compare.html").exists()
    from smalltune.recipe import load_recipe

    vanilla, ours = load_recipe(out / "vanilla" / "recipe.yaml"), load_recipe(run.recipe)
    assert vanilla.regularize.replay_ratio == 0 and not vanilla.guards.enabled and not vanilla.early_stopping.enabled
    assert ours.regularize.replay_ratio > 0 and ours.guards.forgetting_budget is not None
    assert vanilla.train.lr == ours.train.lr and vanilla.method.name == ours.method.name  # the same LoRA otherwise

    summary = json.loads(run.train_summary.read_text())
    # 24 quick steps, unless the forgetting budget (10%, the demo recipe's) stopped the run earlier
    assert (summary["steps"] == 24 or summary["stopped"] == "forgetting_budget") and summary["artifact_written"]
    evals = [r for r in run.read_metrics() if r.kind == "eval"]
    assert evals[-1].eval_loss < evals[0].eval_loss  # validation loss fell while training

    # The adapter is a standard PEFT folder that peft loads onto the base model, and it changes the output.
    import torch
    from peft import PeftModel

    from smalltune.models import load_model

    base, tok = load_model("smollm2-135m-instruct")
    ids = tok("How much is a check-up at Brightside Dental?", return_tensors="pt")
    with torch.no_grad():
        before = base(**ids).logits
        tuned = PeftModel.from_pretrained(base, str(run.adapter)).eval()
        after = tuned(**ids).logits
    assert not torch.allclose(before, after)

    # Evaluation compared base and fine-tuned on the same held-out questions: the fine-tuned model
    # assigns the reference answers a lower loss.
    task = json.loads(run.eval.read_text())["probes"]["task"]
    assert task["loss"]["finetuned"] < task["loss"]["base"]
    assert task["loss"]["ci"][1] < 0
