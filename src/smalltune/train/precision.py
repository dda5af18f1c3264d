"""``train.precision: auto``: the precision that is right on this machine, at this model's shapes.

GPUs keep a rule: bf16 where the GPU supports it, else fp16 with accelerate's loss scaler; both run
on tensor cores far faster than fp32. CPUs differ too much for a rule: a CPU with AMX runs bf16
matmuls several times faster than fp32, one without AVX-512 BF16 runs them slower, and bf16 autocast
on our CPUs measured +5% on one and slower on another. So on a CPU, ``auto`` times forward and
backward of ONE decoder layer of the model's own architecture (built from its config with random
weights; nothing is loaded) at the training's sequence length, in fp32 and under bf16 autocast (what
accelerate's bf16 does on a CPU), and takes bf16 only when it is clearly faster. The decision is
cached per device, model shape and batch shape, so a tuning search or cross-validation measures once.

Hand-written: accelerate and transformers pick a precision by device capability only, and no library
we use times a model's own layer to choose one. torch is imported on first use, so the planner's rules
table reads :data:`BF16_MIN_SPEEDUP` without it.

>>> choose_precision("auto", recipe).reason
'auto: bf16 autocast measured 1.04x, below 1.15x'
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

# bf16 autocast must beat fp32 by this much in the layer measurement to be chosen. Best-of timings of
# a few runs on a shared CPU still move by 5-10%, and the layer is only part of a step: the LM head,
# the loss (on fp32 logits either way), the optimizer and the data are not measured and gain less, so
# a small layer gain shrinks in the whole step, and is not worth bf16's rounding of every matmul.
BF16_MIN_SPEEDUP = 1.15
# The measured rows of a micro-batch: max(1, MEASURED_TOKENS // sequence length). Matmuls with 512 rows
# already run at full speed, and the measurement stays about a second on two idle cores for the 135M model.
MEASURED_TOKENS = 512
# Timing rounds (fp32 then bf16, alternated so drift hits both): at least MIN_ROUNDS (the first one
# also warms up kernels and the allocator, so best-of needs a second), more while under the budget.
MIN_ROUNDS, MAX_ROUNDS, TIME_BUDGET_S = 2, 5, 1.0
# What a layer's speed depends on (with the batch shape): two models that agree on these share a decision.
SHAPE_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
              "head_dim", "hidden_act")
_DECISIONS: dict[tuple, PrecisionChoice] = {}  # in-process: tuning trials and folds measure once


@dataclass
class PrecisionChoice:
    """What ``train.precision`` resolved to and why: logged in the run's start event, shown in its header."""

    precision: str  # fp32 | bf16 | fp16: what training runs in
    requested: str  # the recipe's train.precision
    reason: str  # one line a person reads: "auto: bf16 autocast measured 1.04x, below 1.15x"
    device: str = ""
    fp32_seconds: float | None = None  # best-of forward+backward of one decoder layer, measured rows
    bf16_seconds: float | None = None  # the same under bf16 autocast
    shape: dict = field(default_factory=dict)  # batch, seq, hidden (training); rows (measured); trainable

    @property
    def ratio(self) -> float | None:
        """bf16's speed-up over fp32 (above 1: bf16 is faster); None when nothing was measured."""
        return self.fp32_seconds / self.bf16_seconds if self.fp32_seconds and self.bf16_seconds else None

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if v not in (None, {})}
        return out | ({"ratio": round(self.ratio, 3)} if self.ratio else {})


def decide(fp32_seconds: float, bf16_seconds: float) -> tuple[str, str]:
    """(precision, reason) from measured times: bf16 only at :data:`BF16_MIN_SPEEDUP` or more.

    >>> decide(1.0, 0.5)
    ('bf16', 'auto: bf16 autocast measured 2.00x, at least 1.15x')
    """
    ratio = fp32_seconds / bf16_seconds
    if ratio >= BF16_MIN_SPEEDUP:
        return "bf16", f"auto: bf16 autocast measured {ratio:.2f}x, at least {BF16_MIN_SPEEDUP:g}x"
    return "fp32", f"auto: bf16 autocast measured {ratio:.2f}x, below {BF16_MIN_SPEEDUP:g}x"


def training_device() -> str:
    """The device kind accelerate trains on in this process."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def choose_precision(precision: str, recipe=None) -> PrecisionChoice:
    """What ``precision`` (a ``train.precision`` value) trains in on this device; ``auto`` on a CPU measures
    at ``recipe``'s model and batch shapes (fp32 when no recipe is given). Explicit values are never measured.

    >>> choose_precision("bf16").reason
    'set in the recipe'
    """
    if precision != "auto":
        return PrecisionChoice(precision, precision, "set in the recipe")
    device = training_device()
    return AUTO.get(device, _fp32_elsewhere)(recipe, device)


def _gpu(recipe, device: str) -> PrecisionChoice:
    import torch

    if torch.cuda.is_bf16_supported():
        return PrecisionChoice("bf16", "auto", "auto: this GPU supports bf16", device)
    return PrecisionChoice("fp16", "auto", "auto: this GPU has no bf16; fp16 with a loss scaler", device)


def _fp32_elsewhere(recipe, device: str) -> PrecisionChoice:
    # The timing loop waits for CPU work only (no device synchronisation): other devices (MPS) keep fp32.
    return PrecisionChoice("fp32", "auto", f"auto: fp32 on {device} (bf16 is measured on CPUs only)", device)


def _measured(recipe, device: str) -> PrecisionChoice:
    if recipe is None:
        return PrecisionChoice("fp32", "auto", "auto: fp32 (no model given to measure)", device)
    processes = launched_processes()
    if processes > 1:  # ranks timing the same busy CPUs could disagree, and agreeing needs a collective this early
        return PrecisionChoice("fp32", "auto", f"auto: fp32 with {processes} processes (measured in one-process "
                                               "runs only)", device)
    try:
        config, shape = _layer_config(recipe), _shape(recipe)
    except Exception as e:  # noqa: BLE001 - a model that cannot be read fails in its own load, with its own error
        return PrecisionChoice("fp32", "auto", f"auto: fp32, not measured ({_first_line(e)})", device)
    key = _key(device, config, shape)
    if key not in _DECISIONS:
        _DECISIONS[key] = _measure(config, shape, device)
    return _DECISIONS[key]


def _key(device: str, config, shape: dict) -> tuple:
    """What a decision depends on: the device, the layer's shape and the batch shape."""
    return (device, *(getattr(config, k, None) for k in SHAPE_KEYS), *shape.values())


