"""The model card an export carries (``README.md``, the file model hubs show): what the model is,
what it was trained on, what the evaluation measured with its CIs, and how to load it.

It is written only from the run's result files (read through :mod:`smalltune.use.results`), like
the report, so an export can be re-made from a copied run directory.
"""

from __future__ import annotations

from ..report.markdown import cell
from ..report.render import compare_rows, fmt
from .results import RunView

# The headline numbers of each probe, in the order a reader asks for them.
KEY_METRICS = {
    "task": ("key_fact_recall", "rouge_l", "exact_match", "token_accuracy", "loss", "perplexity"),
    "forgetting": ("reference_ppl", "general_accuracy"),
    "memorization": ("memorized_rate", "verbatim_rate_long"),
}
LOADERS = {"adapter": "peft", "model": "transformers", "merged": "transformers", "bottleneck": "smalltune"}


def key_metric_rows(res: RunView) -> list[dict]:
    """Headline base-vs-fine-tuned rows (``probe: metric``) with their CIs, from eval.json."""
    rows = []
    for probe, names in KEY_METRICS.items():
        found = {r["name"]: r for r in compare_rows(res.probes.get(probe))[0]}
        rows += [{**found[n], "name": f"{probe}: {n}"} for n in names if n in found and found[n].get("n")]
    rel = (res.probes.get("forgetting") or {}).get("reference_ppl_relative_change")
    if isinstance(rel, dict) and rel.get("value") is not None:
        rows.append({"name": "forgetting: general-text perplexity change", "base": None, "finetuned": None,
                     "delta": rel["value"], "ci": rel.get("ci"), "n": rel.get("n"), "percent": True})
    return rows


def model_card(res: RunView, kind: str, vllm_name: str = "finetuned") -> str:
    """README.md text for an export of ``kind``: "adapter" (PEFT), "model" (a whole-model method's
    folder), "merged" (adapter merged into the base) or "bottleneck" (smalltune's own adapter)."""
    r = res.recipe
    model = (r.get("model") or {}).get("name") or "unknown"
    method = (r.get("method") or {}).get("name") or "unknown"
    title = res.name
    lines = ["---", f"library_name: {LOADERS[kind]}"]
    if _hub_id(model):
        lines.append(f"base_model: {model}")
    lines += ["tags:", "- smalltune", f"- {method}", "---", "",
              f"# {title}: {method} fine-tune of {model}", "",
              f"Fine-tuned with smalltune; exported from the run directory `{res.path}`. "
              "Every number below comes from that run's result files.", ""]
    lines += ["## Base model", "", _base_text(model), ""]
    lines += ["## Training data", ""] + _data_lines(res) + [""]
    lines += ["## Evaluation", ""] + _eval_lines(res) + [""]
    lines += ["## How to load", ""] + _load_lines(kind, model, method, r, vllm_name) + [""]
    lines += ["## Recipe", "", "<details><summary>The resolved recipe of the run (recipe.yaml; `smalltune recipe` documents "
              "every key)</summary>", "", "```yaml", (res.path / "recipe.yaml").read_text(encoding="utf-8").rstrip()
              if (res.path / "recipe.yaml").exists() else "# recipe.yaml missing from the run directory", "```", "",
              "</details>", ""]
    prov = res.provenance
    if prov:
        libs = prov.get("libraries") or {}
        lines += ["## Provenance", "", f"smalltune {prov.get('smalltune_version', '?')}"
                  + "".join(f", {k} {v}" for k, v in libs.items()) + f"; seed {prov.get('seed', '?')}.", ""]
    return "\n".join(lines)


def _hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def _base_text(model: str) -> str:
    from ..models import BUILTIN_MODELS

    if model in BUILTIN_MODELS:
        spec = BUILTIN_MODELS.get(model)
        return (f"smalltune's built-in `{model}`: {spec.description} (`{spec.pip_install}`). The adapter was trained on "
                "these dequantized weights; on other copies of the model (e.g. the original bf16 release) it applies, "
                "but its outputs will differ slightly: prefer the merged export to reproduce the evaluation exactly.")
    return f"`{model}`" + (" (Hugging Face Hub)" if _hub_id(model) else " (a local folder)")


