"""A KV cache for greedy decoding that grows by doubling instead of by concatenation.

transformers' ``DynamicCache`` appends each step's keys and values with ``torch.cat``: every decoding step copies
every layer's whole cache (64 rows x 3 heads x ~120 positions x 64 = 5.7 MB per tensor on the built-in model, 60
tensors per step). Here each layer keeps a buffer with room to spare and writes the new positions into it; the
attention reads a view of the filled part. Rows that leave the batch (``batch_select_indices``) and a shared prefix
repeated for every row (``batch_repeat_interleave``) copy the filled part once. The values are the same tensors,
so the answers are those of ``DynamicCache`` (tests/test_generate.py). Measured (benchmarks/README.md, "A KV cache
that grows by doubling"): 1.08x faster decoding on a quiet 2-core Xeon at two threads, no difference at one thread
beside another process (a cold full evaluation, 717 s against 720 s).

Only for models whose every layer attends to all earlier positions (:func:`fits`): sliding-window and other layer
kinds keep transformers' own cache.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

MIN_ROOM = 64  # positions a layer's first buffer holds at least


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values live in buffers with spare positions (see the module docstring)."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.filled = 0
        self.key_room = self.value_room = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.filled + key_states.shape[-2]
        if self.key_room is None or end > self.key_room.shape[-2]:
            room = max(end, 2 * (self.key_room.shape[-2] if self.key_room is not None else 0), MIN_ROOM)
            self.key_room = self._moved(self.key_room, key_states, room)
            self.value_room = self._moved(self.value_room, value_states, room)
        self.key_room[..., self.filled:end, :] = key_states
        self.value_room[..., self.filled:end, :] = value_states
        self.filled = end
        self.keys, self.values = self.key_room[..., :end, :], self.value_room[..., :end, :]
        return self.keys, self.values

    def _moved(self, old: torch.Tensor | None, like: torch.Tensor, room: int) -> torch.Tensor:
        """A buffer of ``room`` positions shaped like ``like``, holding ``old``'s filled positions."""
        new = like.new_empty(*like.shape[:-2], room, like.shape[-1])
        if old is not None and self.filled:
            new[..., :self.filled, :] = old[..., :self.filled, :]
        return new

    def get_seq_length(self) -> int:
        return self.filled if self.is_initialized else 0

    def _rows(self, pick) -> None:
        """Keep the batch rows ``pick`` makes of the filled part, in buffers of the same room."""
        if not self.get_seq_length():
            return
        keys, values = pick(self.key_room[..., :self.filled, :]), pick(self.value_room[..., :self.filled, :])
        room = self.key_room.shape[-2]
        self.key_room, self.value_room = self._moved(keys, keys, room), self._moved(values, values, room)
        self.keys, self.values = self.key_room[..., :self.filled, :], self.value_room[..., :self.filled, :]

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._rows(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._rows(lambda t: t[indices])

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("GrowingLayer is for greedy decoding, which never crops")


class GrowingCache(DynamicCache):
    """A ``DynamicCache`` of :class:`GrowingLayer` (one per decoder layer, made on its first update)."""

    def __init__(self):
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)


def fits(model) -> bool:
    """Whether every decoder layer of ``model`` attends to all earlier positions (no sliding window, no other
    layer kinds), so :class:`GrowingCache` computes what its own cache would."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    kinds = getattr(config, "layer_types", None) or ["full_attention"]
    return set(kinds) == {"full_attention"} and not getattr(config, "sliding_window", None)
