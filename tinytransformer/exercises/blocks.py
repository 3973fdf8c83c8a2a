"""Exercises on the parts of attention and of a Transformer layer: attention_scores, attention,
split_heads, merge_heads, residual.

Legend: B batch, H heads, Tq query positions, Tk key positions, d the size of one head
(written d, not dk, so that dk can only mean the gradient of k), D = H * d.
"""

from __future__ import annotations

import math

from ..nn.functional import softmax
from .grading import Exercise, Mistake


def _T(a):
    """The last two axes swapped: a^T for every (batch, head)."""
    return a.swapaxes(-1, -2)


# ---- attention_scores ---------------------------------------------------------------------

def _scores(q, k):
    return q @ _T(k) / math.sqrt(q.shape[-1])


def attention_scores_backward(q, k, dS):
    """Forward S = q @ k^T / sqrt(d), one product per (batch, head). As for y = a @ b:
    da = dy @ b^T and db = a^T @ dy, here with b = k^T and the constant 1/sqrt(d):
        dq = dS @ k / sqrt(d)        dk = dS^T @ q / sqrt(d)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    return dS @ k * scale, _T(dS) @ q * scale


def _qkv(rng, with_v=True):
    q, k = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 6, 5))
    return (q, k, rng.standard_normal((2, 3, 6, 7))) if with_v else (q, k)


ATTENTION_SCORES = Exercise(
    "attention_scores",
    """S = q @ k^T / sqrt(d), for every batch and head,
q (B, H, Tq, d), k (B, H, Tk, d) -> S (B, H, Tq, Tk).
dS (B, H, Tq, Tk) is dL/dS. Return (dq, dk), shaped like q and k.""",
    forward=_scores,
    solution=attention_scores_backward,
    build=lambda rng: _qkv(rng, with_v=False),
    grads=("dq", "dk"),
    mistakes=(Mistake("dq", lambda q, k, dS: dS @ k,
                      "the forward's 1/sqrt(d) is missing: dq = dS @ k / sqrt(d)"),),
    factor_hint="the scores are divided by sqrt(d), so their gradients are too",
)


# ---- attention ----------------------------------------------------------------------------

def _attention(q, k, v):
    return softmax(_scores(q, k)) @ v


def attention_backward(q, k, v, dout):
    """Forward out = A @ v, A = softmax(S), S = q @ k^T / sqrt(d). Undo it line by line:
        dv = A^T @ dout                 dA = dout @ v^T
        dS = A * (dA - sum_k(dA * A))   (the softmax backward, over the keys)
        dq, dk from dS as in attention_scores."""
    A = softmax(_scores(q, k))                                     # (B, H, Tq, Tk)
    dA = dout @ _T(v)                                              # (B, H, Tq, Tk)
    dS = A * (dA - (dA * A).sum(axis=-1, keepdims=True))
    dq, dk = attention_scores_backward(q, k, dS)
    return dq, dk, _T(A) @ dout                                    # dv (B, H, Tk, dv)


def _attention_skipping_softmax(q, k, v, dout):
    return attention_scores_backward(q, k, dout @ _T(v))


SKIPPED_SOFTMAX = "the gradient of the scores goes through the softmax backward: dS = A * (dA - sum(dA * A))"

ATTENTION = Exercise(
    "attention",
    """out = softmax(q @ k^T / sqrt(d)) @ v, the softmax over the keys (last axis),
