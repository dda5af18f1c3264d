"""Training-memory and artifact-size estimate for a model, a method, a batch and a precision.

The model's shape comes from its config alone: the model is built on torch's ``meta`` device, so
a 70B config is planned without a byte of weights. Memory is the sum of

* weights (fp32, as smalltune loads them) plus the method's own new parameters,
* gradients (fp32) and AdamW's two fp32 states for the trainable parameters,
* under bf16/fp16 autocast, a half-precision copy of the weights (cached or saved for backward),
* activations: what autograd keeps per token of the batch for the backward pass, counted per
  decoder layer from the operations of a Llama-style block (norms, attention through SDPA, gated
  MLP; see :func:`layer_activations`), plus the output logits and their loss buffers, which for
  small models with big vocabularies are a large share (SmolLM2: 49,152 logits per token). On a
  CPU, a measured heap overhead (``CPU_HEAP_OVERHEAD``) is added on top of the counted tensors.

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

    from ..models import _hub_error, resolve

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
    heads = getattr(text, "num_attention_heads")
    block = _first_block(model)
    linears = [(n, m.in_features, m.out_features) for n, m in block.named_modules()
               if isinstance(m, torch.nn.Linear)]
    return ModelShape(
        name=str(name), total_params=sum(p.numel() for p in model.parameters()), layers=layers, hidden=hidden,
        intermediate=getattr(text, "intermediate_size", 4 * hidden), heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or hidden // heads, vocab=getattr(text, "vocab_size"),
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


# --- trainable parameters per method ---------------------------------------------------------
# Each function returns (trainable, new) parameter counts: ``new`` are parameters the method adds
# to the model (adapters), which also live in memory as weights. Unknown method settings fall back
# to the defaults the method plugins use.
def _lora(s: ModelShape, cfg, dora: bool = False) -> tuple[int, int]:
    r = getattr(cfg, "r", 8)
    targets = getattr(cfg, "target_modules", "all-linear")
    chosen = [(n, i, o) for n, i, o in s.layer_linears
              if targets == "all-linear" or n.rsplit(".", 1)[-1] in set(targets)]
    n = s.layers * sum(r * (i + o) + (o if dora else 0) for _, i, o in chosen)
    return n, n


def _bottleneck(s: ModelShape, cfg) -> tuple[int, int]:
    # h + up(gelu(down(h))) after each named projection: down (out x b + b) and up (b x out + out)
    b = getattr(cfg, "bottleneck_size", 16)
    after = set(getattr(cfg, "bottleneck_after", ["o_proj", "down_proj"]))
    n = s.layers * sum(2 * o * b + b + o for name, _, o in s.layer_linears if name.rsplit(".", 1)[-1] in after)
    return n, n


def _partial(s: ModelShape, cfg) -> tuple[int, int]:
    k = min(getattr(cfg, "top_k_layers", 2) or 0, s.layers)  # named extra modules are not counted
    return k * s.layer_params, 0


TRAINABLE = {
    "lora": _lora,
    "dora": lambda s, c: _lora(s, c, dora=True),
    # peft's IA3 for Llama scales k_proj and v_proj outputs and down_proj's input
    "ia3": lambda s, c: ((n := s.layers * (2 * s.kv_heads * s.head_dim + s.intermediate)), n),
    "prefix": lambda s, c: ((n := getattr(c, "num_virtual_tokens", 20) * s.layers * 2 * s.kv_heads * s.head_dim), n),
    "prompt": lambda s, c: ((n := getattr(c, "num_virtual_tokens", 20) * s.hidden), n),
    "bottleneck": _bottleneck,
    "partial": _partial,
    "hft": lambda s, c: (int(s.layers * s.layer_params * getattr(c, "hft_fraction", 0.5)), 0),
    "full": lambda s, c: (s.total_params, 0),
}
ADAPTERS = {"lora", "dora", "ia3", "prefix", "prompt", "bottleneck"}  # base frozen; artifact = new params only


# --- activations -----------------------------------------------------------------------------
def layer_activations(s: ModelShape, method: str, lora_dropout: float = 0.0, device: str = "cuda") -> float:
    """fp32-equivalent elements autograd keeps per token for one decoder layer.

    Counted from the block's operations (transformers' Llama layer, SDPA attention with a padding
    mask, which repeats k/v to all heads), and checked against the tensors autograd actually saves
    (``torch.autograd.graph.saved_tensors_hooks``, see benchmarks/README.md):

    * each RMSNorm keeps its input (the residual stream); SDPA keeps q, k, v and its output;
      the gated MLP keeps gate, silu(gate) and up (3 x intermediate).
    * frozen base (adapters): a linear with a frozen weight keeps nothing, but each LoRA branch
      keeps its dropped-out input and the dropout mask: 1 byte per element on CUDA (fused
      dropout), a full fp32 noise tensor on CPU (composite dropout).
    * trained base (full / partial / hft): every linear keeps its input, every norm its normalised
      value: 3 more hidden-sized tensors per norm pair, the attention output and the MLP product.
    """
    h, i, q = s.hidden, s.intermediate, s.q_dim
    base = 2 * h + 4 * q + 3 * i  # norm inputs, SDPA q/k/v/out (k/v repeated to all heads), MLP
    if method in ("lora", "dora"):
        ins = sum(fi for _, fi, _ in s.layer_linears)
        mask = 1.0 if device == "cpu" else 0.25
        kept = ins * (1 + mask) if lora_dropout > 0 else (2 * h + q + i)  # no dropout: inputs shared
        return base + kept
    if method in ADAPTERS:
        return base + 2 * h  # bottleneck / ia3 / prefix: a hidden-sized input per inserted module
    return base + 4 * h + q + i  # trained linears keep their inputs; norms keep normalised values


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
    device_memory: int | None = None
    fits: bool | None = None
    adapter_file_bytes: int = 0

    def gib(self, part: str) -> float:
        return getattr(self, part) / GIB

    def to_dict(self) -> dict:
        out = asdict(self)
        for k in ("weights", "gradients", "optimizer_states", "activations", "total", "device_memory",
                  "adapter_file_bytes"):
            if out[k] is not None:
                out[f"{k}_gib"] = round(out[k] / GIB, 3)
        return out

    def summary(self) -> str:
        parts = ", ".join(f"{p.replace('_', ' ')} {self.gib(p):.2f}" for p in
                          ("weights", "gradients", "optimizer_states", "activations"))
        dev = f" of {self.device_memory / GIB:.1f} GiB" if self.device_memory else ""
        return f"{self.total / GIB:.2f} GiB{dev} ({parts} GiB)"


def estimate(s: ModelShape, method: str, method_cfg, batch_size: int, seq_len: int, precision: str = "fp32",
             device_memory: int | None = None, device: str = "cuda") -> MemoryEstimate:
    """Peak training memory of ``method`` on model ``s`` at ``batch_size`` x ``seq_len`` tokens.

    >>> est = estimate(model_shape("smollm2-135m-instruct"), "lora", MethodSection(), 8, 256)
    >>> est.total / 2**30   # GiB
    """
    trainable, new = TRAINABLE.get(method, TRAINABLE["full"])(s, method_cfg)
    # hft trains a share of the layers at a time, but every weight is in the optimizer and gets
    # AdamW states once it has been drawn; count states (and gradients' worst case) for all.
    states_for = s.total_params if method == "hft" else trainable
    half = precision in ("bf16", "fp16")
    # Under autocast every matmul weight also exists as a half-precision copy: cached for trainable
    # weights, saved by each matmul for its backward for frozen ones.
    weights = 4 * (s.total_params + new) + (2 * s.total_params if half else 0)
    gradients = 4 * trainable
    optimizer = 8 * states_for
    act_bytes = 2 if half else 4
    tokens = batch_size * seq_len
    # All layers' activations, plus one layer's worth of gradients in flight during its backward.
    layer = layer_activations(s, method, getattr(method_cfg, "dropout", 0.0), device) * act_bytes
    per_token = (s.layers + 1) * layer
    per_token += logits_activations(s) * 4  # the loss upcasts logits to fp32 whatever the precision
    activations = int(tokens * per_token * (CPU_HEAP_OVERHEAD if device == "cpu" else 1.0))
    total = weights + gradients + optimizer + activations
    adapter = 4 * (new if method in ADAPTERS else trainable)
    return MemoryEstimate(
        method=method, batch_size=batch_size, seq_len=seq_len, precision=precision, trainable_params=trainable,
        total_params=s.total_params + new, weights=weights, gradients=gradients, optimizer_states=optimizer,
        activations=activations, total=total, device_memory=device_memory,
        fits=None if device_memory is None else total <= device_memory, adapter_file_bytes=adapter,
    )


def max_seq_that_fits(s: ModelShape, method: str, method_cfg, precision: str, device_memory: int,
                      device: str = "cuda") -> int:
    """Longest sequence (multiple of 64) that fits at batch size 1, or 0 when not even 64 tokens do."""
    one = estimate(s, method, method_cfg, 1, 1, precision, device=device)
    fixed = one.total - one.activations
    per_token = estimate(s, method, method_cfg, 1, 1024, precision, device=device).activations / 1024
    if device_memory <= fixed:
        return 0
    return int((device_memory - fixed) / per_token) // 64 * 64


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
