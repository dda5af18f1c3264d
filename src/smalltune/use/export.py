"""Ship a run: its trained adapter (or model) with a model card, a merged model, a GGUF file.

Layout of ``smalltune export RUN_DIR --to DIR``::

    DIR/
      README.md            model card: base model, data sizes, recipe, key evaluation numbers with CIs
      adapter_config.json  the PEFT adapter as trained (adapter methods), loadable by PEFT and, for
      adapter_model.safetensors   LoRA, by vLLM; a whole-model method's folder is copied instead
      tokenizer files      the run's tokenizer and chat template
      run/                 recipe.yaml, train_summary.json, eval.json, provenance.json of the run
      merged/              --merge: the adapter merged into the base weights (plain transformers, safetensors)
      model.gguf           --gguf: llama.cpp's converter run on the merged folder

The merged model is only published after it reproduces the adapter's logits on fixed inputs (the
merge is arithmetic, so any difference beyond float rounding means something went wrong). The
whole export is written into a temporary folder and renamed into place, so a failed check or
converter leaves no half export behind.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import EXIT_FINDINGS, SmalltuneError
from ..rundir import atomic_write_text, publish_dir

# Accepted |logit difference| between adapter and merged model: ATOL + RTOL * |logit| per logit. Merging
# reorders fp32 sums (W x + s B A x vs (W + s B A) x); on the built-in 135M model, with logits up to ~30, that
# alone moves logits by up to ~1.1e-4, so a pure 1e-4 bound would refuse correct merges.
ATOL, RTOL = 1e-4, 1e-5
CONVERTER = "convert_hf_to_gguf.py"
GET_CONVERTER = ("git clone https://github.com/ggml-org/llama.cpp && pip install -r "
                 "llama.cpp/requirements/requirements-convert_hf_to_gguf.txt, then pass --converter "
                 "llama.cpp/convert_hf_to_gguf.py")
RUN_FILES = ("recipe.yaml", "train_summary.json", "eval.json", "provenance.json")
# Fixed inputs for the merge check: chat-formatted and plain text, short and longer.
CHECK_PROMPTS = ("When are you open on Saturdays?", "Summarise in one sentence: the clinic moved to a new address.",
                 "What is the capital of France?")
CHECK_TEXT = "The quick brown fox jumps over the lazy dog. 1, 2, 3."


@dataclass
class ExportResult:
    to: Path
    kind: str  # adapter | model | bottleneck
    merged: Path | None = None
    max_logit_diff: float | None = None  # adapter vs merged model on the check inputs
    gguf: Path | None = None

    def lines(self) -> list[str]:
        out = [f"exported {self.kind} with model card: {self.to}"]
        if self.merged:
            out.append(f"merged model: {self.merged} (max |logit difference| to the adapter {self.max_logit_diff:.1e}, "
                       f"tolerance {ATOL:g} + {RTOL:g}·|logit|)")
        if self.gguf:
            out.append(f"GGUF: {self.gguf}")
        return out


def find_converter(converter: str | None) -> list[str]:
    """The command that runs llama.cpp's HF-to-GGUF converter, or a SmalltuneError saying how to get it."""
    path = converter or shutil.which(CONVERTER)
    if not path or not Path(path).is_file():
        where = f"--converter {converter} does not exist" if converter else f"{CONVERTER} is not on PATH"
        raise SmalltuneError(f"--gguf needs llama.cpp's converter ({where}): {GET_CONVERTER}")
    return [sys.executable, path] if path.endswith(".py") else [path]


