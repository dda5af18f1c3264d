"""End to end with the real built-in model: `smalltune demo --quick` as a user runs it (minutes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from smalltune.rundir import RunDir

pytestmark = pytest.mark.slow


def test_quick_demo_trains_a_real_model_and_reports(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "smalltune", "demo", "--quick", "--output", str(out)],
                         capture_output=True, text=True, timeout=3000)  # a slow 2-core CPU under load took ~30 min
    assert res.returncode == 0, res.stderr[-2000:]
    run = RunDir(out / "smalltune")  # smalltune's recipe (full fine-tuning); out/vanilla is a tutorial's LoRA
    assert res.stdout.strip().splitlines()[-1] == str(run.report)
    model_dir = run.path / "model"
    for path in (run.recipe, run.provenance, run.audit, run.metrics, run.train_summary, run.eval, run.report,
                 model_dir / "model.safetensors", out / "vanilla" / "adapter" / "adapter_model.safetensors"):
        assert path.exists(), path

    # Both arms evaluated and on one learning-vs-forgetting page
    assert (out / "vanilla" / "eval.json").exists() and (out / "compare.html").exists()
    from smalltune.recipe import load_recipe

    vanilla, ours = load_recipe(out / "vanilla" / "recipe.yaml"), load_recipe(run.recipe)
    assert not vanilla.guards.enabled and not vanilla.early_stopping.enabled and vanilla.method.name == "lora"
    assert ours.method.name == "full" and ours.guards.selection == "accuracy" and ours.guards.forgetting_action == "stop"

    summary = json.loads(run.train_summary.read_text())
    # 24 quick steps, unless the forgetting budget (the recipe's +10%, a stop) ended the run sooner
    assert (summary["steps"] == 24 or summary["stopped"] == "forgetting_budget") and summary["artifact_written"]
    evals = [r for r in run.read_metrics() if r.kind == "eval"]
    assert evals[-1].eval_loss < evals[0].eval_loss  # validation loss fell while training

    # The model folder loads with plain transformers, from safetensors, and differs from the base model.
    import torch
    from transformers import AutoModelForCausalLM

    from smalltune.models import load_model

    base, tok = load_model("smollm2-135m-instruct")
    tuned = AutoModelForCausalLM.from_pretrained(str(model_dir), use_safetensors=True).eval()
    ids = tok("How much is a check-up at Brightside Dental?", return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(base(**ids).logits, tuned(**ids).logits)

    # Evaluation compared base and fine-tuned on the same held-out questions: the fine-tuned model
    # assigns the reference answers a lower loss.
    task = json.loads(run.eval.read_text())["probes"]["task"]
    assert task["loss"]["finetuned"] < task["loss"]["base"]
    assert task["loss"]["ci"][1] < 0
