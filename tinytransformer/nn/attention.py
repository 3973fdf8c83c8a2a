"""Scaled dot-product attention, multi-head attention, and the masks they use.

Legend: B batch, H heads, Tq query positions, Tk key positions, dk key/query
size per head, dv value size per head, D d_model = H * dk.

Masks are boolean and broadcast to the scores (B, H, Tq, Tk): True means "this
query may attend to this key". Only keys are masked.
"""

from __future__ import annotations

import math

import numpy as np

from .activation import last_axis_max, last_axis_sum
from .dropout import Dropout
from .kv_cache import AttentionCache
from .linear import Linear
from .module import Module, check_float_input


def causal_mask(T: int) -> np.ndarray:
    """(T, T) boolean, True where key j <= query i: no position sees the future.

    >>> causal_mask(3).astype(int)
    array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 1]])
    """
    return np.tril(np.ones((T, T), dtype=bool))


def padding_mask(ids: np.ndarray, pad_id: int = 0) -> np.ndarray:
    """(B, 1, 1, T) boolean, True where the key is a real token (ids != pad_id).

    >>> padding_mask(np.array([[5, 6, 0], [7, 0, 0]])).astype(int)[:, 0, 0]
    array([[1, 1, 0],
           [1, 0, 0]])
    """
    return (ids != pad_id)[:, None, None, :]


def causal_padding_mask(ids: np.ndarray, pad_id: int = 0) -> np.ndarray:
    """(B, 1, T, T): the decoder's self-attention mask, causal AND not padding.

    >>> causal_padding_mask(np.array([[5, 6, 0]])).astype(int)[0, 0]
    array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 0]])
    """
    return causal_mask(ids.shape[1]) & padding_mask(ids, pad_id)


def _check_mask(mask, scores_shape: tuple) -> None:
    if not isinstance(mask, np.ndarray) or mask.dtype != bool:
        got = mask.dtype.name if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TypeError(f"mask: expected a boolean array (True = may attend), got {got}")
    try:
        broadcast = np.broadcast_shapes(mask.shape, scores_shape)
    except ValueError:
        broadcast = None
    if broadcast != tuple(scores_shape):
        raise ValueError(f"mask: shape {mask.shape} does not broadcast to the attention scores "
                         f"(B, H, Tq, Tk) = {tuple(scores_shape)}; a per-sequence padding mask "
                         f"is (B, 1, 1, Tk) (see padding_mask), a 2-D mask is (Tq, Tk)")


class ScaledDotProductAttention(Module):
    """out = dropout(A) @ v,  A = softmax(q @ k^T / sqrt(dk)), masked keys set to -inf.

    A query row whose keys are all masked gets A = 0 (so out = 0), not NaN.
    The weights A are kept as ``self.attn`` (B, H, Tq, Tk) for plotting.

    Backward, with Ad = dropout(A), S = q @ k^T / sqrt(dk):
        dv = Ad^T @ dout            dAd = dout @ v^T          dA = dropout.backward(dAd)
        dS = A * (dA - sum_k(dA * A))                         (softmax backward; 0 where masked)
        dq = dS @ k / sqrt(dk)      dk = dS^T @ q / sqrt(dk)
    """

    def __init__(self, dropout: float = 0.0, rng: np.random.Generator | None = None):
        super().__init__()
        self.dropout = Dropout(dropout, rng=rng)
        self.attn = None

    def forward(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None):
        check_float_input("q", q, min_ndim=2)
        check_float_input("k", k, q.dtype, last_dim=q.shape[-1], min_ndim=2, dtype_of="q's dtype")
        check_float_input("v", v, q.dtype, min_ndim=2, dtype_of="q's dtype")
        if k.shape[:-2] != q.shape[:-2] or v.shape[:-1] != k.shape[:-1]:
            raise ValueError(f"q, k, v: expected (B, H, Tq, dk), (B, H, Tk, dk), (B, H, Tk, dv), "
                             f"got {q.shape}, {k.shape}, {v.shape}")
        scale = 1.0 / math.sqrt(q.shape[-1])     # a Python float: float32 stays float32
        # scaling q (B, H, Tq, dk), not the scores (B, H, Tq, Tk): fewer numbers once Tk > dk
        q_scaled = q * scale
        scores = q_scaled @ k.swapaxes(-1, -2)                        # (B, H, Tq, Tk)
        if mask is not None:
            _check_mask(mask, scores.shape)
            # the mask as a bias, 0 where allowed and -inf where masked, added in place: ~5x
            # faster than np.where(mask, scores, -inf) with a broadcast mask (measured)
            scores += np.where(mask, scores.dtype.type(0), scores.dtype.type(-np.inf))
        row_max = last_axis_max(scores)                               # (B, H, Tq, 1)
        if mask is not None:
            row_max[row_max == -np.inf] = 0.0     # fully masked row: exp(-inf - 0) = 0 below
        # the softmax runs in place in the scores' memory (no new (B, H, Tq, Tk) array per step)
        weights = np.exp(np.subtract(scores, row_max, out=scores), out=scores)
        total = last_axis_sum(weights)                                # (B, H, Tq, 1)
        if mask is not None:
            total[total == 0.0] = 1.0             # fully masked row: 0 / 1 = 0 weight everywhere
        attn = np.divide(weights, total, out=weights)                 # (B, H, Tq, Tk)
        dropped = self.dropout(attn)
        self.attn = attn
        self.cache = (q_scaled, k, v, attn, dropped, scale)
        return dropped @ v                                            # (B, H, Tq, dv)

    def backward(self, dout: np.ndarray):                             # dout: (B, H, Tq, dv)
        q_scaled, k, v, attn, dropped, scale = self._saved()
        # forward was out = dropped @ v
        dv = dropped.swapaxes(-1, -2) @ dout                           # (B, H, Tk, dv)
        dattn = self.dropout.backward(dout @ v.swapaxes(-1, -2))       # (B, H, Tq, Tk)
        # forward was attn = softmax(scores), so dS = A * (dA - sum_k(dA * A)) (softmax_backward),
        # computed in place in dattn's memory; masked entries have A = 0, so get no gradient
        dscores = np.subtract(dattn, last_axis_sum(dattn * attn), out=dattn)
        dscores *= attn
        # forward was scores = (q * scale) @ k^T
        dq = dscores @ k                                              # (B, H, Tq, dk)
        dq *= scale
        dk = dscores.swapaxes(-1, -2) @ q_scaled                      # (B, H, Tk, dk)
        return dq, dk, dv