def export(run_dir: str | Path, to: str | Path, merge: bool = False, gguf: bool = False,
           converter: str | None = None, force: bool = False) -> ExportResult:
    """Export a finished run to ``to`` (see the module docstring for the layout).

    >>> export("runs/try1", "exports/try1", merge=True).merged
    PosixPath('exports/try1/merged')
    """
    from ..train.methods import METHODS
    from .card import model_card
    from .results import read_run

    res = read_run(run_dir)
    section = res.recipe.get("method")
    name = section.get("name", "lora") if isinstance(section, dict) else None
    if not res.recipe or name is None:
        raise SmalltuneError(f"{res.path}: no recipe.yaml with method.name; is this a run directory?")
    method = METHODS.get(name, "method.name")()
    artifact = res.path / method.artifact
    if not artifact.is_dir():
        raise SmalltuneError(f"{res.path}: no trained {method.artifact}/ yet; run `smalltune train` (or --resume) first")
    kind = "model" if method.artifact == "model" else "bottleneck" if name == "bottleneck" else "adapter"
    merge = merge or gguf
    if merge and kind == "bottleneck":
        raise SmalltuneError("--merge: bottleneck adapters are small networks with a GELU inside, not weight updates, "
                             "so they cannot be merged into the base weights; export without --merge/--gguf")
    if merge and name in ("prefix", "prompt"):
        raise SmalltuneError(f"--merge: {name} tuning learns virtual tokens, not weight updates, so it cannot be merged "
                             "into the base weights; export without --merge/--gguf")
    command = find_converter(converter) if gguf else None
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())) and not force:
        raise SmalltuneError(f"--to {to} already exists and is not empty; pass --force to replace it")

    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}."))
    try:
        result = ExportResult(to=to, kind=kind)
        for item in artifact.iterdir():
            if item.name != "README.md":  # PEFT's placeholder card; ours replaces it
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        for fname in RUN_FILES:
            if (res.path / fname).exists():
                (tmp / "run").mkdir(exist_ok=True)
                shutil.copy2(res.path / fname, tmp / "run" / fname)
        atomic_write_text(tmp / "README.md", model_card(res, kind))
        source = tmp  # the folder the GGUF converter reads
        if merge and kind == "adapter":
            result.max_logit_diff = write_merged(res.path, tmp / "merged")
            atomic_write_text(tmp / "merged" / "README.md", model_card(res, "merged"))
            source = result.merged = tmp / "merged"
        if command:
            run_converter(command, source, tmp / "model.gguf")
            result.gguf = tmp / "model.gguf"
        publish_dir(tmp, to)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # Paths inside the published folder, not the temporary one.
    result.merged = to / "merged" if result.merged else None
    result.gguf = to / "model.gguf" if result.gguf else None
    return result


def merge_adapter(model):
    """The base model with the adapter's weight updates added in (peft's ``merge_and_unload``)."""
    return model.merge_and_unload()


def write_merged(run_dir: Path, folder: Path) -> float:
    """Write the merged model to ``folder`` and check that, reloaded from disk, it gives the adapter's
    logits on fixed inputs; return the largest absolute logit difference."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..data.tokenize import render
    from ..train import load_trained

    model, tok, recipe = load_trained(run_dir)
    system = [{"role": "system", "content": recipe.data.system_prompt}] if recipe.data.system_prompt else []
    texts = [render(tok, system + [{"role": "user", "content": p}], add_generation_prompt=True) for p in CHECK_PROMPTS]
    inputs = [tok(t, return_tensors="pt", add_special_tokens=False) for t in [*texts, CHECK_TEXT]]
    with torch.no_grad():
        expected = [model(**x).logits.float() for x in inputs]
        merged = merge_adapter(model)
        merged.save_pretrained(str(folder), safe_serialization=True)
        tok.save_pretrained(str(folder))
        reloaded = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True, dtype=torch.float32).eval()
        got = [reloaded(**x).logits.float() for x in inputs]
    diff = max(float((g - e).abs().max()) for g, e in zip(got, expected))
    if not all(torch.allclose(g, e, rtol=RTOL, atol=ATOL) for g, e in zip(got, expected)):  # nan fails too
        raise SmalltuneError(f"--merge: the merged model's logits differ from the adapter's by up to {diff:.3g} "
                             f"(tolerance {ATOL:g} + {RTOL:g}·|logit|) on fixed inputs; nothing was exported. "
                             "Export without --merge and load the adapter with PEFT", exit_code=EXIT_FINDINGS)
    return diff


def run_converter(command: list[str], model_dir: Path, outfile: Path) -> None:
    proc = subprocess.run([*command, str(model_dir), "--outfile", str(outfile)], capture_output=True, text=True)
    if proc.returncode != 0 or not outfile.is_file():
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SmalltuneError(f"--gguf: {' '.join(command[-1:])} failed (exit {proc.returncode}): {last[0][:300]}",
                             exit_code=EXIT_FINDINGS)
