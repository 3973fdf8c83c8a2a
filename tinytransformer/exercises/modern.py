"""Exercises on the parts of a modern decoder, each a derivation the notebooks leave to the reader:
swiglu (the gated feed-forward's backward), rope_pairs (rotary positions with neighbour pairing) and
alibi_asymmetric (a distance bias with one slope behind the query and another ahead of it).

Legend: B batch, T time, H heads, D features, F hidden features, d the size of one head.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ..nn.functional import softmax
from .grading import Exercise, Mistake


def rows(a):
    """(..., n) -> (N, n): every leading axis flattened, for the weight gradients."""
    return a.reshape(-1, a.shape[-1])


# ---- swiglu -------------------------------------------------------------------------------

def _swiglu_parts(x, W1, W3):
    a = x @ W1                                      # (B, T, F): the gate's pre-activation
    s = expit(a)                                    # sigmoid(a)
    return a, s, a * s, x @ W3                      # a, sigmoid(a), gate = silu(a), up


def _swiglu(x, W1, W3, W2):
    _, _, gate, up = _swiglu_parts(x, W1, W3)
    return (gate * up) @ W2


def swiglu_backward(x, W1, W3, W2, dy):
    """Forward a = x W1, gate = silu(a) = a sigmoid(a), up = x W3, h = gate * up, y = h W2.
    Back through each line: dW2 = h^T dy, dh = dy W2^T; the product rule on h gives
    dgate = dh * up and dup = dh * gate; silu'(a) = s (1 + a (1 - s)) with s = sigmoid(a), so
    da = dgate * silu'(a); dW1 = x^T da, dW3 = x^T dup; x feeds both projections, so
    dx = da W1^T + dup W3^T."""
    a, s, gate, up = _swiglu_parts(x, W1, W3)
    dh = dy @ W2.T                                  # (B, T, F)
    da = dh * up * (s * (1.0 + a * (1.0 - s)))      # (B, T, F)
    dup = dh * gate                                 # (B, T, F)
    return (da @ W1.T + dup @ W3.T, rows(x).T @ rows(da), rows(x).T @ rows(dup),
            rows(gate * up).T @ rows(dy))


def _swiglu_wrong(x, W1, W3, W2, dy, sigmoid_slope=False, swap_product=False):
    """The pieces of swiglu_backward with a classic slip: silu's slope taken as sigmoid(a), or the
    product rule's factors swapped (dgate = dh * gate, dup = dh * up)."""
    a, s, gate, up = _swiglu_parts(x, W1, W3)
    dh = dy @ W2.T
    dgate, dup = (dh * gate, dh * up) if swap_product else (dh * up, dh * gate)
    da = dgate * (s if sigmoid_slope else s * (1.0 + a * (1.0 - s)))
    return da, dup


SILU_SLOPE = ("silu'(a) is not sigmoid(a): by the product rule, d/da [a sigmoid(a)] = s + a s (1 - s) "
              "= s (1 + a (1 - s)), with s = sigmoid(a)")
SWAPPED_PRODUCT = ("the product rule on h = gate * up: the gradient of one factor is dh times the other, "
                   "dgate = dh * up and dup = dh * gate")

SWIGLU = Exercise(
    "swiglu",
    """y = (silu(x @ W1) * (x @ W3)) @ W2, silu(a) = a * sigmoid(a), LLaMA's feed-forward (no biases),
x (B, T, D), W1 (D, F), W3 (D, F), W2 (F, D) -> y (B, T, D).
dy (B, T, D) is dL/dy. Return (dx, dW1, dW3, dW2), shaped like x, W1, W3 and W2.""",
    forward=_swiglu,
    solution=swiglu_backward,
    build=lambda rng: (rng.standard_normal((2, 3, 5)), rng.standard_normal((5, 7)) / 2,
                       rng.standard_normal((5, 7)) / 2, rng.standard_normal((7, 5)) / 2),
    grads=("dx", "dW1", "dW3", "dW2"),
    mistakes=(
        Mistake("dx", lambda x, W1, W3, W2, dy: _swiglu_wrong(x, W1, W3, W2, dy)[0] @ W1.T,
                "a path is missing: x feeds the gate and the up projection, so dx = da W1^T + dup W3^T"),
        Mistake("dx", lambda x, W1, W3, W2, dy: _swiglu_wrong(x, W1, W3, W2, dy)[1] @ W3.T,
                "a path is missing: x feeds the gate too, so dx = da W1^T + dup W3^T, da through silu'"),
        Mistake("dW1", lambda x, W1, W3, W2, dy:
                rows(x).T @ rows(_swiglu_wrong(x, W1, W3, W2, dy, sigmoid_slope=True)[0]), SILU_SLOPE),
        Mistake("dx", lambda x, W1, W3, W2, dy:
                _swiglu_wrong(x, W1, W3, W2, dy, sigmoid_slope=True)[0] @ W1.T
                + _swiglu_wrong(x, W1, W3, W2, dy)[1] @ W3.T, SILU_SLOPE),
        Mistake("dW1", lambda x, W1, W3, W2, dy:
                rows(x).T @ rows(_swiglu_wrong(x, W1, W3, W2, dy, swap_product=True)[0]), SWAPPED_PRODUCT),
        Mistake("dW3", lambda x, W1, W3, W2, dy:
                rows(x).T @ rows(_swiglu_wrong(x, W1, W3, W2, dy, swap_product=True)[1]), SWAPPED_PRODUCT),
    ),
)