q (B, H, Tq, d), k (B, H, Tk, d), v (B, H, Tk, dv) -> out (B, H, Tq, dv).
dout (B, H, Tq, dv) is dL/dout. Return (dq, dk, dv), shaped like q, k and v.""",
    forward=_attention,
    solution=attention_backward,
    build=_qkv,
    grads=("dq", "dk", "dv"),
    mistakes=(Mistake("dq", lambda *a: _attention_skipping_softmax(*a)[0], SKIPPED_SOFTMAX),
              Mistake("dk", lambda *a: _attention_skipping_softmax(*a)[1], SKIPPED_SOFTMAX)),
    factor_hint="the scores are divided by sqrt(d), so their gradients are too",
)


# ---- split_heads / merge_heads ------------------------------------------------------------

def split_heads(x, n_heads):
    """(B, T, D) -> (B, H, T, d): head h is columns h*d:(h+1)*d, as in the package."""
    B, T, D = x.shape
    return x.reshape(B, T, n_heads, D // n_heads).transpose(0, 2, 1, 3)


def merge_heads(heads):
    """(B, H, T, d) -> (B, T, H * d), the inverse of split_heads."""
    B, H, T, d = heads.shape
    return heads.transpose(0, 2, 1, 3).reshape(B, T, H * d)


def split_heads_backward(x, n_heads, dheads):
    """Forward: a reshape and a transpose, which only move elements. Their gradient moves each
    element of dheads back where it came from: the inverse moves, i.e. merge_heads."""
    return merge_heads(dheads)


def merge_heads_backward(heads, dmerged):
    """Forward: merge_heads moves elements; the gradient moves them back: split_heads."""
    return split_heads(dmerged, heads.shape[1])


SPLIT_HEADS = Exercise(
    "split_heads",
    """heads = x.reshape(B, T, H, d).transpose(0, 2, 1, 3),
x (B, T, D), n_heads = H (an int, D = H * d) -> heads (B, H, T, d).
dheads (B, H, T, d) is dL/dheads. Return dx, shaped like x.""",
    forward=split_heads,
    solution=split_heads_backward,
    build=lambda rng: (rng.standard_normal((2, 4, 15)), 3),
    grads=("dx",),
    mistakes=(Mistake("dx", lambda x, n_heads, dheads: dheads.reshape(x.shape),
                      "a reshape alone puts elements in the wrong places: the forward transposed "
                      "(B, T, H, d) to (B, H, T, d), so transpose back before reshaping"),),
)

MERGE_HEADS = Exercise(
    "merge_heads",
    """merged = heads.transpose(0, 2, 1, 3).reshape(B, T, H * d),
heads (B, H, T, d) -> merged (B, T, D).
dmerged (B, T, D) is dL/dmerged. Return dheads, shaped like heads.""",
    forward=merge_heads,
    solution=merge_heads_backward,
    build=lambda rng: (rng.standard_normal((2, 3, 4, 5)),),
    grads=("dheads",),
    mistakes=(Mistake("dheads", lambda heads, dmerged: dmerged.reshape(heads.shape),
                      "a reshape alone puts elements in the wrong places: reshape to (B, T, H, d), "
                      "then transpose to (B, H, T, d)"),),
)


# ---- residual -----------------------------------------------------------------------------

def residual_backward(x, W, dy):
    """Forward y = x + f(x), f(x) = x @ W. x reaches y twice, so its gradient is the sum of both
    paths: the identity passes dy unchanged, the branch gives dy @ W^T.
        dx = dy + dy @ W^T        dW = x^T @ dy   (x, dy flattened to (N, D))"""
    x2, dy2 = x.reshape(-1, W.shape[0]), dy.reshape(-1, W.shape[1])    # (N, D)
    return dy + dy @ W.T, x2.T @ dy2


RESIDUAL = Exercise(
    "residual",
    """y = x + f(x), a residual connection around the branch f(x) = x @ W,
x (B, T, D), W (D, D) -> y (B, T, D).
dy (B, T, D) is dL/dy. Return (dx, dW), shaped like x and W.""",
    forward=lambda x, W: x + x @ W,
    solution=residual_backward,
    build=lambda rng: (rng.standard_normal((2, 3, 5)), rng.standard_normal((5, 5))),
    grads=("dx", "dW"),
    mistakes=(Mistake("dx", lambda x, W, dy: dy @ W.T,
                      "a term is missing: the residual adds the upstream gradient, "
                      "dx = dy + (the branch's dx)"),
              Mistake("dx", lambda x, W, dy: dy,
                      "a term is missing: the branch f(x) = x @ W depends on x too, dx = dy + dy @ W^T"),
              Mistake("dx", lambda x, W, dy: dy + dy @ W,
                      "the branch's term looks transposed: y = x @ W gives dx = dy @ W^T"),),
)

BLOCK_EXERCISES = (ATTENTION_SCORES, ATTENTION, SPLIT_HEADS, MERGE_HEADS, RESIDUAL)
