"""The key/value cache of incremental decoding: what generation keeps between steps.

Legend: B batch, H key/value heads (the attention's n_kv_heads: fewer than its query heads with
grouped-query attention, which is what makes its cache smaller), t positions fed so far,
S source length, dk size per head.

Training never uses it. When a model generates one token at a time, the keys
and values of the earlier positions do not change, so each step computes
them only for the new position and appends them here; cross-attention keys
and values of the encoder memory are computed once, before the first step.
With RoPE the cached keys are the rotated ones, each at its own absolute position
(which never changes), so a step rotates only the new keys (at offset ``length``);
ALiBi's bias is recomputed from the positions at every step, nothing of it is cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(repr=False)
class AttentionCache:
    """The keys and values one attention layer has computed so far, kept for incremental decoding.

    k_buffer, v_buffer  (B, H, capacity, dk), allocated once; positions [0, length) are filled
    k, v                (B, H, length, dk), views of the filled part: what the next query attends to

    ``append`` writes new positions into the buffers in place. Concatenating
    instead would copy the whole past at every step.
    """
    k_buffer: np.ndarray
    v_buffer: np.ndarray
    length: int = 0

    @classmethod
    def empty(cls, batch: int, n_heads: int, capacity: int, d_head: int, dtype) -> "AttentionCache":
        """Room for ``capacity`` positions of self-attention keys and values, none filled yet."""
        shape = (batch, n_heads, capacity, d_head)
        return cls(np.zeros(shape, dtype=dtype), np.zeros(shape, dtype=dtype))

    @classmethod
    def filled(cls, k: np.ndarray, v: np.ndarray) -> "AttentionCache":
        """A cache that already holds every key and value, e.g. those of the encoder memory."""
        return cls(k, v, k.shape[2])

    @property
    def capacity(self) -> int:
        return self.k_buffer.shape[2]

    @property
    def k(self) -> np.ndarray:
        return self.k_buffer[:, :, :self.length]

    @property
    def v(self) -> np.ndarray:
        return self.v_buffer[:, :, :self.length]

    def append(self, k_new: np.ndarray, v_new: np.ndarray) -> None:
        """Write the keys and values (B, H, Tn, dk) of Tn new positions after the filled ones."""
        end = self.length + k_new.shape[2]
        if end > self.capacity:
            raise ValueError(f"AttentionCache: {end} positions do not fit its capacity {self.capacity}; "
                             f"make the cache with a larger capacity")
        self.k_buffer[:, :, self.length:end] = k_new
        self.v_buffer[:, :, self.length:end] = v_new
        self.length = end

    def reorder(self, rows: np.ndarray) -> None:
        """Row i takes the past of row ``rows[i]`` (beam search: a hypothesis inherits its parent's)."""
        self.k_buffer[:, :, :self.length] = self.k_buffer[rows, :, :self.length]
        self.v_buffer[:, :, :self.length] = self.v_buffer[rows, :, :self.length]

    def __repr__(self) -> str:
        return (f"AttentionCache(k={self.k.shape}, v={self.v.shape}, capacity={self.capacity}, "
                f"dtype={self.k_buffer.dtype.name})")


@dataclass(repr=False)
class KVCache:
    """What incremental decoding keeps between steps, so that a step computes only the new position.

    self_attn[l]   layer l's self-attention keys and values (B, H, t, dk) of the t positions fed
                   so far, each an ``AttentionCache``; every step appends the new position's
    cross_attn[l]  decoder layer l's cross-attention keys and values (B, H, S, dk) of the encoder
                   memory, computed once by ``init_cache`` (an empty list for a decoder-only model)
    token_mask     (B, capacity) bool, True where the fed token is not padding (the model's
                   ``config.pad_id``): padded keys are masked exactly as the full forward masks them
    src_keys       (B, 1, 1, S) the source key mask of cross-attention (None for decoder-only)
    length         t, the number of positions fed so far: the position (offset) of the next token
    """
    self_attn: list[AttentionCache]
    cross_attn: list[AttentionCache]
    token_mask: np.ndarray
    src_keys: np.ndarray | None = None
    length: int = 0

    @classmethod
    def empty(cls, n_layers: int, batch: int, n_heads: int, capacity: int, d_head: int,
              dtype) -> "KVCache":
        """Room for ``capacity`` positions in each of ``n_layers`` self-attentions, none filled."""
        return cls([AttentionCache.empty(batch, n_heads, capacity, d_head, dtype) for _ in range(n_layers)],
                   [], np.zeros((batch, capacity), dtype=bool))

    @property
    def capacity(self) -> int:
        return self.token_mask.shape[1]

    def reorder_beams(self, rows: np.ndarray) -> None:
        """Row i continues the hypothesis of row ``rows[i]``. Beam search moves rows only within
        one source's beams, which share the cross-attention keys and values, so only the
        self-attention past moves."""
        for kv in self.self_attn:
            kv.reorder(rows)
        self.token_mask[:, :self.length] = self.token_mask[rows, :self.length]

    def __repr__(self) -> str:
        lines = [f"KVCache(length={self.length}, capacity={self.capacity}, "
                 f"batch={self.token_mask.shape[0]})"]
        lines += [f"  self_attn[{i}]: {kv}" for i, kv in enumerate(self.self_attn)]
        lines += [f"  cross_attn[{i}]: {kv}" for i, kv in enumerate(self.cross_attn)]
        return "\n".join(lines)
