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
    keys = ("regularize.neftune_alpha",)

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.regularize.neftune_alpha > 0

    def setup(self, env) -> dict:
        from transformers.integrations.neftune import neftune_post_forward_hook

        alpha = env.recipe.regularize.neftune_alpha
        self._embeddings = input_embeddings(env.unwrap(env.model))
        self._embeddings.neftune_noise_alpha = alpha
        self._handle = self._embeddings.register_forward_hook(neftune_post_forward_hook)
        return {"neftune_alpha": alpha}

    def state_dict(self) -> dict:
        return {}

    def close(self) -> None:
        self._handle.remove()
        if hasattr(self._embeddings, "neftune_noise_alpha"):
            del self._embeddings.neftune_noise_alpha
