"""Full fine-tuning, and the artifact shared by every method that edits the base weights in place.

``full``, ``partial`` and ``hft`` change the model's own tensors, so their artifact is a complete
model folder (``save_pretrained``, safetensors) named ``model``; it loads anywhere transformers
does. Tied input/output embeddings (SmolLM2 ties them) stay tied: ``named_parameters`` lists a
shared tensor once, so checkpoints hold one copy, and ``save_pretrained`` records the tying.
"""

from __future__ import annotations

from pathlib import Path

from . import METHODS, Method


class WholeModelMethod(Method):
    """Base for methods whose artifact is the whole model folder."""

    artifact = "model"

    def save(self, model, path: Path) -> None:
        model.save_pretrained(str(path), safe_serialization=True)

    def load(self, base_model, path: Path):
        # The same class as the base (already imported, so no remote code runs), weights from the run.
        return type(base_model).from_pretrained(str(path), use_safetensors=True, dtype=base_model.dtype).eval()


def set_trainable(model, names: set[str]) -> None:
    """Train exactly the parameters called ``names``; freeze the rest. A tied tensor trains when any
    of its names (``lm_head.weight`` or ``model.embed_tokens.weight``) is chosen."""
    chosen = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in names}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)


@METHODS.register("full")
class Full(WholeModelMethod):
    """Every weight trains. Most capacity, most forgetting: prefer it only with enough data and an
    eye on the forgetting metrics."""

    def apply(self, model, cfg, recipe=None):
        set_trainable(model, {n for n, _ in model.named_parameters()})
        return model