AUTO: dict[str, Callable[..., PrecisionChoice]] = {"cuda": _gpu, "cpu": _measured}  # else _fp32_elsewhere


def launched_processes() -> int:
    """Processes the launcher started, read from its environment as accelerate reads it. Not from a
    ``PartialState``: made before the Accelerator, under ``ACCELERATE_USE_CPU=1 accelerate launch`` it set up
    one process per rank, each its own main (tests/test_multiprocess.py)."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1)


def _layer_config(recipe):
    """The model's config with one decoder layer, fed embeddings directly (no vocabulary to build)."""
    from transformers import AutoConfig

    from ..models import resolve

    m = recipe.model
    config = AutoConfig.from_pretrained(resolve(m.name, m.revision), revision=m.revision,
                                        trust_remote_code=m.trust_remote_code)
    config.num_hidden_layers = 1
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds must match the count
        config.layer_types = config.layer_types[:1]
    config.vocab_size, config.pad_token_id, config.use_cache = 1, None, False
    return config


def _shape(recipe) -> dict:
    from .methods import METHODS

    batch, seq = recipe.train.batch_size, recipe.data.max_length
    # A frozen base (LoRA and kin) computes no weight gradients: its backward is about half a full one's.
    trainable = not METHODS.get(recipe.method.name, "method.name").frozen_base
    return {"batch": batch, "seq": seq, "rows": max(1, min(batch, MEASURED_TOKENS // seq)), "trainable": trainable}


def _measure(config, shape: dict, device: str) -> PrecisionChoice:
    try:
        fp32, bf16 = time_layer(config, shape["rows"], shape["seq"], shape["trainable"])
    except Exception as e:  # noqa: BLE001 - an architecture we cannot build alone still trains, in fp32
        return PrecisionChoice("fp32", "auto", f"auto: fp32, not measured ({_first_line(e)})", device,
                               shape=shape | {"hidden": config.hidden_size})
    precision, reason = decide(fp32, bf16)
    return PrecisionChoice(precision, "auto", reason, device, round(fp32, 5), round(bf16, 5),
                           shape | {"hidden": config.hidden_size})


def time_layer(config, rows: int, seq: int, trainable: bool) -> tuple[float, float]:
    """Best-of seconds of one decoder layer's forward and backward on the CPU: (fp32, bf16 autocast)."""
    import torch
    from transformers import AutoModel

    from .attention import fp32_attention

    with torch.random.fork_rng(devices=[]):  # random init must not move training's seeded RNG
        body = AutoModel.from_config(config).train()
        x = torch.randn(rows, seq, config.hidden_size, requires_grad=True)
    body.requires_grad_(trainable)
    fp32_attention(body)  # what a bf16 training on a CPU runs (train/attention.py); fp32 runs the same function

    def once(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = body(inputs_embeds=x).last_hidden_state
        out.float().mean().backward()
        seconds = time.perf_counter() - start
        body.zero_grad(set_to_none=True)
        x.grad = None
        return seconds

    best, start = [math.inf, math.inf], time.perf_counter()
    for n in range(MAX_ROUNDS):
        if n >= MIN_ROUNDS and time.perf_counter() - start > TIME_BUDGET_S:
            break
        best = [min(best[0], once(False)), min(best[1], once(True))]
    return best[0], best[1]


def recorded_precision(run_dir) -> dict:
    """What a run's start event recorded of its precision (:meth:`PrecisionChoice.to_dict`); {} when nothing was."""
    from ..rundir import RunDir

    run = RunDir(run_dir)
    if not run.metrics.exists():
        return {}
    start = next((r for r in run.read_metrics() if r.kind == "event" and r.event == "start"), None)
    return (start.extra.get("precision") or {}) if start else {}


def keep_recorded(recipe, run_dir) -> None:
    """On --resume: train on in the precision the run started with (its start event), not a new measurement --
    a ratio near :data:`BF16_MIN_SPEEDUP` could otherwise flip the precision halfway through a run."""
    if recipe.train.precision != "auto" or training_device() != "cpu":
        return
    recorded = recorded_precision(run_dir)
    if recorded.get("requested") != "auto":
        return
    try:
        config, shape = _layer_config(recipe), _shape(recipe)
    except Exception:  # noqa: BLE001 - nothing to keep: the run then measures, as it did when it started
        return
    fields = {k: v for k, v in recorded.items() if k in PrecisionChoice.__dataclass_fields__}
    _DECISIONS[_key("cpu", config, shape)] = PrecisionChoice(
        **fields | {"reason": f"{recorded.get('reason', 'auto')} (when the run started; kept on resume)"})


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__
