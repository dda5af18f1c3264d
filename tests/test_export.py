"""`smalltune export`: the adapter reloads in PEFT to the run's logits, the card carries the numbers,
--merge is checked against the adapter, --gguf finds (or explains how to get) llama.cpp's converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import toy_records, write_jsonl
from smalltune.cli import main

EVAL = {
    "provenance": {}, "settings": {"quick": True},
    "probes": {
        "task": {"key_fact_recall": {"base": 0.1, "finetuned": 0.55, "delta": 0.45, "ci": [0.3, 0.6], "n": 12},
                 "loss": {"base": 2.9, "finetuned": 1.2, "delta": -1.7, "ci": [-2.0, -1.4], "n": 12},
                 "source": "test.jsonl"},
        "forgetting": {"reference_ppl": {"base": 20.0, "finetuned": 21.5, "delta": 1.5, "ci": [0.9, 2.1], "n": 30},
                       "reference_ppl_relative_change": {"value": 0.075, "ci": [0.045, 0.105], "n": 30}},
    },
    "verdicts": [{"name": "forgetting", "status": "ok", "value": 0.075, "threshold": 0.1,
                  "message": "general ability held", "fix": ""}],
    "samples": [],
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    from smalltune import train
    from smalltune.recipe import recipe_from_dict

    runs = {}

    def get(method: str) -> Path:
        if method not in runs:
            tmp = tmp_path_factory.mktemp(f"export-{method}")
            data = write_jsonl(tmp / "train.jsonl", toy_records())
            recipe = recipe_from_dict({
                "model": {"name": str(tiny_model_dir)}, "method": {"name": method},
                "data": {"train": str(data), "max_length": 128, "system_prompt": "You answer for the clinic."},
                "train": {"epochs": 1, "batch_size": 4, "lr": 1e-2, "seed": 0, "max_steps": 4},
                "eval": {"every_steps": 2, "batch_size": 8}, "output_dir": str(tmp / "run")}, [])
            runs[method] = Path(train(recipe, progress=False).run_dir)
        return runs[method]

    return get


def _logits(model, tok, text="Where is the clinic? It is at 12 Oak Road."):
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt")).logits


def test_adapter_export_reloads_in_peft_with_a_model_card(trained, tiny_model_dir, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from smalltune import load_trained

    run = trained("lora")
    (run / "eval.json").write_text(json.dumps(EVAL))
    out = tmp_path / "export"
    assert main(["export", str(run), "--to", str(out)]) == 0
    assert f"exported adapter with model card: {out}" in capsys.readouterr().out
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "merged").exists()
    assert sorted(p.name for p in (out / "run").iterdir()) == ["eval.json", "provenance.json", "recipe.yaml", "train_summary.json"]

    tuned, tok, _ = load_trained(run)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)).eval()
    assert torch.equal(_logits(reloaded, AutoTokenizer.from_pretrained(out)), _logits(tuned, tok))

    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\n")
    assert f"lora fine-tune of {tiny_model_dir}" in card
    assert "- train: 30 examples" in card and "- validation: 6 examples" in card  # 36 toy records, 6 carved off
    assert "| task: key_fact_recall | 0.1 | 0.55 | +0.45 | [0.3, 0.6] | 12 |" in card
    assert "| forgetting: general-text perplexity change |" in card and "[+4.5%, +10.5%]" in card
    assert "vllm serve BASE_MODEL --enable-lora --lora-modules finetuned=EXPORT_DIR --max-lora-rank 8" in card
    assert "lr: 0.01" in card  # the recipe


def test_merge_gives_the_adapters_logits(trained, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from smalltune import load_trained
    from smalltune.use.export import ATOL, export

    run = trained("lora")
    (run / "eval.json").unlink(missing_ok=True)
    result = export(run, tmp_path / "export", merge=True)
    assert result.merged == tmp_path / "export" / "merged" and result.max_logit_diff <= ATOL
    weights = load_file(str(result.merged / "model.safetensors"))
    assert not any("lora" in k for k in weights)
    merged = AutoModelForCausalLM.from_pretrained(result.merged).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tuned, tok, _ = load_trained(run)
    assert torch.allclose(_logits(merged, tok), _logits(tuned, tok), atol=1e-4)
    assert not torch.allclose(_logits(merged, tok), _logits(base, tok), atol=1e-3)  # the update is in the weights
    assert "library_name: transformers" in (result.merged / "README.md").read_text()
    assert "Not evaluated" in (tmp_path / "export" / "README.md").read_text()


def test_a_merge_that_changes_the_logits_is_refused(trained, tmp_path, monkeypatch, capsys):
    from smalltune.use import export as export_module

    real = export_module.merge_adapter

    def broken_merge(model):  # e.g. a merge that dropped the LoRA scaling on one layer
        merged = real(model)
        with torch.no_grad():
            merged.model.layers[0].mlp.down_proj.weight.mul_(1.5)
        return merged

    monkeypatch.setattr(export_module, "merge_adapter", broken_merge)
    out = tmp_path / "export"
    assert main(["export", str(trained("lora")), "--to", str(out), "--merge"]) == 1
    err = capsys.readouterr().err
    assert "the merged model's logits differ from the adapter's by up to" in err and "nothing was exported" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]


def test_gguf_without_converter_says_how_to_get_it(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "export"
    assert main(["export", str(trained("lora")), "--to", str(out), "--gguf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "convert_hf_to_gguf.py is not on PATH" in err
    assert "git clone https://github.com/ggml-org/llama.cpp" in err and "--converter" in err
    assert not out.exists()


def test_gguf_runs_the_converter_on_the_merged_model(trained, tmp_path, capsys):
    fake = tmp_path / "convert_hf_to_gguf.py"  # records its arguments, writes a GGUF-looking file
    fake.write_text("import json, sys, pathlib\n"
                    "args = sys.argv[1:]\n"
                    "out = pathlib.Path(args[args.index('--outfile') + 1])\n"
                    "assert (pathlib.Path(args[0]) / 'config.json').exists()\n"
                    "out.write_bytes(b'GGUF' + json.dumps(args).encode())\n")
    out = tmp_path / "export"
    assert main(["export", str(trained("lora")), "--to", str(out), "--gguf", "--converter", str(fake)]) == 0
    assert "GGUF: " in capsys.readouterr().out
    data = (out / "model.gguf").read_bytes()
    assert data.startswith(b"GGUF") and json.loads(data[4:])[0].endswith("merged")  # converted the merged folder
    assert (out / "merged" / "model.safetensors").exists()


def test_full_fine_tuning_exports_a_plain_model(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    from smalltune import load_trained
    from smalltune.use.export import export

    run = trained("full")
    result = export(run, tmp_path / "export", merge=True)  # nothing to merge: the model is already whole
    assert result.kind == "model" and result.merged is None
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    tuned, tok, _ = load_trained(run)
    assert torch.equal(_logits(model, tok), _logits(tuned, tok))
    assert "library_name: transformers" in (tmp_path / "export" / "README.md").read_text()


def test_prompt_tuning_cannot_be_merged_and_existing_folders_are_kept(trained, tmp_path, capsys):
    run = trained("prompt")
    assert main(["export", str(run), "--to", str(tmp_path / "x"), "--merge"]) == 2
    assert "prompt tuning learns virtual tokens" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(["export", str(run), "--to", str(busy)]) == 2
    assert "already exists and is not empty; pass --force" in capsys.readouterr().err
    assert main(["export", str(run), "--to", str(busy), "--force"]) == 0
    assert not (busy / "keep.txt").exists() and (busy / "adapter_config.json").exists()


def test_a_run_without_artifact_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text("method:\n  name: lora\n")
    assert main(["export", str(tmp_path / "run"), "--to", str(tmp_path / "out")]) == 2
    assert "no trained adapter/ yet" in capsys.readouterr().err
