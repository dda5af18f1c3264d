"""Training-memory and artifact-size estimate for a model, a method, a batch and a precision.

The model's shape comes from its config alone: the model is built on torch's ``meta`` device, so
a 70B config is planned without a byte of weights. Memory is the sum of

* weights (fp32, as smalltune loads them) plus the method's own new parameters; with
  ``model.load_in_4bit`` (QLoRA) the decoder layers' linear weights take 4 bits each plus their
  quantization constants, the rest stays fp32 (peft's ``prepare_model_for_kbit_training``),
* gradients (fp32) and AdamW's two fp32 states for the trainable parameters,
* under bf16/fp16 autocast, a half-precision copy of the full-precision weights,
* activations: what autograd keeps per token of the batch for the backward pass, counted per
  decoder layer from the operations of a Llama-style block (norms, attention through SDPA, gated
  MLP; see :func:`layer_activations`), plus the output logits and their loss buffers, which for
  small models with big vocabularies are a large share (SmolLM2: 49,152 logits per token). On a
  CPU, a measured heap overhead (``CPU_HEAP_OVERHEAD``) is added on top of the counted tensors.
  A 4-bit base trains with gradient checkpointing: each layer keeps only its input.
* on a CPU, where the host memory is the device's, one best-model snapshot of what the method's
  ``trainable_state`` keeps (its ``state_params``): ``train/guards/snapshots.py`` keeps the weights
  checkpoint selection may still choose in host memory while they take at most a quarter of what is
  available, else writes them as files; one is the floor,
* over several processes (``processes``), what ``sharding`` divides among them: nothing for DDP,
  gradients and optimizer states for DeepSpeed ZeRO-2, and also the weights for ZeRO-3 and FSDP,
  which then hold one all-gathered unit (a decoder layer, or the embeddings) at a time besides.
  Activations are per process: ``train.batch_size`` is per device.

What depends on the method (trainable and new parameters, optimizer states, the activations a
layer keeps beyond the frozen block) is asked of the method's plugin (``train/methods``).

Hand-written because no maintained library estimates *training* memory for peft adapters on
transformers 5 (accelerate's ``estimate-memory`` covers weights only). benchmarks/plan_memory.py
checks the total against measured peak memory.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

GIB = 1024**3
# On a CPU the process's resident memory during backward exceeds the tensors autograd keeps by about
# a third of the activation memory (freed activation and gradient buffers stay in the C heap);
# measured with LoRA on SmolLM2-135M, 256 and 1,024 tokens per batch (benchmarks/README.md).
CPU_HEAP_OVERHEAD = 1.35
# 4-bit NormalFloat with double quantization: 0.5 byte per weight plus 0.127 bits of constants per
# weight (8-bit absmax per 64 weights, fp32 second-level constants per 256 blocks; QLoRA arXiv
# 2305.14314 section 3). bitsandbytes quantizes the decoder layers' linear weights; embeddings, the
# LM head and norms stay in full precision.
NF4_BYTES = 0.5 + 0.127 / 8
# What each --sharding strategy divides over the processes: (weights, gradients and optimizer states).
SHARDING = {"ddp": (False, False), "zero2": (False, True), "zero3": (True, True), "fsdp": (True, True)}


@dataclass
class ModelShape:
    """What the estimate needs to know about a decoder-only model."""

    name: str
    total_params: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int
    # (module name inside one decoder layer, in_features, out_features) of its nn.Linear modules
    layer_linears: list[tuple[str, int, int]] = field(default_factory=list)
    layer_params: int = 0  # parameters of one decoder layer

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim


@functools.lru_cache(maxsize=8)
def model_shape(name: str) -> ModelShape:
    """Shape of ``name`` (built-in name, model folder or hub id) from its config, without weights.

    >>> model_shape("smollm2-135m-instruct").total_params
    134515008
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..models import _hub_error, attention_dims, resolve

    where = resolve(name)
    try:
        cfg = AutoConfig.from_pretrained(where)
    except (OSError, ValueError) as e:
        raise _hub_error(name, e) from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    layers = getattr(text, "num_hidden_layers")
    hidden = getattr(text, "hidden_size")
    heads, kv_heads, head_dim = attention_dims(text)
    block = _first_block(model)
    linears = [(n, m.in_features, m.out_features) for n, m in block.named_modules()
               if isinstance(m, torch.nn.Linear)]
    return ModelShape(
        name=str(name), total_params=sum(p.numel() for p in model.parameters()), layers=layers, hidden=hidden,
        intermediate=getattr(text, "intermediate_size", 4 * hidden), heads=heads,
        kv_heads=kv_heads, head_dim=head_dim, vocab=getattr(text, "vocab_size"),
        max_positions=getattr(text, "max_position_embeddings", 2048) or 2048,
        layer_linears=linears, layer_params=sum(p.numel() for p in block.parameters()),
    )


