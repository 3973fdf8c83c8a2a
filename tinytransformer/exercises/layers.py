"""Exercises on single layers: linear, relu, gelu, softmax, layernorm, cross_entropy, embedding.

Each reference solution is the backward of its forward, written as the math.
Legend: B batch, T time, I/O in/out features, D features, V classes (or vocabulary).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from ..nn.functional import softmax
from .grading import Exercise, Mistake

EPS = 1e-5      # LayerNorm's eps, as the package's and PyTorch's


def _away_from_zero(rng, *shape):
    """Values with |x| >= 0.1: a +-1e-5 nudge never crosses ReLU's kink at 0."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)


# ---- linear -------------------------------------------------------------------------------

def linear_backward(x, W, b, dy):
    """Forward y = x @ W + b, every position using the same W and b. With x, dy flattened to
    (N, I), (N, O): dx = dy @ W^T, dW = x^T @ dy, db = sum over the N positions of dy."""
    x2, dy2 = x.reshape(-1, W.shape[0]), dy.reshape(-1, W.shape[1])    # (N, I), (N, O)
    return dy @ W.T, x2.T @ dy2, dy2.sum(axis=0)


LINEAR = Exercise(
    "linear",
    """y = x @ W + b,   x (B, T, I), W (I, O), b (O,) -> y (B, T, O).
dy (B, T, O) is dL/dy. Return (dx, dW, db), shaped like x, W and b.""",
    forward=lambda x, W, b: x @ W + b,
    solution=linear_backward,
    build=lambda rng: (rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)),
    grads=("dx", "dW", "db"),
    mistakes=(Mistake("db", lambda x, W, b, dy: dy.reshape(-1, W.shape[1]).mean(axis=0),
                      "b is added at every position, so db is the sum of dy over them all, not the mean"),),
)


# ---- relu ---------------------------------------------------------------------------------

def relu_backward(x, dy):
    """Forward y = max(x, 0): slope 1 where x > 0, 0 elsewhere, so dx = dy * [x > 0]."""
    return dy * (x > 0)


RELU = Exercise(
    "relu",
    """y = max(x, 0) elementwise,   x (B, D).
dy (B, D) is dL/dy. Return dx, shaped like x.""",
    forward=lambda x: np.maximum(x, 0.0),
    solution=relu_backward,
    build=lambda rng: (_away_from_zero(rng, 3, 4),),
    grads=("dx",),
    mistakes=(Mistake("dx", lambda x, dy: dy * np.maximum(x, 0.0),
                      "multiply dy by the slope of relu (0 or 1), not by its output max(x, 0)"),
              Mistake("dx", lambda x, dy: dy,
                      "a factor is missing: the gradient passes only where x > 0"),),
)


# ---- gelu ---------------------------------------------------------------------------------

def _normal_cdf(x):
    return 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


def _normal_pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def gelu_backward(x, dy):
    """Forward y = x * Phi(x). Product rule, with Phi' = phi the normal density:
    dx = dy * (Phi(x) + x * phi(x))."""
    return dy * (_normal_cdf(x) + x * _normal_pdf(x))


GELU = Exercise(
    "gelu",
    """y = x * Phi(x) elementwise (the exact GELU), Phi(x) = (1 + erf(x / sqrt(2))) / 2
the standard normal CDF,   x (B, D).
dy (B, D) is dL/dy. Return dx, shaped like x.""",
    forward=lambda x: x * _normal_cdf(x),
    solution=gelu_backward,
    build=lambda rng: (rng.standard_normal((3, 4)),),
    grads=("dx",),
    mistakes=(Mistake("dx", lambda x, dy: dy * _normal_cdf(x),
                      "a term is missing: y = x * Phi(x) is a product, so dy/dx = Phi(x) + x * phi(x)"),),
)


# ---- softmax ------------------------------------------------------------------------------

def softmax_backward(x, ds):
    """Forward s = softmax(x) over the last axis. From ds_i/dx_j = s_i (delta_ij - s_j):
    dx_j = sum_i ds_i s_i (delta_ij - s_j) = s_j (ds_j - sum_i ds_i s_i). No Jacobian built."""
    s = softmax(x)
    return s * (ds - (ds * s).sum(axis=-1, keepdims=True))


SOFTMAX = Exercise(
    "softmax",
    """s = softmax(x) over the last axis, s_i = exp(x_i) / sum_j exp(x_j),   x (B, V).
ds (B, V) is dL/ds. Return dx, shaped like x.
(tinytransformer.nn.functional.softmax(x) computes s.)""",
    forward=softmax,
    solution=softmax_backward,
    build=lambda rng: (rng.standard_normal((3, 5)),),
    grads=("dx",),
    mistakes=(Mistake("dx", lambda x, ds: softmax(x) * ds,
                      "a term is missing: every s_i depends on every x_j; subtract sum_i(ds_i * s_i)"),
              Mistake("dx", lambda x, ds: softmax(x) * (1 - softmax(x)) * ds,
                      "that is only the diagonal of the Jacobian: "
                      "the off-diagonal terms -s_i s_j are missing"),
              Mistake("dx", lambda x, ds: softmax(x) * (ds - (ds * softmax(x)).sum(axis=0, keepdims=True)),
                      "the sum runs over the softmax's own axis, the last one (axis=-1)"),),
)


# ---- layernorm ----------------------------------------------------------------------------

def _normalize(x):
    """xhat = (x - mean) / sqrt(var + eps) over the last axis, and rstd = 1 / sqrt(var + eps)."""
    rstd = 1.0 / np.sqrt(x.var(axis=-1, keepdims=True) + EPS)                    # (..., 1)
    return (x - x.mean(axis=-1, keepdims=True)) * rstd, rstd


