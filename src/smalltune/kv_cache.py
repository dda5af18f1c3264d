"""A KV cache for greedy decoding that grows by doubling instead of by concatenation, with a window that moves.

transformers' ``DynamicCache`` appends each step's keys and values with ``torch.cat``: every decoding step copies
every layer's whole cache (64 rows x 3 heads x ~120 positions x 64 = 5.7 MB per tensor on the built-in model, 60
tensors per step). Here each layer keeps a buffer with room to spare and writes the new positions into it; the
attention reads a view of the window in use. Rows that leave the batch (``batch_select_indices``) and a shared
prefix repeated for every row (``batch_repeat_interleave``) copy the window once. The values are the same tensors,
so the answers are those of ``DynamicCache`` (tests/test_generate.py). Measured (benchmarks/README.md, "A KV cache
that grows by doubling"): 1.08x faster decoding on a quiet 2-core Xeon at two threads, no difference at one thread
beside another process (a cold full evaluation, 717 s against 720 s).

For continuous batching (greedy.py) the window moves: positions no row attends to any more leave it at the front
(:meth:`GrowingLayer.trim`), and prompts that join take free rows as its last positions (:meth:`GrowingLayer.place`).

Under autocast the cache holds keys and values in autocast's precision (:func:`_as_attended`), the precision
attention reads them in.

Only for models whose every layer attends to all earlier positions (:func:`fits`): sliding-window and other layer
kinds keep transformers' own cache.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from .models import attention_dims

MIN_ROOM = 64  # positions a layer's first buffer holds at least


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are the window ``[start, end)`` of buffers with spare positions
    (see the module docstring). The window's start moves for continuous batching (:meth:`trim`, :meth:`place`)."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.start = self.end = 0
        self.key_room = self.value_room = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        key_states, value_states = _as_attended(key_states), _as_attended(value_states)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        self._reserve(key_states, value_states, after=n)
        self.key_room[..., self.end:self.end + n, :] = key_states
        self.value_room[..., self.end:self.end + n, :] = value_states
        self.end += n
        return self._window()

    def _window(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys = self.key_room[..., self.start:self.end, :]
        self.values = self.value_room[..., self.start:self.end, :]
        return self.keys, self.values

    def _reserve(self, key_like: torch.Tensor, value_like: torch.Tensor, before: int = 0, after: int = 0) -> None:
        """Room for ``before`` positions ahead of the window and ``after`` behind it: when the buffers lack it, the
        window moves into new ones of twice the room it then needs (amortised: one copy per doubling)."""
        if self.key_room is not None and self.start >= before and self.end + after <= self.key_room.shape[-2]:
            return
        span = self.end - self.start
        room = max(2 * (before + span + after), MIN_ROOM)
        keys, values = (self.keys, self.values) if self.key_room is not None else (None, None)
        self.key_room = _buffer(keys, key_like, room, before)
        self.value_room = _buffer(values, value_like, room, before)
        self.start, self.end = before, before + span

    def get_seq_length(self) -> int:
        return self.end - self.start if self.is_initialized else 0

    def trim(self, n: int) -> None:
        """Drop the window's first ``n`` positions (no batch row attends to them any more)."""
        self.start += n
        self._window()

    def place(self, rows: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Batch rows ``rows`` take another cache's ``keys`` and ``values`` (``[len(rows), heads, width, dim]``) as
        the window's last ``width`` positions; the window widens ahead when it is narrower. Positions before them
        in those rows keep what they held: the caller masks them."""
        width = keys.shape[-2]
        self._reserve(self.key_room, self.value_room, before=max(0, width - (self.end - self.start)))
        self.start = min(self.start, self.end - width)
        self.key_room[rows, :, self.end - width:self.end, :] = keys
        self.value_room[rows, :, self.end - width:self.end, :] = values
        self._window()

    def _rows(self, pick) -> None:
        """Keep the batch rows ``pick`` makes of the window, in buffers of the same room."""
        if not self.get_seq_length():
            return
        keys, values = pick(self.keys), pick(self.values)
        room = self.key_room.shape[-2]
        self.key_room, self.value_room = _buffer(keys, keys, room, self.start), _buffer(values, values, room, self.start)
        self._window()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._rows(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._rows(lambda t: t[indices])

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("GrowingLayer is for greedy decoding, which never crops")


def _as_attended(states: torch.Tensor) -> torch.Tensor:
    """``states`` in the precision attention reads them in: under autocast, fp32 becomes its lower precision.

    The keys leave the rotary embedding in fp32 (its cos and sin are fp32) while the values are bf16, and attention
    under autocast casts both to bf16: kept in fp32, the whole cached window of keys was cast again at every decoding
    step, in every layer (a 128-row step of the built-in model at ~116 positions: 170 ms, 148 ms without those casts,
    2-core AMX Xeon; benchmarks/README.md, "The KV cache kept in bf16"). The same rounding made once per position:
    the same numbers, half the memory.
    """
    kind = states.device.type
    if states.dtype == torch.float32 and torch.is_autocast_enabled(kind):
        return states.to(torch.get_autocast_dtype(kind))
    return states


def _buffer(window: torch.Tensor | None, like: torch.Tensor, room: int, at: int) -> torch.Tensor:
    """A buffer of ``room`` positions shaped like ``like``, holding ``window`` from position ``at``. Zeros elsewhere,
    not uninitialised memory: a masked position still enters the attention's product (times 0, and NaN x 0 is NaN)."""
    new = like.new_zeros(*like.shape[:-2], room, like.shape[-1])
    if window is not None:
        new[..., at:at + window.shape[-2], :] = window
    return new


class GrowingCache(DynamicCache):
    """A ``DynamicCache`` of :class:`GrowingLayer` (one per decoder layer, made on its first update)."""

    def __init__(self):
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)

    def trim(self, n: int) -> None:
        """Every layer drops its first ``n`` positions."""
        for layer in self.layers:
            layer.trim(n)

    def place(self, rows: torch.Tensor, other: "GrowingCache") -> None:
        """Batch rows ``rows`` take ``other``'s keys and values as their last positions (:meth:`GrowingLayer.place`)."""
        for mine, theirs in zip(self.layers, other.layers):
            mine.place(rows, theirs.keys, theirs.values)


def bytes_per_position(model, dtype_bytes: int) -> int:
    """Bytes one batch row's keys and values take per position, every layer together (``dtype_bytes`` each)."""
    config = _text_config(model)
    _, kv_heads, head_dim = attention_dims(config)
    return 2 * config.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def _text_config(model):
    return model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config


def fits(model) -> bool:
    """Whether every decoder layer of ``model`` attends to all earlier positions (no sliding window, no other
    layer kinds), so :class:`GrowingCache` computes what its own cache would."""
    config = _text_config(model)
    kinds = getattr(config, "layer_types", None) or ["full_attention"]
    return set(kinds) == {"full_attention"} and not getattr(config, "sliding_window", None)
