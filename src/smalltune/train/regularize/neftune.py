"""NEFTune: uniform noise on the input embeddings while training.

Jain et al. 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning" (arXiv 2310.05914):
add ``Uniform(-1, 1) * alpha / sqrt(L * d)`` to the embeddings of every training forward pass
(L = sequence length of the padded batch, d = embedding width); nothing changes at evaluation or
generation. We reuse transformers' maintained hook (``integrations.neftune``), which checks
``module.training`` itself, so noise is off whenever the model is in eval mode.
"""

from __future__ import annotations

from . import REGULARIZERS, Regularizer


def input_embeddings(model):
    """The token embedding module, through a peft wrapper when there is one."""
    base = getattr(model, "get_base_model", None)
    return (base() if base else model).get_input_embeddings()


@REGULARIZERS.register("neftune")
class NEFTune(Regularizer):
    """``regularize.neftune_alpha``: embedding noise during training only."""

    name = "neftune"

    @staticmethod
    def enabled(recipe) -> bool:
        return recipe.regularize.neftune_alpha > 0

    def setup(self, model, tokenizer, recipe, device) -> dict:
        from transformers.integrations.neftune import neftune_post_forward_hook

        self.embeddings = input_embeddings(model)
        self.embeddings.neftune_noise_alpha = recipe.regularize.neftune_alpha
        self.handle = self.embeddings.register_forward_hook(neftune_post_forward_hook)
        return {"neftune_alpha": recipe.regularize.neftune_alpha}

    def close(self) -> None:
        self.handle.remove()
        if hasattr(self.embeddings, "neftune_noise_alpha"):
            del self.embeddings.neftune_noise_alpha