# ---- rope_pairs ---------------------------------------------------------------------------

def _rope_angles(T, d, offset, base):
    """theta[t, i] = (offset + t) * base ** (-2i / d), i = 0 .. d/2 - 1.   (T, d/2)"""
    return np.arange(offset, offset + T)[:, None] * base ** (-np.arange(0, d, 2) / d)


def _rotate(x, theta, pairing: str, sign: float = 1.0):
    """Turn every pair of x's last axis by sign * theta; pairs are (2i, 2i+1) ("neighbours") or
    (i, i + d/2) ("halves")."""
    first, second = (slice(0, None, 2), slice(1, None, 2)) if pairing == "neighbours" else \
        (slice(0, x.shape[-1] // 2), slice(x.shape[-1] // 2, None))
    cos, sin = np.cos(theta), sign * np.sin(theta)
    out = np.empty_like(x)
    out[..., first] = x[..., first] * cos - x[..., second] * sin
    out[..., second] = x[..., second] * cos + x[..., first] * sin
    return out


def _rope_pairs(x, offset, base):
    return _rotate(x, _rope_angles(x.shape[-2], x.shape[-1], offset, base), "neighbours")


def rope_pairs_backward(x, offset, base, dout):
    """Forward out = R x: pair i of row t, (x[2i], x[2i+1]), turned by theta = (offset + t) base^(-2i/d).
    R is a rotation, so dx = R^T dout, the turn by -theta (cos even, sin odd), pair by pair:
        dx[2i] = dout[2i] cos + dout[2i+1] sin      dx[2i+1] = dout[2i+1] cos - dout[2i] sin."""
    return _rotate(dout, _rope_angles(x.shape[-2], x.shape[-1], offset, base), "neighbours", sign=-1.0)


def _rope_wrong(x, offset, base, dout, pairing="neighbours", sign=-1.0, offset_used=None):
    theta = _rope_angles(x.shape[-2], x.shape[-1], offset if offset_used is None else offset_used, base)
    return _rotate(dout, theta, pairing, sign)


ROPE_PAIRS = Exercise(
    "rope_pairs",
    """RoPE with neighbour pairing (the RoFormer paper's): pair i of a head vector is
(x[..., 2i], x[..., 2i+1]), turned by theta = p * base ** (-2i / d) at position p:
    out[2i] = x[2i] cos - x[2i+1] sin      out[2i+1] = x[2i+1] cos + x[2i] sin,
row t of x (B, H, T, d) at position p = offset + t. offset (an int) and base (a float) are constants.
dout (B, H, T, d) is dL/dout. Return dx, shaped like x.""",
    forward=_rope_pairs,
    solution=rope_pairs_backward,
    build=lambda rng: (rng.standard_normal((2, 3, 4, 6)), 3, 100.0),
    grads=("dx",),
    mistakes=(
        Mistake("dx", lambda x, offset, base, dout: _rope_wrong(x, offset, base, dout, pairing="halves"),
                "that is the backward of the rotate-half pairing, (x[i], x[i + d/2]), the package's: here "
                "the pairs are neighbours, (x[2i], x[2i+1]); interleave, don't split in halves"),
        Mistake("dx", lambda x, offset, base, dout: _rope_wrong(x, offset, base, dout, sign=1.0),
                "that turns dout by +theta, as the forward does: the backward is R^T, the turn by -theta "
                "(the sin terms change sign)"),
        Mistake("dx", lambda x, offset, base, dout: _rope_wrong(x, offset, base, dout, offset_used=0),
                "the angles start at position 0: row t is at position offset + t"),
    ),
)


# ---- alibi_asymmetric ---------------------------------------------------------------------

def _distances(T):
    """(behind, ahead), each (T, T): i - j where key j is behind query i (j < i), j - i where it is
    ahead (j > i), 0 elsewhere."""
    offset = np.arange(T)[:, None] - np.arange(T)                   # i - j
    return np.maximum(offset, 0), np.maximum(-offset, 0)


def asymmetric_bias(m_back, m_ahead, T):
    """-m_back[h] (i - j) for keys behind the query, -m_ahead[h] (j - i) for keys ahead.   (H, T, T)"""
    behind, ahead = _distances(T)
    return -m_back[:, None, None] * behind - m_ahead[:, None, None] * ahead


def _alibi_asymmetric(scores, m_back, m_ahead):
    return softmax(scores + asymmetric_bias(m_back, m_ahead, scores.shape[-1]))


def alibi_asymmetric_backward(S, m_back, m_ahead, dout):
    """Forward Z = S + bias, A = softmax(Z) over the keys, bias[h, i, j] = -m_back[h] (i - j) for
    j < i and -m_ahead[h] (j - i) for j > i. The softmax backward gives dZ = A * (dout - sum_j(dout * A)),
    and dS = dZ (the bias is added). m_back[h] reaches Z[b, h, i, j] with the factor -(i - j) for every
    key behind, so dm_back[h] = -sum over b, i, j < i of (i - j) dZ[b, h, i, j]; dm_ahead likewise over
    the keys ahead."""
    A = _alibi_asymmetric(S, m_back, m_ahead)                      # (B, H, T, T)
    dZ = A * (dout - (dout * A).sum(-1, keepdims=True))            # (B, H, T, T)
    behind, ahead = _distances(S.shape[-1])
    return dZ, -(dZ * behind).sum((0, 2, 3)), -(dZ * ahead).sum((0, 2, 3))


def _both_sides(S, m_back, m_ahead, dout):
    """A slope's gradient summed over every key, as if one slope served both sides: -sum |i - j| dZ."""
    dZ = alibi_asymmetric_backward(S, m_back, m_ahead, dout)[0]
    return -(dZ * sum(_distances(S.shape[-1]))).sum((0, 2, 3))


SKIPPED_SOFTMAX = "the bias is added before the softmax: dZ = A * (dout - sum_j(dout * A)), then dS = dZ"
ONE_SIDE_BACK = ("m_back only multiplies the keys behind the query (j < i), at distance i - j; the keys "
                 "ahead belong to m_ahead")
ONE_SIDE_AHEAD = ("m_ahead only multiplies the keys ahead of the query (j > i), at distance j - i; the keys "
                  "behind belong to m_back")

ALIBI_ASYMMETRIC = Exercise(
    "alibi_asymmetric",
    """A = softmax(S + bias) over the keys, an ALiBi bias with one slope behind and another ahead:
bias[h, i, j] = -m_back[h] * (i - j) if j < i, -m_ahead[h] * (j - i) if j > i, 0 if j == i,
S (B, H, T, T) the scaled scores, m_back (H,), m_ahead (H,) -> A (B, H, T, T).
dout (B, H, T, T) is dL/dA. Return (dS, dm_back, dm_ahead), shaped like S, m_back and m_ahead.""",
    forward=_alibi_asymmetric,
    solution=alibi_asymmetric_backward,
    build=lambda rng: (rng.standard_normal((2, 3, 5, 5)), rng.uniform(0.05, 0.6, 3), rng.uniform(0.05, 0.6, 3)),
    grads=("dS", "dm_back", "dm_ahead"),
    mistakes=(
        Mistake("dS", lambda S, mb, ma, dout: dout, SKIPPED_SOFTMAX),
        Mistake("dm_back", lambda S, mb, ma, dout: -(dout * _distances(S.shape[-1])[0]).sum((0, 2, 3)),
                SKIPPED_SOFTMAX),
        Mistake("dm_back", _both_sides, ONE_SIDE_BACK),
        Mistake("dm_ahead", _both_sides, ONE_SIDE_AHEAD),
    ),
)

MODERN_EXERCISES = (SWIGLU, ROPE_PAIRS, ALIBI_ASYMMETRIC)