def _first_block(model):
    """The first decoder layer: the first ModuleList whose items hold Linear layers."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and any(
                isinstance(m, torch.nn.Linear) for m in module[0].modules()):
            return module[0]
    raise ValueError("no decoder layers found")


# --- activations -----------------------------------------------------------------------------
def layer_activations(s: ModelShape, method, cfg, device: str = "cuda") -> float:
    """fp32-equivalent elements autograd keeps per token for one decoder layer, for ``method`` (a plugin
    instance from ``train.methods.METHODS``) with method section ``cfg``.

    Counted from the block's operations (transformers' Llama layer, SDPA attention with a padding
    mask, which repeats k/v to all heads), and checked against the tensors autograd actually saves
    (``torch.autograd.graph.saved_tensors_hooks``, see benchmarks/README.md): each RMSNorm keeps its
    input (the residual stream); SDPA keeps q, k, v and its output; the gated MLP keeps gate,
    silu(gate) and up (3 x intermediate). A linear with a frozen weight keeps nothing; what the
    method's own modules or trained weights keep is the method's ``layer_activations``.
    """
    h, i, q = s.hidden, s.intermediate, s.q_dim
    base = 2 * h + 4 * q + 3 * i  # norm inputs, SDPA q/k/v/out (k/v repeated to all heads), MLP
    return base + method.layer_activations(s, cfg, device)


def quantized_params(s: ModelShape) -> int:
    """Weights bitsandbytes stores in 4 bits: the decoder layers' linear weights (biases stay)."""
    return s.layers * sum(i * o for _, i, o in s.layer_linears)


def logits_activations(s: ModelShape) -> float:
    """fp32 elements per token at the loss: logits, the sliced copy, log-softmax and two gradients."""
    return 4 * s.vocab


@dataclass
class MemoryEstimate:
    """Estimated peak training memory in bytes, by part; ``fits`` compares with the device."""

    method: str
    batch_size: int
    seq_len: int
    precision: str
    trainable_params: int
    total_params: int
    weights: int
    gradients: int
    optimizer_states: int
    activations: int
    total: int
    snapshots: int = 0  # best-model snapshots held in host memory, counted where that is the device's (a CPU)
    device_memory: int | None = None
    fits: bool | None = None
    adapter_file_bytes: int = 0
    processes: int = 1  # the estimate is per process
    sharding: str = "ddp"
    load_in_4bit: bool = False

    def gib(self, part: str) -> float:
        return getattr(self, part) / GIB

    def to_dict(self) -> dict:
        out = asdict(self)
        for k in ("weights", "gradients", "optimizer_states", "activations", "snapshots", "total", "device_memory",
                  "adapter_file_bytes"):
            if out[k] is not None:
                out[f"{k}_gib"] = round(out[k] / GIB, 3)
        return out

    def summary(self) -> str:
        shown = ("weights", "gradients", "optimizer_states", "activations") + (("snapshots",) if self.snapshots else ())
        parts = ", ".join(f"{p.replace('_', ' ')} {self.gib(p):.2f}" for p in shown)
        dev = f" of {self.device_memory / GIB:.1f} GiB" if self.device_memory else ""
        how = [f"per process of {self.processes} ({self.sharding})"] if self.processes > 1 else []
        how += ["4-bit base"] if self.load_in_4bit else []
        return f"{self.total / GIB:.2f} GiB{dev} ({parts} GiB{'; ' + ', '.join(how) if how else ''})"


