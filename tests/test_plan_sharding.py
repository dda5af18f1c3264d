"""Planning for several processes: what DDP, ZeRO-2, ZeRO-3 and FSDP divide, `plan --processes`, and the
example accelerate configs (the CPU one is launched for real; the GPU ones are only parsed here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import toy_records, write_jsonl
from smalltune.plan.memory import estimate, model_shape
from smalltune.plan.planner import DataFacts, plan_from_facts
from smalltune.recipe import MethodSection
from test_multiprocess import free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "accelerate"


@pytest.fixture(scope="module")
def llama7b(tmp_path_factory):
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("llama-7b")
    LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32).save_pretrained(path)
    return model_shape(str(path))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_each_sharding_divides_what_it_should(llama7b, method):
    s, cfg = llama7b, MethodSection(name=method)
    one = estimate(s, method, cfg, 2, 512, "bf16")
    ddp = estimate(s, method, cfg, 2, 512, "bf16", processes=8, sharding="ddp")
    zero2 = estimate(s, method, cfg, 2, 512, "bf16", processes=8, sharding="zero2")
    zero3 = estimate(s, method, cfg, 2, 512, "bf16", processes=8, sharding="zero3")
    fsdp = estimate(s, method, cfg, 2, 512, "bf16", processes=8, sharding="fsdp")
    # DDP: every process holds everything; the batch is per process, so activations never shrink
    assert (ddp.weights, ddp.gradients, ddp.optimizer_states, ddp.total) == (
        one.weights, one.gradients, one.optimizer_states, one.total)
    assert {e.activations for e in (ddp, zero2, zero3, fsdp)} == {one.activations}
    # ZeRO-2: gradients and optimizer states divided, weights whole
    assert zero2.weights == one.weights
    assert (zero2.gradients, zero2.optimizer_states) == (one.gradients // 8, one.optimizer_states // 8)
    # ZeRO-3 / FSDP: weights divided too, plus the all-gathered unit and the prefetched one
    unit = max(s.layer_params, s.total_params - s.layers * s.layer_params)
    for e in (zero3, fsdp):
        assert e.weights == one.weights // 8 + 2 * 4 * unit
        assert (e.gradients, e.optimizer_states) == (zero2.gradients, zero2.optimizer_states)
        assert e.processes == 8 and "per process of 8" in e.summary()
    assert fsdp.total < zero2.total < ddp.total


def test_full_fine_tuning_of_7b_fits_80_gb_gpus_only_when_sharded(llama7b):
    gpu = int(0.9 * 80 * 2**30)
    args = (llama7b, "full", MethodSection(name="full"), 1, 512, "bf16", gpu)
    assert not estimate(*args).fits  # ~121 GB of weights, gradients and AdamW states
    assert not estimate(*args, processes=8, sharding="ddp").fits
    assert estimate(*args, processes=8, sharding="fsdp").fits
    assert estimate(*args, processes=8, sharding="zero3").fits


def test_unknown_sharding_is_one_clear_error(llama7b):
    from smalltune.errors import SmalltuneError

    with pytest.raises(SmalltuneError, match="--sharding must be one of ddp, zero2, zero3, fsdp"):
        estimate(llama7b, "lora", MethodSection(), 1, 64, processes=2, sharding="zero9")


def test_plan_shares_the_effective_batch_among_processes(tiny_model_dir):
    facts = DataFacts(3_000, {}, 100, 80, "test")  # band 1k-10k: effective batch 16
    one = plan_from_facts(facts, "t.jsonl", str(tiny_model_dir), device_memory_gib=16)
    four = plan_from_facts(facts, "t.jsonl", str(tiny_model_dir), device_memory_gib=16, processes=4, sharding="fsdp")
    t1, t4 = one.recipe.train, four.recipe.train
    assert t1.batch_size * t1.grad_accum == 16
    assert t4.batch_size * t4.grad_accum * 4 == 16 and t4.batch_size == 4 and t4.grad_accum == 1
    assert four.facts["processes"] == 4 and four.facts["sharding"] == "fsdp"
    assert four.facts["steps_per_epoch"] == one.facts["steps_per_epoch"]  # same examples per optimizer step
    assert "x 4 processes" in four.notes["train.grad_accum"]
    many = plan_from_facts(facts, "t.jsonl", str(tiny_model_dir), device_memory_gib=16, processes=64)
    assert (many.recipe.train.batch_size, many.recipe.train.grad_accum) == (1, 1)  # cannot go below one each


def test_plan_cli_plans_for_processes_and_rejects_bad_counts(tmp_path, tiny_model_dir, capsys):
    from smalltune.cli import main
    from smalltune.recipe import load_recipe

    data = write_jsonl(tmp_path / "train.jsonl", toy_records(300))
    out = tmp_path / "r.yaml"
    assert main(["plan", str(data), "--model", str(tiny_model_dir), "--device-memory", "8", "--processes", "2",
                 "--sharding", "zero2", "--output", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "per process of 2 (zero2)" in err and "x 2 processes" in err
    t = load_recipe(out).train
    assert t.batch_size * t.grad_accum * 2 == 8
    assert main(["plan", str(data), "--processes", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --processes must be >= 1, got 0"
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main(["plan", str(data), "--sharding", "zero9"])


def test_explain_prints_methods_keys_and_sharding(capsys):
    from smalltune.cli import main

    assert main(["plan", "--explain"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    for text in ("2106.09685", "1902.00751", "Alpaca", "num_virtual_tokens", "top_k_layers",
                 "zero2 gradients + optimizer states", "fsdp weights and gradients + optimizer states",
                 "ddp nothing"):
        assert text in err, text
    from smalltune.plan.planner import explain_rows

    rates = {row[0]: row for row in explain_rows()[1]}
    assert rates["lora"][3].endswith("x0.5 above 30B parameters") and rates["lora"][4] == "r, alpha, dropout, target_modules"
    assert rates["full"][4] == "-" and "above 30B" not in rates["full"][3]


# --- example accelerate configs ---------------------------------------------------------------
EXPECTED = {"ddp_cpu.yaml": "MULTI_GPU", "fsdp_full.yaml": "FSDP", "fsdp_lora.yaml": "FSDP",
            "deepspeed_zero2.yaml": "DEEPSPEED", "deepspeed_zero3.yaml": "DEEPSPEED"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_configs_load_in_accelerate(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(EXAMPLES / name))
    assert config.distributed_type.value == EXPECTED[name]
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    if "zero" in name:  # the recipe's grad_accum must win: the config must not set its own
        assert raw["deepspeed_config"]["zero_stage"] == int(name[-6]) and \
            "gradient_accumulation_steps" not in raw["deepspeed_config"]
    if name.startswith("fsdp"):
        assert raw["fsdp_config"]["fsdp_version"] == 2
    assert f"--config_file examples/accelerate/{name}" in (EXAMPLES / name).read_text()  # says how to launch


def test_cpu_ddp_config_really_starts_two_processes(tmp_path):
    """accelerate's own CPU launcher starts one process without mpirun; the example config must start two."""
    script = tmp_path / "probe.py"
    # each rank writes its own file: two processes' prints into one pipe lost a line in about 1 run of 3
    script.write_text("import sys\nfrom pathlib import Path\nfrom accelerate import Accelerator\na = Accelerator()\n"
                      "Path(sys.argv[1], f'rank{a.process_index}').write_text("
                      "f'rank {a.process_index} of {a.num_processes} {a.distributed_type.value}')\n")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(EXAMPLES / "ddp_cpu.yaml"),
           "--main_process_port", str(free_port()), str(script), str(tmp_path)]  # a fixed port collides across runs
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    ranks = sorted(p.read_text() for p in tmp_path.glob("rank*"))
    assert ranks == ["rank 0 of 2 MULTI_CPU", "rank 1 of 2 MULTI_CPU"]