def _data_lines(res: RunView) -> list[str]:
    data = res.recipe.get("data") or {}
    sdata = (res.summary or {}).get("data") or {}
    out = [f"- training file: `{data.get('train')}`" if data.get("train") else "- training file: unknown"]
    for split in ("train", "validation"):
        st = sdata.get(split) or {}
        if st:
            out.append(f"- {split}: {fmt(st.get('examples'))} examples, {fmt(st.get('tokens'))} tokens "
                       f"({fmt(st.get('trainable_tokens'))} trained on)")
    if sdata.get("validation_source"):
        out.append(f"- validation from: {sdata['validation_source']}")
    if data.get("system_prompt"):
        out.append(f"- system prompt: {cell(data['system_prompt'])}")
    s = res.summary
    if s:
        out.append(f"- training: {fmt(s.get('steps'))} steps ({fmt(s.get('epochs'))} epochs), stopped by "
                   f"{s.get('stopped', '?')}; kept {s.get('selection') or 'the last step'}")
    else:
        out.append("- training: no train_summary.json (training did not finish)")
    return out


def _eval_lines(res: RunView) -> list[str]:
    if res.eval is None:
        return ["Not evaluated: the run directory has no eval.json (run `smalltune evaluate RUN_DIR`)."]
    task = res.probes.get("task") or {}
    out = [f"Base model vs this model on the same inputs; the CI is a 95% paired bootstrap CI of the change. "
           f"Held-out questions: {cell(task.get('source') or 'see eval.json')}.", "",
           "| metric | base | fine-tuned | change | 95% CI of the change | n |", "| --- | ---: | ---: | ---: | --- | ---: |"]
    for row in key_metric_rows(res):
        d = row["delta"]
        change = (f"{d:+.1%}" if row.get("percent") else f"{d:+.4g}") if isinstance(d, (int, float)) else fmt(d)
        ci = row.get("ci") or [None, None]
        ci_text = (f"[{ci[0]:+.1%}, {ci[1]:+.1%}]" if row.get("percent") else fmt(ci)) \
            if all(isinstance(c, (int, float)) for c in ci) else "—"
        out.append(f"| {cell(row['name'])} | {cell(row['base'])} | {cell(row['finetuned'])} | {change} | {ci_text} | {cell(row['n'])} |")
    if res.verdicts:
        out += ["", "Verdicts: " + "; ".join(f"**{v.get('status')}** {cell(v.get('name', ''))}: {cell(v.get('message', ''))}"
                                   for v in res.verdicts)]
    return out


def _load_lines(kind: str, model: str, method: str, recipe: dict, vllm_name: str) -> list[str]:
    if kind in ("model", "merged"):
        where = "EXPORT_DIR/merged" if kind == "merged" else "EXPORT_DIR"
        return ["A plain transformers model folder (safetensors), tokenizer and chat template included:", "", "```python",
                "from transformers import AutoModelForCausalLM, AutoTokenizer",
                f'model = AutoModelForCausalLM.from_pretrained("{where}")',
                f'tokenizer = AutoTokenizer.from_pretrained("{where}")', "```", "",
                f"vLLM serves it like any model: `vllm serve {where}`."]
    if kind == "bottleneck":
        return ["Bottleneck adapters are smalltune's own format (no PEFT or vLLM loader exists for them); load the "
                "run with `smalltune.load_trained(RUN_DIR)` or chat with it: `smalltune chat RUN_DIR`."]
    out = ["A PEFT adapter (safetensors) for the base model above:", "", "```python",
           "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer",
           'base = AutoModelForCausalLM.from_pretrained("BASE_MODEL")  # the base model named above',
           'model = PeftModel.from_pretrained(base, "EXPORT_DIR")',
           'tokenizer = AutoTokenizer.from_pretrained("EXPORT_DIR")', "```", ""]
    if method == "lora":
        rank = (recipe.get("method") or {}).get("r", 16)
        out += ["vLLM (LoRA adapters; the base model must be a transformers folder or hub id):", "", "```bash",
                f"vllm serve BASE_MODEL --enable-lora --lora-modules {vllm_name}=EXPORT_DIR --max-lora-rank {_vllm_rank(rank)}",
                "```", "", f'then ask for `"model": "{vllm_name}"` in OpenAI-style requests.']
    else:
        out.append(f"vLLM serves LoRA adapters only; for {method}, export with `--merge` and serve the merged folder."
                   if method in ("dora", "ia3") else f"vLLM has no loader for {method} adapters; use PEFT.")
    return out


def _vllm_rank(r) -> int:
    """vLLM's --max-lora-rank takes one of a few sizes; the smallest that holds rank ``r``."""
    return next((x for x in (8, 16, 32, 64, 128, 256, 320, 512) if x >= int(r)), int(r))
