"""From a data file, a model and a device to a complete, commented recipe.

Order: read the data (counts per category, token lengths) -> the model's shape from its config ->
the device's memory -> size bands and method -> batch / precision that fit the memory estimate ->
every other key from the rules table (rules.py). Each decision keeps a one-line reason, written as
the YAML comment of its key and printed on the terminal.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SmalltuneError
from ..recipe import MethodSection, Recipe, recipe_from_dict
from ..train.precision import BF16_MIN_SPEEDUP
from .hardware import GIB, USABLE, Device, detect_device
from .memory import SHARDING, MemoryEstimate, ModelShape, estimate, human_bytes, max_seq_that_fits, model_shape
from .rules import BANDS, RULES, Context, band_for

LENGTH_SAMPLE = 2000  # examples tokenised to measure lengths (a seeded sample of bigger files)
MAX_LENGTH_CAP = 2048
MICRO_BATCHES = (8, 4, 2, 1)


@dataclass
class DataFacts:
    """What the planner knows about the training data."""

    n_train: int
    categories: dict[str, int]
    longest: int  # tokens, chat template included
    p95: int
    lengths_from: str  # "tokenizer" or "characters / 4 (no tokenizer)"
    n_validation: int | None = None


@dataclass
class Plan:
    """A planned recipe with the reasons behind it and its memory estimate."""

    recipe: Recipe
    notes: dict[str, str]
    memory: MemoryEstimate
    explanations: list[str]
    facts: dict = field(default_factory=dict)
    suggestions: list[str] = field(default_factory=list)  # what would fit, when nothing does

    @property
    def fits(self) -> bool:
        return bool(self.memory.fits)

    def to_dict(self) -> dict:
        return {"recipe": self.recipe.to_dict(), "notes": self.notes, "memory": self.memory.to_dict(),
                "explanations": self.explanations, "facts": self.facts, "suggestions": self.suggestions}

    def to_yaml(self) -> str:
        return self.recipe.to_yaml(notes=self.notes)


# --- data ------------------------------------------------------------------------------------
def data_facts(path: str, model: str, validation: str | None = None) -> DataFacts:
    """Counts per category and token lengths of a training file (lengths from a seeded sample)."""
    from ..data import load_examples
    from ..data.tokenize import render

    examples = load_examples(path)
    if not examples:
        raise SmalltuneError(f"{path}: no examples to plan for")
    cats = Counter(e.category for e in examples if e.category is not None)
    sample = examples if len(examples) <= LENGTH_SAMPLE else random.Random(0).sample(examples, LENGTH_SAMPLE)
    try:
        from ..models import load_tokenizer

        tok = load_tokenizer(model)
        texts = [render(tok, e.messages) for e in sample]
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        source = "tokenizer"
    except (SmalltuneError, OSError, ValueError):  # a config-only folder or offline hub id: estimate
        lengths = [sum(len(m["content"]) for m in e.messages) // 4 + 8 * len(e.messages) for e in sample]
        source = "characters / 4 (no tokenizer found for the model)"
    lengths.sort()
    n_val = len(load_examples(validation)) if validation else None
    return DataFacts(n_train=len(examples), categories=dict(cats), longest=lengths[-1],
                     p95=lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))], lengths_from=source,
                     n_validation=n_val)


# --- method and memory -------------------------------------------------------------------------
def choose_method(ctx: Context, registered, small_model: bool = True) -> None:
    """The band's method when installed (else lora); the reason goes to ``ctx.why``.

    A model under ``SMALL_MODEL`` parameters takes the band's ``small_model_method`` unless
    ``small_model`` is False (``plan_from_facts`` asks again so when that method's memory estimate does not fit).
    """
    from ..train.methods import SMALL_MODEL
    from .rules import _band_note

    small = ctx.band.small_model_method
    if small_model and small and small in registered and ctx.model_params < SMALL_MODEL:
        ctx.method = small
        ctx.why["method.name"] = (f"{_band_note(ctx)}, model under {SMALL_MODEL / 1e9:.0f}B parameters -> {small} "
                                  f"(benchmarks/README.md 1c: twice LoRA's key-fact recall)")
        return
    wanted = ctx.band.method
    alts = f" (also suited: {', '.join(ctx.band.alternatives)})" if ctx.band.alternatives else ""
    if wanted in registered:
        ctx.method = wanted
        ctx.why["method.name"] = f"{_band_note(ctx)} -> {wanted}{alts}"
    else:
        ctx.method = "lora"
        ctx.why["method.name"] = f"{_band_note(ctx)} calls for {wanted}, which is not installed; lora instead"


def fit_memory(ctx: Context, shape: ModelShape, cfg, device: Device,
               sharding: str = "ddp") -> tuple[MemoryEstimate, list[str]]:
    """Pick batch size, grad accumulation and precision so the estimate fits ``device.usable`` (per
    process: ``ctx.processes`` data-parallel processes share the effective batch, ``sharding`` decides
    what they share of the weights and optimizer).

    Returns the chosen estimate and, when nothing fits, what would.
    """
    precisions = (["bf16"] if device.bf16 else ["fp32", "fp16"]) if device.kind == "cuda" else \
        (["fp32", "bf16"] if device.bf16 else ["fp32"])
    effective, n = ctx.schedule.effective_batch, ctx.processes
    layout = {"processes": n, "sharding": sharding}
    chosen = None
    for micro in [b for b in MICRO_BATCHES if b * n <= effective] or [1]:
        for precision in precisions:
            est = estimate(shape, ctx.method, cfg, micro, ctx.max_length, precision, device.usable, device.kind,
                           **layout)
            if est.fits:
                chosen = est
                break
        if chosen:
            break
    suggestions: list[str] = []
    if chosen is None:
        chosen = estimate(shape, ctx.method, cfg, 1, ctx.max_length, precisions[-1], device.usable, device.kind,
                          **layout)
        suggestions = _what_would_fit(ctx, shape, cfg, device, precisions[-1], chosen)
    ctx.batch_size, ctx.precision = chosen.batch_size, chosen.precision
    ctx.grad_accum = max(1, effective // (chosen.batch_size * n))
    where = f"{device.usable / GIB:.1f} GiB usable of {device.source}"
    if not chosen.fits:
        ctx.why["train.batch_size"] = f"DOES NOT FIT even at batch 1: needs {chosen.summary()} ({where})"
        ctx.why["train.precision"] = f"{chosen.precision}: the most compact precision, still too big"
        return chosen, suggestions
    ctx.why["train.precision"] = f"{chosen.precision}: the first precision that fits"
    if device.kind == "cpu" and len(precisions) > 1:
        # Which is faster depends on the CPU that trains (bf16 autocast 1.45-1.54x fp32's steps on a Zen 4 EPYC
        # with AVX512_BF16 at the same decisions and end quality; slower without a fast bf16 path: benchmarks/
        # README.md, "bf16 vs fp32 over whole demo runs"), so where both fit, auto measures it at train time.
        both = [estimate(shape, ctx.method, cfg, chosen.batch_size, ctx.max_length, p, device.usable, device.kind,
                         **layout) for p in precisions]
        if all(e.fits for e in both):
            chosen, ctx.precision = max(both, key=lambda e: e.total), "auto"
            ctx.why["train.precision"] = (f"auto: {' and '.join(precisions)} both fit; training measures one decoder "
                                          f"layer in each on its CPU and takes bf16 autocast at >= "
                                          f"{BF16_MIN_SPEEDUP:g}x fp32's speed")
    ctx.why["train.batch_size"] = f"largest micro-batch whose estimate fits: {chosen.summary()} ({where})"
    return chosen, suggestions


def _what_would_fit(ctx: Context, shape: ModelShape, cfg, device: Device, precision: str,
                    est: MemoryEstimate) -> list[str]:
    from ..train.methods import METHODS

    layout = {"processes": est.processes, "sharding": est.sharding}
    fits = lambda e: " and fits" if e.total <= device.usable else ""  # noqa: E731
    out = []
    seq = max_seq_that_fits(shape, ctx.method, cfg, precision, device.usable, device.kind, **layout)
    if seq >= 64:
        out.append(f"data.max_length={seq} would fit at batch 1 (examples longer than that are truncated)")
    if not METHODS.get(ctx.method).frozen_base:
        lora = estimate(shape, "lora", MethodSection(), 1, ctx.max_length, precision, device=device.kind, **layout)
        out.append(f"method.name=lora would need {human_bytes(lora.total)}{fits(lora)}")
    elif device.kind == "cuda":  # QLoRA: bitsandbytes' 4-bit kernels need a CUDA GPU
        q = estimate(shape, ctx.method, cfg, 1, ctx.max_length, precision, device=device.kind, load_in_4bit=True,
                     **layout)
        out.append(f"model.load_in_4bit=true (QLoRA) would need {human_bytes(q.total)}{fits(q)}")
    if est.processes > 1 and est.sharding != "fsdp":
        f = estimate(shape, ctx.method, cfg, 1, ctx.max_length, precision, device=device.kind,
                     processes=est.processes, sharding="fsdp")
        out.append(f"--sharding fsdp over {est.processes} processes would need {human_bytes(f.total)} each{fits(f)}")
    out.append(f"a device with at least {human_bytes(est.total / USABLE[device.kind])} of memory "
               f"(this plan needs {human_bytes(est.total)} at {USABLE[device.kind]:.0%} usable)")
    return out


def choose_max_length(ctx: Context, facts: DataFacts, shape: ModelShape) -> None:
    cap = min(shape.max_positions, MAX_LENGTH_CAP)
    ctx.max_length = max(64, min(cap, -(-facts.longest // 64) * 64))
    cut = " (longer examples are truncated)" if facts.longest > cap else ""
    ctx.why["data.max_length"] = (f"longest example {facts.longest} tokens, 95th percentile {facts.p95} "
                                  f"({facts.lengths_from}); cap {cap}{cut}")


# --- the plan ----------------------------------------------------------------------------------
def plan(data, model: str = "smollm2-135m-instruct", device_memory_gib: float | None = None, update: bool = False,
         validation: str | None = None, test: str | None = None, output=None, processes: int = 1,
         sharding: str = "ddp") -> Plan:
    """Plan a recipe for ``data`` and ``model`` on this machine (or a device of ``device_memory_gib``), for
    ``processes`` data-parallel processes of one device each, sharded by ``sharding`` (ddp, zero2, zero3, fsdp).

    >>> p = plan("train.jsonl", output="recipe.yaml")
    >>> p.recipe.method.name, p.memory.fits
    ('lora', True)
    """
    if device_memory_gib is not None and device_memory_gib <= 0:
        raise SmalltuneError(f"--device-memory must be > 0 GiB, got {device_memory_gib:g}")
    if processes < 1:
        raise SmalltuneError(f"--processes must be >= 1, got {processes}")
    if sharding not in SHARDING:
        raise SmalltuneError(f"--sharding must be one of {', '.join(SHARDING)}, got {sharding!r}")
    local = Path(str(model)).expanduser()
    model = str(local.resolve()) if local.exists() else str(model)  # a folder: absolute, so the recipe works anywhere
    model_shape(model)  # a bad model name fails here, before the data is read (cached for the plan)
    facts = data_facts(str(data), model, validation)
    return plan_from_facts(facts, str(data), model, device_memory_gib, update, validation, test, output,
                           processes, sharding)


def plan_from_facts(facts: DataFacts, data: str, model: str, device_memory_gib: float | None = None,
                    update: bool = False, validation: str | None = None, test: str | None = None,
                    output=None, processes: int = 1, sharding: str = "ddp") -> Plan:
    """The plan for already-measured data facts (what :func:`plan` does after reading the file).

    >>> plan_from_facts(DataFacts(150_000, {}, 300, 200, "tokenizer"), "big.jsonl", "my-model").recipe.method.name
    'full'
    """
    from ..train.methods import METHODS

    shape = model_shape(model)
    device = detect_device(device_memory_gib)
    smallest = min(facts.categories.items(), key=lambda kv: kv[1]) if facts.categories else (None, facts.n_train)
    ctx = Context(n_train=facts.n_train, n_smallest=smallest[1], smallest_category=smallest[0],
                  has_validation_file=bool(validation), validation_count=facts.n_validation,
                  model_params=shape.total_params, update=update, processes=processes,
                  band=band_for(smallest[1]), schedule=band_for(facts.n_train))
    choose_method(ctx, METHODS)
    choose_max_length(ctx, facts, shape)
    memory, suggestions = _fit(ctx, shape, device, sharding)
    if not memory.fits and ctx.method == ctx.band.small_model_method:  # the small-model preference does not fit
        small = ctx.method
        choose_method(ctx, METHODS, small_model=False)
        ctx.why["method.name"] += f" ({small} does not fit this device)"
        memory, suggestions = _fit(ctx, shape, device, sharding)
    return _assemble(ctx, facts, shape, device, memory, suggestions, data, model, validation, test, output)


def _fit(ctx, shape, device, sharding):
    method_cfg = MethodSection(name=ctx.method, r=ctx.band.lora_r, alpha=2 * ctx.band.lora_r, dropout=ctx.band.dropout)
    return fit_memory(ctx, shape, method_cfg, device, sharding)


def _assemble(ctx, facts, shape, device, memory, suggestions, data, model, validation, test, output) -> Plan:
    from ..recipe import iter_fields
    from ..train.methods import METHODS

    method = METHODS.get(ctx.method)
    schema = {key for key, *_ in iter_fields()}
    values, notes = {}, {}
    for rule in RULES:
        if rule.key not in schema:
            continue  # a section this installation does not have
        if rule.key.startswith("method.") and rule.key != "method.name" and rule.key not in method.keys:
            continue  # a key the planned method does not read
        value, why = rule.decide(ctx)
        values[rule.key], notes[rule.key] = value, why
    if ctx.update:
        notes["train.lr"] += "; --update: lower rate for incremental training of a fine-tuned model"
    raw = _nested(values)
    raw["model"] = {"name": model}
    raw.setdefault("data", {}).update(train=_path_for(data, None), validation=_path_for(validation, None),
                                      test=_path_for(test, None))
    notes["model.name"] = f"{shape.total_params / 1e6:,.0f}M parameters, {shape.layers} layers"
    notes["data.train"] = f"{facts.n_train:,} examples" + (
        f" in {len(facts.categories)} categories" if facts.categories else "")
    notes["method"] = (f"{ctx.method}: {memory.trainable_params:,} trainable of {memory.total_params:,} parameters"
                       f"; saved {'adapter' if method.frozen_base else 'weights'} "
                       f"~{human_bytes(memory.adapter_file_bytes)}")
    recipe = recipe_from_dict(raw, source="(planned)")
    if not recipe.data.validation:
        notes["data.validation"] = "empty: carved from train (data.validation_fraction)"
    explanations = [f"{key}: {_show(values[key])}  — {notes[key]}" for key in values]
    explanations.insert(0, f"memory: {memory.summary()}; {'fits' if memory.fits else 'DOES NOT FIT'} "
                           f"({device.usable / GIB:.1f} GiB usable of {device.source})")
    explanations += [f"would fit: {s}" for s in suggestions]
    result = Plan(recipe=recipe, notes=notes, memory=memory, explanations=explanations, suggestions=suggestions,
                  facts={"data": facts.__dict__, "model": {"name": shape.name, "params": shape.total_params,
                                                           "layers": shape.layers, "hidden": shape.hidden},
                         "device": device.to_dict(), "band": ctx.band.label, "schedule_band": ctx.schedule.label,
                         "steps_per_epoch": ctx.steps_per_epoch, "total_steps": ctx.total_steps,
                         "processes": memory.processes, "sharding": memory.sharding})
    if output:
        _write(result, output, f"# Planned by `smalltune plan` for {facts.n_train:,} examples on {device.source}; "
                               f"each comment says why (`smalltune plan --explain` prints the rules).\n")
    return result


def _write(result: Plan, output, header: str) -> None:
    """Write the recipe atomically, data paths relative to its folder when the files lie inside it."""
    import copy

    from ..rundir import atomic_write_text

    base = Path(output).resolve().parent
    written = copy.deepcopy(result.recipe)
    for key in ("train", "validation", "test"):
        setattr(written.data, key, _path_for(getattr(written.data, key), base))
    atomic_write_text(output, header + written.to_yaml(notes=result.notes))


def _nested(values: dict) -> dict:
    out: dict = {}
    for key, value in values.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def _path_for(path: str | None, base: Path | None) -> str | None:
    """Relative to the recipe's folder when the file lies inside it (recipes resolve data paths there),
    else absolute, so the recipe works from any working directory."""
    if not path:
        return None
    full = Path(path).resolve()
    if base is not None and full.is_relative_to(base):
        return os.path.relpath(full, base)
    return str(full)


def _show(value) -> str:
    return "empty" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def explain_rows() -> tuple[list[tuple], list[tuple], list[tuple]]:
    """(bands, methods, rules) rows for ``--explain``; the methods' rows come from their plugins."""
    from ..train.methods import METHODS, SMALL_MODEL

    small = f" under {SMALL_MODEL / 1e9:g}B parameters"
    bands = [(b.label, b.method + (f" ({b.small_model_method}{small})" if b.small_model_method else ""),
              ", ".join(b.alternatives), f"{b.epochs:g}", b.evals_per_epoch, b.patience,
              b.effective_batch, b.weight_decay, b.dropout, b.lora_r) for b in BANDS]
    rates = [(m, f"{c.rate.lr:g}", f"{c.rate.update_lr:g}",
              f"{c.rate.source}" + (f"; x{c.rate.large_model_factor:g} above 30B parameters"
                                    if c.rate.large_model_factor != 1 else "")
              + (f"; x{c.rate.small_model_factor:g}{small}" if c.rate.small_model_factor != 1 else ""),
              ", ".join(k.removeprefix("method.") for k in c.keys) or "-") for m, c in METHODS.items()]
    rules = [(r.key, r.rule, r.source) for r in RULES]
    return bands, rates, rules
