"""Adapter methods through peft: the artifact is a standard PEFT folder (safetensors).

LoRA, DoRA and IA3 add small tensors inside the base model's linear layers; prefix and prompt
tuning learn virtual tokens (peft's "prompt encoder"). Prompt tuning prepends its virtual tokens
to the *input*, so the model's logits come back ``num_virtual_tokens`` positions longer than the
input ids; we trim them with a forward hook so that every model smalltune hands out (to the loop,
to ``dataset_metrics``, to evaluation) returns exactly one logit row per input token.

A base loaded in 4 bits (``model.load_in_4bit``, QLoRA) is prepared for training here, in ``apply``
(peft's ``prepare_model_for_kbit_training``: norms and embeddings in fp32, gradient checkpointing
on), not when it is loaded: evaluation loads the same 4-bit base and needs none of that.

Each class also says what the planner needs: its keys, learning rates, trainable-parameter count
and activation memory (see ``methods/__init__.py``).
"""

from __future__ import annotations

from pathlib import Path

from . import METHODS, Method, Rate, WeightDelta


class PeftMethod(Method):
    supports_4bit = True  # peft's layers wrap bitsandbytes' 4-bit linears

    def peft_config(self, cfg):
        raise NotImplementedError

    def finish(self, model):
        """Last touch after wrapping (on apply and on load); identity unless a method needs more."""
        return model

    def apply(self, model, cfg, recipe=None):
        from peft import get_peft_model

        if getattr(model, "is_loaded_in_4bit", False):  # QLoRA (arXiv 2305.14314): gradient checkpointing on
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        return self.finish(get_peft_model(model, self.peft_config(cfg)))

    def save(self, model, path: Path) -> None:
        model.save_pretrained(str(path), safe_serialization=True)

    def load(self, base_model, path: Path):
        from peft import PeftModel

        return self.finish(PeftModel.from_pretrained(base_model, str(path))).eval()


@METHODS.register("lora")
class LoRA(PeftMethod):
    """Low-rank adapters (LoRA: Low-Rank Adaptation of Large Language Models, arXiv 2106.09685)."""

    dora = False
    keys = ("method.r", "method.alpha", "method.dropout", "method.target_modules")
    rate = Rate(1e-3, 2e-4, "~10x the full fine-tuning rate (1e-4): LoRA's best rate is about an order of magnitude "
                "above full fine-tuning's (arXiv 2405.09673); benchmarks/README.md experiment 1: LoRA at 2e-4 reached "
                "6.9-9.7% key-fact recall where full at 1e-4 reached 18.8%; the demo's LoRA at 1e-3 reached 22%",
                large_model_factor=0.5)

    def trainable_params(self, s, cfg) -> tuple[int, int]:
        # r x (in + out) per adapted linear; DoRA adds a magnitude vector of size out
        chosen = [(n, i, o) for n, i, o in s.layer_linears
                  if cfg.target_modules == "all-linear" or n.rsplit(".", 1)[-1] in set(cfg.target_modules)]
        n = s.layers * sum(cfg.r * (i + o) + (o if self.dora else 0) for _, i, o in chosen)
        return n, n

    def layer_activations(self, s, cfg, device: str) -> float:
        # Each LoRA branch keeps its dropped-out input and the dropout mask, 1 byte per element (torch's
        # fused dropout on CUDA, ``BitsDropout`` on CPU). Without dropout the branches share the frozen
        # linears' inputs.
        if cfg.dropout > 0:
            return sum(fi for _, fi, _ in s.layer_linears) * 1.25
        return 2 * s.hidden + s.q_dim + s.intermediate

    def finish(self, model):
        from .dropout import use_bits_dropout
        from .lora_fused import fuse_lora

        use_bits_dropout(model)  # torch's CPU dropout was 21% of a LoRA step (methods/dropout.py)
        fuse_lora(model)  # the adapter's element-wise passes folded away on CPU (methods/lora_fused.py)
        return model

    def weight_deltas(self, model) -> list[WeightDelta]:
        """``B @ A * scale`` (peft's ``get_delta_weight``) of every unmerged, active LoRA layer without DoRA."""
        try:
            from peft.tuners.lora import Linear as LoraLinear
        except ImportError:  # peft absent: no LoRA layers to find
            return []
        found = []
        for name, module in model.named_modules():
            if isinstance(module, LoraLinear) and not module.merged:
                for adapter in module.active_adapters:
                    if adapter in module.lora_A and not module.use_dora.get(adapter, False):
                        found.append(WeightDelta(
                            f"{name}.delta_weight", module.get_base_layer().weight,
                            lambda m=module, a=adapter: m.get_delta_weight(a),
                            (*module.lora_A[adapter].parameters(), *module.lora_B[adapter].parameters())))
        return found

    def peft_config(self, cfg):
        from peft import LoraConfig

        return LoraConfig(
            task_type="CAUSAL_LM",
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=cfg.target_modules,
            use_dora=self.dora,
        )