def _layernorm(x, gamma, beta):
    return gamma * _normalize(x)[0] + beta


def layernorm_backward(x, gamma, beta, dy):
    """Forward y = gamma * xhat + beta, xhat = (x - mean) * rstd. With g = dy * gamma = dL/dxhat:
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))   (the mean and the variance depend on x)
        dgamma = sum over positions of dy * xhat,   dbeta = sum over positions of dy."""
    xhat, rstd = _normalize(x)
    D = x.shape[-1]
    g = dy * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, (dy * xhat).reshape(-1, D).sum(axis=0), dy.reshape(-1, D).sum(axis=0)


def _layernorm_without_variance_term(x, gamma, beta, dy):
    g = dy * gamma
    return _normalize(x)[1] * (g - g.mean(axis=-1, keepdims=True))


LAYERNORM = Exercise(
    "layernorm",
    """y = gamma * xhat + beta,  xhat = (x - mean(x)) / sqrt(var(x) + 1e-5), mean and (biased)
variance over the last axis,   x (B, T, D), gamma (D,), beta (D,).
dy (B, T, D) is dL/dy. Return (dx, dgamma, dbeta), shaped like x, gamma and beta.""",
    forward=_layernorm,
    solution=layernorm_backward,
    build=lambda rng: (rng.standard_normal((2, 3, 6)), 1.0 + 0.5 * rng.standard_normal(6),
                       rng.standard_normal(6)),          # gamma not all ones: forgetting it shows
    grads=("dx", "dgamma", "dbeta"),
    mistakes=(Mistake("dx", _layernorm_without_variance_term,
                      "a term is missing: the variance depends on x too (- xhat * mean(g * xhat))"),
              Mistake("dx", lambda x, gamma, beta, dy: _normalize(x)[1] * dy * gamma,
                      "terms are missing: the mean and the variance both depend on x"),
              Mistake("dx", lambda x, gamma, beta, dy: layernorm_backward(x, 1.0, beta, dy)[0],
                      "gamma is missing: the gradient reaching xhat is g = dy * gamma"),),
)


# ---- cross_entropy ------------------------------------------------------------------------

def _cross_entropy(logits, targets):
    """mean over the N positions of -log softmax(logits)[target]."""
    logp = np.log(softmax(logits))
    return -np.take_along_axis(logp, targets[..., None], axis=-1).mean()


def cross_entropy_backward(logits, targets, dloss):
    """Forward L = (1/N) sum_n -log p_n[t_n], p_n = softmax(logits_n). Per position,
    d(-log p[t])/dlogits = p - onehot(t); the mean divides by N; the chain rule multiplies
    by dloss:   dlogits = dloss * (p - onehot(targets)) / N."""
    p = softmax(logits)                                     # (B, T, V)
    onehot = np.eye(logits.shape[-1])[targets]              # (B, T, V)
    return dloss * (p - onehot) / targets.size


CROSS_ENTROPY = Exercise(
    "cross_entropy",
    """L = mean over the B*T positions of -log softmax(logits)[target],
logits (B, T, V) float, targets (B, T) int class ids -> L a scalar.
dloss (a 0-d array) is dL_total/dL (1 when L is the end). Return dlogits, shaped like logits.""",
    forward=_cross_entropy,
    solution=cross_entropy_backward,
    build=lambda rng: (rng.standard_normal((2, 3, 7)), rng.integers(0, 7, (2, 3))),
    grads=("dlogits",),
    mistakes=(Mistake("dlogits", lambda logits, targets, dloss:
                      cross_entropy_backward(logits, targets, dloss) * targets.size,
                      "off by a constant factor: the loss is a mean over N positions; check the 1/N"),
              Mistake("dlogits", lambda logits, targets, dloss: cross_entropy_backward(logits, targets, 1.0),
                      "the upstream gradient is missing: multiply by dloss"),
              Mistake("dlogits", lambda logits, targets, dloss: dloss * softmax(logits) / targets.size,
                      "a term is missing: subtract 1 at the target class, dlogits = (p - onehot(t)) / N"),),
    factor_hint="check the 1/N of the mean and the factor dloss",
)


# ---- embedding ----------------------------------------------------------------------------

def embedding_backward(ids, W, dy):
    """Forward y[b, t] = W[ids[b, t]]: each position adds its dy[b, t] into row ids[b, t] of dW,
    and a repeated id adds once per occurrence (np.add.at; dW[ids] += dy would keep only one)."""
    dW = np.zeros_like(W)
    np.add.at(dW, ids, dy)
    return dW


def _embedding_keeps_one_repeat(ids, W, dy):
    dW = np.zeros_like(W)
    dW[ids] += dy
    return dW


def _ids_with_repeats(rng):
    ids = rng.integers(0, 5, (3, 4))
    ids[0, :2] = ids[2, 3] = 1          # id 1 at least three times
    return ids


EMBEDDING = Exercise(
    "embedding",
    """y[b, t] = W[ids[b, t]], a lookup of rows,   ids (B, T) int, W (V, D) -> y (B, T, D).
Ids repeat. dy (B, T, D) is dL/dy. Return dW, shaped like W (ids have no gradient).""",
    forward=lambda ids, W: W[ids],
    solution=embedding_backward,
    build=lambda rng: (_ids_with_repeats(rng), rng.standard_normal((5, 6))),
    grads=("dW",),
    mistakes=(Mistake("dW", _embedding_keeps_one_repeat,
                      "a repeated id must add every one of its gradients: dW[ids] += dy keeps only one; "
                      "use np.add.at(dW, ids, dy)"),),
)

LAYER_EXERCISES = (LINEAR, RELU, GELU, SOFTMAX, LAYERNORM, CROSS_ENTROPY, EMBEDDING)
