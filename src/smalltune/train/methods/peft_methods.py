"""Adapter methods through peft: the artifact is a standard PEFT folder (safetensors).

LoRA, DoRA and IA3 add small tensors inside the base model's linear layers; prefix and prompt
tuning learn virtual tokens (peft's "prompt encoder"). Prompt tuning prepends its virtual tokens
to the *input*, so the model's logits come back ``num_virtual_tokens`` positions longer than the
input ids; we trim them with a forward hook so that every model smalltune hands out (to the loop,
to ``dataset_metrics``, to evaluation) returns exactly one logit row per input token.
"""

from __future__ import annotations

from pathlib import Path

from . import METHODS, Method


class PeftMethod(Method):
    def peft_config(self, cfg):
        raise NotImplementedError

    def finish(self, model):
        """Last touch after wrapping (on apply and on load); identity unless a method needs more."""
        return model

    def apply(self, model, cfg, recipe=None):
        from peft import get_peft_model

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


@METHODS.register("ia3")
class IA3(PeftMethod):
    """Learned rescaling vectors on keys, values and the MLP (IA3, "Few-Shot Parameter-Efficient
    Fine-Tuning is Better and Cheaper than In-Context Learning", arXiv 2205.05638). peft picks the
    target modules for known architectures."""

    def peft_config(self, cfg):
        from peft import IA3Config

        return IA3Config(task_type="CAUSAL_LM")


@METHODS.register("prefix")
class PrefixTuning(PeftMethod):
    """Trained key/value prefixes in every attention layer (Prefix-Tuning: Optimizing Continuous
    Prompts for Generation, arXiv 2101.00190). Logits keep the input length."""

    def peft_config(self, cfg):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens)


@METHODS.register("prompt")
class PromptTuning(PeftMethod):
    """Trained soft-prompt embeddings prepended to the input (The Power of Scale for
    Parameter-Efficient Prompt Tuning, arXiv 2104.08691)."""

    def peft_config(self, cfg):
        from peft import PromptTuningConfig

        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens)

    def finish(self, model):
        n = model.peft_config[model.active_adapter].num_virtual_tokens
        model.register_forward_hook(_drop_virtual_positions(n))
        return model


def _drop_virtual_positions(n: int):
    """Forward hook: trim the ``n`` virtual-token positions peft prepends to the logits."""

    def hook(module, args, output):
        logits = getattr(output, "logits", None)
        if logits is not None and logits.dim() == 3:
            output.logits = logits[:, n:]
        return output

    return hook
