"""Rotary position embedding (RoPE, Su et al. 2021): positions as rotations of the queries and keys.

Legend: B batch, H heads, T positions, dk size per head, P = dk / 2 rotation pairs.

Nothing is added to the token embeddings. Instead, in every self-attention, the
query and the key of position p are rotated by angles proportional to p before
their dot product. A rotation R(p) is orthogonal and R(p)^T R(p') = R(p' - p), so

    (R(p) q) . (R(p') k) = q^T R(p' - p) k

depends on the offset p' - p only: attention sees relative positions, though each
vector is rotated by its absolute one (which is why a KV cache can keep rotated keys).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .embedding import check_positions
from .module import Module


class RotaryCache(NamedTuple):
    offset: int             # the position of the first row of x (T is read from the gradient)


def rotary_angles(max_len: int, d_head: int, base: float = 10000.0) -> np.ndarray:
    """theta[p, i] = p * base ** (-2i / dk), for p = 0 .. max_len - 1, i = 0 .. dk/2 - 1.   (max_len, P)"""
    position = np.arange(max_len)[:, None]                       # (max_len, 1)
    frequency = base ** (-np.arange(0, d_head, 2) / d_head)      # (P,) from 1 down to ~1/base
    return position * frequency


class RotaryEmbedding(Module):
    """Rotate each head vector x = [x_a, x_b] (its first and second halves) by its position p:

        out_a = x_a cos(theta) - x_b sin(theta)
        out_b = x_b cos(theta) + x_a sin(theta),        theta[p, i] = p * base ** (-2i / dk)

    so the pair (x_a[i], x_b[i]) turns as a 2-D vector by theta[p, i]: fast for the first
    pairs, slowly for the last. This is the rotate-half pairing of GPT-NeoX and the Hugging
    Face LLaMA (the original paper pairs neighbours 2i, 2i+1 instead; the two differ only by
    a fixed permutation of the features, which the projections can learn).
    ``forward(x, offset)`` rotates rows of x (B, H, T, dk) as positions offset .. offset + T - 1.
    No parameters; the cos and sin tables (up to max_len, P) are buffers, grown as positions are used.

    Backward: a rotation's transpose is the rotation by -theta, so
        dx_a = dout_a cos(theta) + dout_b sin(theta)
        dx_b = dout_b cos(theta) - dout_a sin(theta)
    """

    def __init__(self, d_head: int, max_len: int, base: float = 10000.0, dtype=np.float32):
        super().__init__()
        if isinstance(d_head, bool) or not isinstance(d_head, (int, np.integer)) or d_head < 2 \
                or d_head % 2:
            raise ValueError(f"RotaryEmbedding: d_head must be even (rotate-half pairs the first half "
                             f"of each head with the second), got d_head={d_head!r}")
        if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
            raise ValueError(f"RotaryEmbedding: max_len must be a positive integer, got {max_len!r}")
        if not base > 1:
            raise ValueError(f"RotaryEmbedding: base must be a number > 1, got {base!r}")
        self.d_head, self.max_len, self.base = int(d_head), int(max_len), float(base)
        # tables of the positions used so far (none yet): a model of 131072 positions does not
        # hold 131072 rows per layer before it sees a sequence that long
        self.buffers["cos"] = np.zeros((0, self.d_head // 2), dtype=dtype)
        self.buffers["sin"] = np.zeros((0, self.d_head // 2), dtype=dtype)
        self._computed_in = np.dtype(dtype)       # the dtype the tables were computed in

    def extra_repr(self) -> str:
        return f"{self.d_head}, max_len={self.max_len}, base={self.base:g}"

    def _table(self, offset: int, T: int) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin (T, P) of positions offset .. offset + T - 1.

        The tables grow to the next power of two of the positions asked for (at most max_len),
        computed in float64 and rounded once to the buffers' dtype. After ``astype`` changed
        that dtype they are computed again in the new one, not widened from the old values.
        """
        cos = self.buffers["cos"]
        if offset + T > len(cos) or cos.dtype != self._computed_in:
            rows = min(self.max_len, 1 << (offset + T - 1).bit_length())
            angle = rotary_angles(rows, self.d_head, self.base)                 # (rows, P)
            self.buffers["cos"] = np.cos(angle).astype(cos.dtype)
            self.buffers["sin"] = np.sin(angle).astype(cos.dtype)
            self._computed_in = cos.dtype
        return self.buffers["cos"][offset:offset + T], self.buffers["sin"][offset:offset + T]

    def forward(self, x: np.ndarray, offset: int = 0) -> np.ndarray:       # x: (B, H, T, dk)
        check_positions("rotary input x", x, offset, self.max_len, self.d_head, self.buffers["cos"].dtype)
        cos, sin = self._table(offset, x.shape[-2])                        # (T, P)
        P = self.d_head // 2
        x_a, x_b = x[..., :P], x[..., P:]                                   # (B, H, T, P) each
        self.cache = RotaryCache(offset)
        return np.concatenate([x_a * cos - x_b * sin, x_b * cos + x_a * sin], axis=-1)

    def backward(self, dout: np.ndarray) -> np.ndarray:                    # dout: (B, H, T, dk)
        cos, sin = self._table(self._saved().offset, dout.shape[-2])       # (T, P)
        P = self.d_head // 2
        d_a, d_b = dout[..., :P], dout[..., P:]
        # forward was out = R(theta) x: the gradient goes back through R(theta)^T = R(-theta)
        return np.concatenate([d_a * cos + d_b * sin, d_b * cos - d_a * sin], axis=-1)
