"""Adapter methods through peft: the artifact is a standard PEFT folder (safetensors)."""

from __future__ import annotations

from pathlib import Path

from . import METHODS, Method


class PeftMethod(Method):
    def peft_config(self, cfg):
        raise NotImplementedError

    def apply(self, model, cfg, recipe=None):
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(cfg))

    def save(self, model, path: Path) -> None:
        model.save_pretrained(str(path), safe_serialization=True)

    def load(self, base_model, path: Path):
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, str(path)).eval()


@METHODS.register("lora")
class LoRA(PeftMethod):
    """Low-rank adapters (LoRA: Low-Rank Adaptation of Large Language Models, arXiv 2106.09685)."""

    def peft_config(self, cfg):
        from peft import LoraConfig

        return LoraConfig(
            task_type="CAUSAL_LM",
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=cfg.target_modules,
            use_dora=False,
        )