@METHODS.register("dora")
class DoRA(LoRA):
    """LoRA with each weight split into magnitude and direction, the magnitude trained too
    (DoRA: Weight-Decomposed Low-Rank Adaptation, arXiv 2402.09353). Same recipe keys as LoRA."""

    dora = True
    rate = Rate(2e-4, 5e-5, "DoRA arXiv 2402.09353 keeps LoRA's rates", large_model_factor=0.5)


@METHODS.register("ia3")
class IA3(PeftMethod):
    """Learned rescaling vectors on keys, values and the MLP (IA3, "Few-Shot Parameter-Efficient
    Fine-Tuning is Better and Cheaper than In-Context Learning", arXiv 2205.05638). peft picks the
    target modules for known architectures."""

    rate = Rate(3e-3, 1e-3, "(IA)^3 / T-Few arXiv 2205.05638 (3e-3)")

    def trainable_params(self, s, cfg) -> tuple[int, int]:
        # peft's IA3 for Llama scales k_proj and v_proj outputs and down_proj's input
        n = s.layers * (2 * s.kv_heads * s.head_dim + s.intermediate)
        return n, n

    def peft_config(self, cfg):
        from peft import IA3Config

        return IA3Config(task_type="CAUSAL_LM")


@METHODS.register("prefix")
class PrefixTuning(PeftMethod):
    """Trained key/value prefixes in every attention layer (Prefix-Tuning: Optimizing Continuous
    Prompts for Generation, arXiv 2101.00190). Logits keep the input length."""

    keys = ("method.num_virtual_tokens",)
    rate = Rate(1e-2, 3e-3, "prefix vectors need large steps (Prefix-Tuning arXiv 2101.00190; peft guides use ~1e-2)")

    def trainable_params(self, s, cfg) -> tuple[int, int]:
        n = cfg.num_virtual_tokens * s.layers * 2 * s.kv_heads * s.head_dim  # a key and a value per layer
        return n, n

    def peft_config(self, cfg):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens)


@METHODS.register("prompt")
class PromptTuning(PeftMethod):
    """Trained soft-prompt embeddings prepended to the input (The Power of Scale for
    Parameter-Efficient Prompt Tuning, arXiv 2104.08691)."""

    keys = ("method.num_virtual_tokens",)
    rate = Rate(1e-2, 3e-3, "soft prompts need large steps (Prompt Tuning arXiv 2104.08691 used 0.3 with Adafactor)")

    def trainable_params(self, s, cfg) -> tuple[int, int]:
        n = cfg.num_virtual_tokens * s.hidden
        return n, n

    def peft_config(self, cfg):
        from peft import PromptTuningConfig

        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens)

    def finish(self, model):
        model.register_forward_hook(_drop_virtual_positions, with_kwargs=True)
        return model


def _drop_virtual_positions(module, args, kwargs, output):
    """Forward hook: trim the virtual-token positions peft prepends to the logits, i.e. every position
    beyond the input's length (none while the adapter is disabled, e.g. to score the base model)."""
    logits = getattr(output, "logits", None)
    inputs = kwargs.get("input_ids", args[0] if args else None)
    if inputs is None:
        inputs = kwargs.get("attention_mask", kwargs.get("inputs_embeds"))
    if logits is not None and logits.dim() == 3 and inputs is not None and logits.shape[1] > inputs.shape[1]:
        output.logits = logits[:, logits.shape[1] - inputs.shape[1]:]
    return output
