"""Full fine-tuning, and the artifact shared by every method that edits the base weights in place.

``full``, ``partial`` and ``hft`` change the model's own tensors, so their artifact is a complete
model folder (``save_pretrained``, safetensors) named ``model``; it loads anywhere transformers
does. Tied input/output embeddings (SmolLM2 ties them) stay tied: ``named_parameters`` lists a
shared tensor once, so checkpoints hold one copy, and ``save_pretrained`` records the tying.
"""

from __future__ import annotations

from pathlib import Path

from . import METHODS, Method, Rate

FULL_RATE = Rate(2e-5, 3e-6, "full fine-tuning range 5e-6-5e-5, Stanford Alpaca (7B) used 2e-5; updates 1e-6-5e-6; "
                 "x5 (1e-4) under 1B parameters: benchmarks/README.md experiment 1, on the 135M model 1e-4 reached "
                 "18.8% key-fact recall in 3 epochs where 2e-5 reached 4.2%; `smalltune update` at half the parent's "
                 "rate: benchmarks/README.md, continual updates (3 seeds: half the training time, fewer stale answers "
                 "than at 0.15)", small_model_factor=5.0, update_share=0.5)


class WholeModelMethod(Method):
    """Base for methods whose artifact is the whole model folder (and that train base weights)."""

    artifact = "model"
    frozen_base = False
    rate = FULL_RATE

    def layer_activations(self, s, cfg, device: str) -> float:
        # Trained linears keep their inputs and norms their normalised values: 3 more hidden-sized
        # tensors per norm pair, the attention output and the MLP product.
        return 4 * s.hidden + s.q_dim + s.intermediate

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

    def trainable_params(self, s, cfg) -> tuple[int, int]:
        return s.total_params, 0

    def apply(self, model, cfg, recipe=None):
        set_trainable(model, {n for n, _ in model.named_parameters()})
        return model