def estimate(s: ModelShape, method: str, method_cfg, batch_size: int, seq_len: int, precision: str = "fp32",
             device_memory: int | None = None, device: str = "cuda", processes: int = 1, sharding: str = "ddp",
             load_in_4bit: bool = False) -> MemoryEstimate:
    """Peak training memory of ``method`` on model ``s`` at ``batch_size`` x ``seq_len`` tokens, per process
    when ``processes`` > 1 (``sharding`` one of ddp, zero2, zero3, fsdp); ``load_in_4bit`` plans QLoRA.

    >>> est = estimate(model_shape("smollm2-135m-instruct"), "lora", MethodSection(), 8, 256)
    >>> est.total / 2**30   # GiB
    """
    from ..train.methods import METHODS

    plugin = METHODS.get(method, "method.name")()
    trainable, new = plugin.trainable_params(s, method_cfg)
    half = precision in ("bf16", "fp16")
    quantized = quantized_params(s) if load_in_4bit else 0
    full = s.total_params - quantized  # weights kept in fp32
    # Under autocast every full-precision matmul weight also exists as a half-precision copy: cached
    # for trainable weights, saved by each matmul for its backward for frozen ones. 4-bit weights are
    # dequantized one matmul at a time.
    weights = int(NF4_BYTES * quantized) + 4 * (full + new) + (2 * full if half else 0)
    gradients = 4 * trainable
    optimizer = 8 * plugin.optimizer_params(s, method_cfg)
    act_bytes = 2 if half else 4
    tokens = batch_size * seq_len
    layer = layer_activations(s, plugin, method_cfg, device) * act_bytes
    if load_in_4bit:  # gradient checkpointing: each layer keeps its input; one layer is recomputed at a time
        per_token = s.layers * s.hidden * act_bytes + 2 * layer
    else:  # all layers' activations, plus one layer's worth of gradients in flight during its backward
        per_token = (s.layers + 1) * layer
    per_token += logits_activations(s) * 4  # the loss upcasts logits to fp32 whatever the precision
    activations = int(tokens * per_token * (CPU_HEAP_OVERHEAD if device == "cpu" else 1.0))
    if sharding not in SHARDING:
        from ..errors import SmalltuneError

        raise SmalltuneError(f"--sharding must be one of {', '.join(SHARDING)}, got {sharding!r}")
    shard_weights, shard_states = SHARDING[sharding]
    if processes > 1 and shard_states:
        gradients, optimizer = gradients // processes, optimizer // processes
    if processes > 1 and shard_weights:
        # The unit being computed and the one prefetched are whole (all-gathered) on every process.
        unit = max(s.layer_params, s.total_params - s.layers * s.layer_params)
        weights = weights // processes + 2 * 4 * unit
    adapter = 4 * (new if plugin.frozen_base else trainable)
    # Several processes write their snapshots as files (every rank restores the choice from one).
    snapshots = 4 * plugin.state_params(s, method_cfg) if device == "cpu" and processes == 1 else 0
    total = weights + gradients + optimizer + activations + snapshots
    return MemoryEstimate(
        method=method, batch_size=batch_size, seq_len=seq_len, precision=precision, trainable_params=trainable,
        total_params=s.total_params + new, weights=weights, gradients=gradients, optimizer_states=optimizer,
        activations=activations, total=total, snapshots=snapshots, device_memory=device_memory,
        fits=None if device_memory is None else total <= device_memory, adapter_file_bytes=adapter,
        processes=processes, sharding=sharding, load_in_4bit=load_in_4bit,
    )


def max_seq_that_fits(s: ModelShape, method: str, method_cfg, precision: str, device_memory: int,
                      device: str = "cuda", **layout) -> int:
    """Longest sequence (multiple of 64) that fits at batch size 1, or 0 when not even 64 tokens do.
    ``layout``: ``processes``, ``sharding``, ``load_in_4bit`` as for :func:`estimate`."""
    one = estimate(s, method, method_cfg, 1, 1, precision, device=device, **layout)
    fixed = one.total - one.activations
    per_token = estimate(s, method, method_cfg, 1, 1024, precision, device=device, **layout).activations / 1024
    if device_memory <= fixed:
        return 0
    return int((device_memory - fixed) / per_token) // 64 * 64


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