class MultiHeadAttention(Module):
    """MultiHead(x, c) = Concat(head_1, ..., head_H) @ W_o + b_o,
    head_h = Attention(x W_q^h, c W_k^h, c W_v^h), with c = x for self-attention.

    Heads are contiguous blocks of the projected features, as in PyTorch: head h
    uses columns h*dk:(h+1)*dk of x @ W_q. The split is a reshape to (B, T, H, dk)
    and a transpose to (B, H, T, dk); every head runs in one batched matmul.

    Backward: the split/merge are reshapes and transposes, undone in reverse.
    In self-attention x feeds the query, key and value projections, so dx is
    the sum of all three; in cross-attention x gets the query part and the
    context the key and value parts.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"MultiHeadAttention: d_model ({d_model}) must be divisible by "
                             f"n_heads ({n_heads})")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.w_q = Linear(d_model, d_model, rng=rng, dtype=dtype)
        self.w_k = Linear(d_model, d_model, rng=rng, dtype=dtype)
        self.w_v = Linear(d_model, d_model, rng=rng, dtype=dtype)
        self.w_o = Linear(d_model, d_model, rng=rng, dtype=dtype)
        self.attention = ScaledDotProductAttention(dropout, rng=rng)
        self.attn = None

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}"

    def split_heads(self, x: np.ndarray) -> np.ndarray:
        """(B, T, D) -> (B, H, T, dk)"""
        B, T, _ = x.shape
        return x.reshape(B, T, self.n_heads, self.d_head).transpose(0, 2, 1, 3)

    def merge_heads(self, x: np.ndarray) -> np.ndarray:
        """(B, H, T, dk) -> (B, T, D), the inverse of split_heads."""
        B, H, T, dk = x.shape
        return x.transpose(0, 2, 1, 3).reshape(B, T, H * dk)

    def forward(self, x: np.ndarray, context: np.ndarray | None = None,
                mask: np.ndarray | None = None) -> np.ndarray:
        check_float_input("x", x, self.w_q.params["weight"].dtype, last_dim=self.d_model, min_ndim=3)
        source = x if context is None else context
        if context is not None:
            check_float_input("context", context, x.dtype, last_dim=self.d_model, min_ndim=3,
                              dtype_of="x's dtype")
            if context.shape[0] != x.shape[0]:
                raise ValueError(f"context: expected batch size {x.shape[0]} (that of x), "
                                 f"got shape {context.shape}")
        q = self.split_heads(self.w_q(x))                         # (B, H, Tq, dk)
        k = self.split_heads(self.w_k(source))                    # (B, H, Tk, dk)
        v = self.split_heads(self.w_v(source))                    # (B, H, Tk, dk)
        heads = self.attention(q, k, v, mask)                     # (B, H, Tq, dk)
        self.attn = self.attention.attn
        self.cache = context is None
        return self.w_o(self.merge_heads(heads))                  # (B, Tq, D)

    def project_kv(self, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The keys and values (B, H, Tk, dk) of ``source`` (B, Tk, D), as ``forward`` computes them."""
        return self.split_heads(self.w_k(source)), self.split_heads(self.w_v(source))

    def step(self, x: np.ndarray, kv: AttentionCache, mask: np.ndarray | None = None,
             append: bool = True) -> np.ndarray:
        """Inference only: attention of Tn new query positions x (B, Tn, D) over cached keys and values.

        Self-attention (``append=True``): the keys and values of x are written
        into ``kv`` first, so each new position attends to every earlier one and
        to itself (``mask`` hides later new positions and padding).
        Cross-attention (``append=False``): ``kv`` already holds the keys and
        values of the memory, computed once with ``project_kv``.
        The output equals the last Tn rows of ``forward`` on the whole sequence.
        ``.attn`` is (B, H, Tn, Tk); nothing is kept for backward.
        """
        if append:
            kv.append(*self.project_kv(x))
        q = self.split_heads(self.w_q(x))                         # (B, H, Tn, dk)
        heads = self.attention(q, kv.k, kv.v, mask)               # (B, H, Tn, dk)
        self.attn = self.attention.attn
        self.cache = None               # backward after a step raises instead of using stale arrays
        return self.w_o(self.merge_heads(heads))                  # (B, Tn, D)

    def backward(self, dout: np.ndarray):                         # dout: (B, Tq, D)
        self_attention = self._saved()
        dheads = self.split_heads(self.w_o.backward(dout))        # (B, H, Tq, dk)
        dq, dk, dv = self.attention.backward(dheads)
        dx = self.w_q.backward(self.merge_heads(dq))              # (B, Tq, D)
        dsource = self.w_k.backward(self.merge_heads(dk)) + self.w_v.backward(self.merge_heads(dv))
        if self_attention:
            return dx + dsource                                   # x fed q, k and v
        return dx, dsource
