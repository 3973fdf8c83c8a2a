"""Scaled dot-product attention and multi-head attention (their masks: masks.py, re-exported here).

Legend: B batch, H heads, Hkv key/value heads (H / Hkv = g, the group size), Tq query
positions, Tk key positions, dk key/query size per head, dv value size per head, D d_model = H * dk.

Masks are boolean and broadcast to the scores (B, H, Tq, Tk): True means "this
query may attend to this key". Only keys are masked.

Positions inside self-attention (``positional``): "rope" rotates q and k after the
head split (rotary.py), "alibi" adds a distance penalty to the scaled scores
(alibi.py); otherwise positions, if any, came in with x.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .alibi import ALiBiBias
from .dropout import Dropout
from .functional import masked_softmax_, softmax_backward_
from .kv_cache import AttentionCache
from .linear import Linear
from .masks import causal_mask, causal_padding_mask, check_mask, padding_mask  # noqa: F401 (re-exported)
from .module import InvalidatedByInference, Module, check_float_input, default_rng
from .rotary import RotaryEmbedding

ATTENTION_POSITIONALS = (None, "rope", "alibi")


class SDPACache(NamedTuple):
    q: np.ndarray           # (B, H, Tq, dk)
    k: np.ndarray           # (B, H, Tk, dk)
    v: np.ndarray           # (B, H, Tk, dv)
    attn: np.ndarray        # (B, H, Tq, Tk) A, the softmax weights
    dropped: np.ndarray     # (B, H, Tq, Tk) dropout(A), what multiplied v


class MHACache(NamedTuple):
    self_attention: bool    # x fed the queries, keys and values (no context)


class ScaledDotProductAttention(Module):
    """out = dropout(A) @ v,  A = softmax(q @ k^T / sqrt(dk) [+ alibi bias]), masked keys set to -inf.

    A query row whose keys are all masked gets A = 0 (so out = 0), not NaN.
    With ``alibi`` (an ALiBiBias), its constant bias is added to the scaled scores.
    ``self.attn`` gives the weights A (B, H, Tq, Tk) of the last forward for plotting,
    as a copy: editing it changes no gradient.

    Backward, with Ad = dropout(A), S = q @ k^T / sqrt(dk):
        dv = Ad^T @ dout            dAd = dout @ v^T          dA = dropout.backward(dAd)
        dS = A * (dA - sum_k(dA * A))                         (softmax backward; 0 where masked)
        dq = dS @ k / sqrt(dk)      dk = dS^T @ q / sqrt(dk)
    """

    def __init__(self, dropout: float = 0.0, rng: np.random.Generator | None = None,
                 alibi: ALiBiBias | None = None):
        super().__init__()
        self.dropout = Dropout(dropout, rng=rng)
        self.alibi = alibi
        self._attn = None

    @property
    def attn(self) -> np.ndarray | None:
        """The weights A (B, H, Tq, Tk) of the last forward: a copy, never the array backward reads."""
        return None if self._attn is None else self._attn.copy()

    def forward(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None):
        check_float_input("q", q, min_ndim=2)
        check_float_input("k", k, q.dtype, last_dim=q.shape[-1], min_ndim=2, dtype_of="q's dtype")
        check_float_input("v", v, q.dtype, min_ndim=2, dtype_of="q's dtype")
        if k.shape[:-2] != q.shape[:-2] or v.shape[:-1] != k.shape[:-1]:
            raise ValueError(f"q, k, v: expected (B, H, Tq, dk), (B, H, Tk, dk), (B, H, Tk, dv), "
                             f"got {q.shape}, {k.shape}, {v.shape}")
        scale = 1.0 / math.sqrt(q.shape[-1])     # a Python float: float32 stays float32
        scores = q @ k.swapaxes(-1, -2)                               # (B, H, Tq, Tk)
        scores *= scale                                  # in place: no second array of this size
        if self.alibi is not None:
            scores = self.alibi(scores)                               # + (-m_h |i - j|)
        if mask is not None:
            check_mask(mask, scores.shape)
        attn = masked_softmax_(scores, mask)                          # (B, H, Tq, Tk), over scores
        dropped = self.dropout(attn)
        self._attn = attn
        self.cache = SDPACache(q, k, v, attn, dropped)
        return dropped @ v                                            # (B, H, Tq, dv)

    def backward(self, dout: np.ndarray):                             # dout: (B, H, Tq, dv)
        q, k, v, attn, dropped = self._saved()
        scale = 1.0 / math.sqrt(q.shape[-1])
        # forward was out = dropped @ v, dropped = dropout(attn)
        dv = dropped.swapaxes(-1, -2) @ dout                          # (B, H, Tk, dv)
        dattn = self.dropout.backward(dout @ v.swapaxes(-1, -2))      # (B, H, Tq, Tk)
        # forward was attn = softmax(scores); masked entries have A = 0, so get no gradient
        dscores = softmax_backward_(attn, dattn)                      # (B, H, Tq, Tk), over dattn
        if self.alibi is not None:
            dscores = self.alibi.backward(dscores)                    # the bias is a constant
        # forward was scores = q @ k^T * scale
        dq = (dscores @ k) * scale                                    # (B, H, Tq, dk)
        dk = (dscores.swapaxes(-1, -2) @ q) * scale                   # (B, H, Tk, dk)
        return dq, dk, dv


class MultiHeadAttention(Module):
    """MultiHead(x, c) = Concat(head_1, ..., head_H) @ W_o + b_o,
    head_h = Attention(x W_q^h, c W_k^j, c W_v^j), j = h // g, with c = x for self-attention.

    Heads are contiguous blocks of the projected features, as in PyTorch: head h
    uses columns h*dk:(h+1)*dk of x @ W_q. The split is a reshape to (B, T, H, dk)
    and a transpose to (B, H, T, dk); every head runs in one batched matmul.

    ``n_kv_heads`` (Hkv, dividing H; None means H): grouped-query attention (Ainslie et al. 2023,
    as in LLaMA 2 and 3). W_k and W_v map D -> Hkv * dk, and the g = H / Hkv query heads
    h = j*g .. j*g + g-1 share key/value head j (Hkv = 1 is multi-query attention). The keys
    and values are repeated g times along the head axis before the attention (a KV cache
    keeps the Hkv heads only). ``bias=False`` drops the bias of all four projections.

    ``positional`` (self-attention only): "rope" rotates every head's q and k by their
    positions (``rotary``, a RotaryEmbedding of the head size and ``max_len``), "alibi"
    biases the scores by distance (``attention.alibi``); None adds no position here.

    Backward: the split/merge are reshapes and transposes, undone in reverse.
    In self-attention x feeds the query, key and value projections, so dx is
    the sum of all three; in cross-attention x gets the query part and the
    context the key and value parts. With RoPE, dq and dk are rotated back first.
    A shared key/value head was used by g query heads, so its gradient is the sum of theirs:
        dk_j = sum over h = j*g .. j*g + g-1 of dk_h        (and likewise dv_j)
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0,
                 rng: np.random.Generator | None = None, dtype=np.float32,
                 positional: str | None = None, max_len: int | None = None, rope_base: float = 10000.0,
                 n_kv_heads: int | None = None, bias: bool = True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"MultiHeadAttention: d_model ({d_model}) must be divisible by "
                             f"n_heads ({n_heads})")
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if isinstance(n_kv_heads, bool) or not isinstance(n_kv_heads, (int, np.integer)) \
                or n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"MultiHeadAttention n_kv_heads: expected None or a positive integer "
                             f"dividing n_heads ({n_heads}), got {n_kv_heads!r}")
        if positional not in ATTENTION_POSITIONALS:
            raise ValueError(f"MultiHeadAttention positional: expected None, 'rope' or 'alibi', "
                             f"got {positional!r}")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.n_kv_heads, self.group = int(n_kv_heads), n_heads // int(n_kv_heads)
        self.positional = positional
        rng = default_rng(rng)            # one Generator for all four: distinct weights
        d_kv = self.n_kv_heads * self.d_head
        self.w_q = Linear(d_model, d_model, bias, rng=rng, dtype=dtype)
        self.w_k = Linear(d_model, d_kv, bias, rng=rng, dtype=dtype)
        self.w_v = Linear(d_model, d_kv, bias, rng=rng, dtype=dtype)
        self.w_o = Linear(d_model, d_model, bias, rng=rng, dtype=dtype)
        self.rotary = (RotaryEmbedding(self.d_head, max_len, rope_base, dtype=dtype)
                       if positional == "rope" else None)
        self.attention = ScaledDotProductAttention(
            dropout, rng=rng, alibi=ALiBiBias(n_heads) if positional == "alibi" else None)

    @property
    def attn(self) -> np.ndarray | None:
        """The attention weights (B, H, Tq, Tk) of the last forward or step, a copy (for plotting)."""
        return self.attention.attn

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}" + (
            f", n_kv_heads={self.n_kv_heads}" if self.group > 1 else "") + (
            f", positional={self.positional!r}" if self.positional else "")

    def split_heads(self, x: np.ndarray) -> np.ndarray:
        """(B, T, heads * dk) -> (B, heads, T, dk): H heads of queries, Hkv of keys and values."""
        B, T, features = x.shape
        return x.reshape(B, T, features // self.d_head, self.d_head).transpose(0, 2, 1, 3)

    def repeat_kv(self, kv: np.ndarray) -> np.ndarray:
        """(B, Hkv, T, dk) -> (B, H, T, dk): key/value head j serves query heads j*g .. j*g + g-1."""
        return kv if self.group == 1 else np.repeat(kv, self.group, axis=1)

    def sum_groups(self, dkv: np.ndarray) -> np.ndarray:
        """(B, H, T, dk) -> (B, Hkv, T, dk), the backward of ``repeat_kv``: each shared head's
        gradient is the sum of those of the g query heads that read it."""
        if self.group == 1:
            return dkv
        B, H, T, dk = dkv.shape
        return dkv.reshape(B, self.n_kv_heads, self.group, T, dk).sum(axis=2)

    def merge_heads(self, x: np.ndarray) -> np.ndarray:
        """(B, H, T, dk) -> (B, T, D), the inverse of split_heads."""
        B, H, T, dk = x.shape
        return x.transpose(0, 2, 1, 3).reshape(B, T, H * dk)

    def forward(self, x: np.ndarray, context: np.ndarray | None = None,
                mask: np.ndarray | None = None) -> np.ndarray:
        check_float_input("x", x, self.w_q.params["weight"].dtype, last_dim=self.d_model, min_ndim=3)
        source = x if context is None else context
        if context is not None:
            if self.positional is not None:
                raise ValueError(f"MultiHeadAttention(positional={self.positional!r}) is for "
                                 f"self-attention: got a context (cross-attention has no positions)")
            check_float_input("context", context, x.dtype, last_dim=self.d_model, min_ndim=3,
                              dtype_of="x's dtype")
            if context.shape[0] != x.shape[0]:
                raise ValueError(f"context: expected batch size {x.shape[0]} (that of x), "
                                 f"got shape {context.shape}")
        q = self.split_heads(self.w_q(x))                         # (B, H, Tq, dk)
        k, v = self.project_kv(source)                            # (B, Hkv, Tk, dk) each
        if self.rotary is not None:                               # positions 0 .. T-1
            q, k = self.rotary(q), self.rotary(k)                 # (B, H or Hkv, T, dk)
        heads = self.attention(q, self.repeat_kv(k), self.repeat_kv(v), mask)    # (B, H, Tq, dk)
        self.cache = MHACache(self_attention=context is None)
        return self.w_o(self.merge_heads(heads))                  # (B, Tq, D)

    def project_kv(self, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The keys and values (B, Hkv, Tk, dk) of ``source`` (B, Tk, D), as ``forward`` computes
        them (before RoPE and before the repeat over query groups)."""
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
        ``kv`` holds the Hkv key/value heads, repeated over the query groups at each step.
        ``.attn`` is (B, H, Tn, Tk); nothing is kept for backward.
        """
        q = self.split_heads(self.w_q(x))                         # (B, H, Tn, dk)
        if append:
            k_new, v_new = self.project_kv(x)                     # (B, Hkv, Tn, dk)
            if self.rotary is not None:   # the new positions follow the cached ones; cached keys stay rotated
                q, k_new = self.rotary(q, kv.length), self.rotary(k_new, kv.length)
            kv.append(k_new, v_new)
        heads = self.attention(q, self.repeat_kv(kv.k), self.repeat_kv(kv.v), mask)   # (B, H, Tn, dk)
        self.cache = InvalidatedByInference("step")   # backward raises instead of using stale arrays
        return self.w_o(self.merge_heads(heads))                  # (B, Tn, D)

    def backward(self, dout: np.ndarray):                         # dout: (B, Tq, D)
        self_attention = self._saved().self_attention
        dheads = self.split_heads(self.w_o.backward(dout))        # (B, H, Tq, dk)
        dq, dk, dv = self.attention.backward(dheads)              # (B, H, T, dk) each
        # forward was k, v = repeat_kv(k), repeat_kv(v)
        dk, dv = self.sum_groups(dk), self.sum_groups(dv)         # (B, Hkv, Tk, dk)
        if self.rotary is not None:
            # forward was q, k = rotate(q), rotate(k)
            dq, dk = self.rotary.backward(dq), self.rotary.backward(dk)
        dx = self.w_q.backward(self.merge_heads(dq))              # (B, Tq, D)
        dsource = self.w_k.backward(self.merge_heads(dk)) + self.w_v.backward(self.merge_heads(dv))
        if self_attention:
            return dx + dsource                                   # x fed q, k and v
        return dx, dsource
