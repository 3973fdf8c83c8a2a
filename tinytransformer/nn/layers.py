"""The encoder and decoder layers: sublayers in residual branches, each with its norm.

Legend: B batch, S source length, T target length, D d_model.

Every sublayer (attention or feed-forward) sits in a residual branch with a
norm (LayerNorm, or RMSNorm with ``norm="rmsnorm"``), in one of two arrangements:
    pre-LN  (norm_first=True):   out = x + dropout(f(norm(x)))      a final norm ends the stack
    post-LN (norm_first=False):  out = norm(x + dropout(f(x)))      the paper's arrangement
Backward of the residual: the identity branch passes the gradient through
unchanged and the sublayer branch adds its own, so dx = dout + (branch) for
pre-LN, and dx = dsum + (branch) with dsum = norm.backward(dout) for post-LN.

``positional`` "rope" or "alibi" puts positions inside every self-attention
(attention.py); cross-attention never gets any. ``max_len`` bounds RoPE's positions.
``n_kv_heads`` (grouped-query attention) and ``bias`` apply to every attention, cross-attention
included; ``bias`` to the feed-forward too; ``norm_eps`` is the eps of every norm.

Decoding one token at a time runs these layers through ``inference.py``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .attention import MultiHeadAttention
from .dropout import Dropout
from .feedforward import FeedForward
from .module import ChildCaches, Module, default_rng
from .normalization import make_norm


def residual_forward(x: np.ndarray, norm: Module, sublayer: Callable, dropout: Dropout,
                     norm_first: bool) -> np.ndarray:
    """pre-LN: x + dropout(sublayer(norm(x)));   post-LN: norm(x + dropout(sublayer(x)))."""
    if norm_first:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


def residual_backward(dout: np.ndarray, norm: Module, sublayer_backward: Callable,
                      dropout: Dropout, norm_first: bool):
    """The gradient of ``residual_forward`` with respect to x, and the sublayer's other input
    gradient if it has one (the memory, for cross-attention): returns (dx, dother or None)."""
    if norm_first:
        # forward was out = x + dropout(f(norm(x))): dout reaches x through the identity too
        dsub = sublayer_backward(dropout.backward(dout))
        dsub, dother = dsub if isinstance(dsub, tuple) else (dsub, None)
        return dout + norm.backward(dsub), dother
    # forward was out = norm(s), s = x + dropout(f(x))
    dsum = norm.backward(dout)
    dsub = sublayer_backward(dropout.backward(dsum))
    dsub, dother = dsub if isinstance(dsub, tuple) else (dsub, None)
    return dsum + dsub, dother


class EncoderLayer(Module):
    """Self-attention then feed-forward, each in a residual branch with its norm.

    norm1 goes with self-attention, norm2 with the feed-forward network.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu",
                 rng: np.random.Generator | None = None, dtype=np.float32, norm: str = "layernorm",
                 positional: str | None = None, max_len: int | None = None, rope_base: float = 10000.0,
                 n_kv_heads: int | None = None, bias: bool = True, norm_eps: float = 1e-5):
        super().__init__()
        rng = default_rng(rng)
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, rng=rng, dtype=dtype,
                                            positional=positional, max_len=max_len, rope_base=rope_base,
                                            n_kv_heads=n_kv_heads, bias=bias)
        self.ff = FeedForward(d_model, d_ff, activation, dropout, rng=rng, dtype=dtype, bias=bias)
        self.norm1 = make_norm(norm, d_model, dtype, norm_eps)
        self.norm2 = make_norm(norm, d_model, dtype, norm_eps)
        self.dropout1 = Dropout(dropout, rng=rng)     # on the self-attention output
        self.dropout2 = Dropout(dropout, rng=rng)     # on the feed-forward output

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:   # x: (B, S, D)
        h = residual_forward(x, self.norm1, lambda z: self.self_attn(z, mask=mask),
                             self.dropout1, self.norm_first)
        self.cache = ChildCaches()
        return residual_forward(h, self.norm2, self.ff, self.dropout2, self.norm_first)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self._saved()
        dh, _ = residual_backward(dout, self.norm2, self.ff.backward, self.dropout2, self.norm_first)
        dx, _ = residual_backward(dh, self.norm1, self.self_attn.backward, self.dropout1, self.norm_first)
        return dx


class DecoderLayer(Module):
    """Masked self-attention, cross-attention over the encoder memory, then feed-forward.

    norm1 goes with self-attention, norm2 with cross-attention, norm3 with the
    feed-forward network. Backward returns (dy, dmemory).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu",
                 rng: np.random.Generator | None = None, dtype=np.float32, norm: str = "layernorm",
                 positional: str | None = None, max_len: int | None = None, rope_base: float = 10000.0,
                 n_kv_heads: int | None = None, bias: bool = True, norm_eps: float = 1e-5):
        super().__init__()
        rng = default_rng(rng)
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, rng=rng, dtype=dtype,
                                            positional=positional, max_len=max_len, rope_base=rope_base,
                                            n_kv_heads=n_kv_heads, bias=bias)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout, rng=rng, dtype=dtype,
                                             n_kv_heads=n_kv_heads, bias=bias)
        self.ff = FeedForward(d_model, d_ff, activation, dropout, rng=rng, dtype=dtype, bias=bias)
        self.norm1 = make_norm(norm, d_model, dtype, norm_eps)
        self.norm2 = make_norm(norm, d_model, dtype, norm_eps)
        self.norm3 = make_norm(norm, d_model, dtype, norm_eps)
        self.dropout1 = Dropout(dropout, rng=rng)
        self.dropout2 = Dropout(dropout, rng=rng)
        self.dropout3 = Dropout(dropout, rng=rng)

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"

    def forward(self, y: np.ndarray, memory: np.ndarray, self_mask: np.ndarray | None = None,
                memory_mask: np.ndarray | None = None) -> np.ndarray:   # y: (B, T, D), memory: (B, S, D)
        h1 = residual_forward(y, self.norm1, lambda z: self.self_attn(z, mask=self_mask),
                              self.dropout1, self.norm_first)
        h2 = residual_forward(h1, self.norm2,
                              lambda z: self.cross_attn(z, context=memory, mask=memory_mask),
                              self.dropout2, self.norm_first)
        self.cache = ChildCaches()
        return residual_forward(h2, self.norm3, self.ff, self.dropout3, self.norm_first)

    def backward(self, dout: np.ndarray):
        self._saved()
        dh2, _ = residual_backward(dout, self.norm3, self.ff.backward, self.dropout3, self.norm_first)
        dh1, dmemory = residual_backward(dh2, self.norm2, self.cross_attn.backward,
                                         self.dropout2, self.norm_first)
        dy, _ = residual_backward(dh1, self.norm1, self.self_attn.backward, self.dropout1, self.norm_first)
        return dy, dmemory
