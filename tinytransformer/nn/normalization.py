"""Layer normalisation."""

from __future__ import annotations

import numpy as np

from .module import Module, check_float_input
from .overlap import defer


class LayerNorm(Module):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, over the last axis (D).

    Biased variance and eps inside the square root, as in PyTorch. gamma = 1, beta = 0 at start.
    Backward, with xhat = (x - mean) * rstd and g = dy * gamma:
        dgamma = sum over positions of dy * xhat        dbeta = sum over positions of dy
        dx     = rstd * (g - mean(g) - xhat * mean(g * xhat))
    (the two means remove the parts of g that the mean and the variance normalised away).
    """

    def __init__(self, d_model: int, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        self.d_model, self.eps = d_model, eps
        self.add_param("weight", np.ones(d_model, dtype=dtype))
        self.add_param("bias", np.zeros(d_model, dtype=dtype))

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"

    def forward(self, x: np.ndarray) -> np.ndarray:              # x: (..., D)
        check_float_input("LayerNorm input x", x, self.params["weight"].dtype, last_dim=self.d_model)
        x2 = x.reshape(-1, self.d_model)                          # (N, D), N positions
        centered = x2 - row_mean(x2)
        rstd = 1.0 / np.sqrt(row_mean(centered * centered) + self.eps)    # (N, 1)
        xhat = centered * rstd                                    # (N, D)
        # cached shaped like x: xhat (..., D), rstd (..., 1)
        self.cache = (xhat.reshape(x.shape), rstd.reshape(*x.shape[:-1], 1))
        y = xhat * self.params["weight"] + self.params["bias"]
        return y.reshape(x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:            # dy: (..., D)
        xhat, rstd = self._saved()
        xhat, rstd = xhat.reshape(-1, self.d_model), rstd.reshape(-1, 1)   # (N, D), (N, 1)
        dy2 = dy.reshape(-1, self.d_model)                        # (N, D)
        # forward was y = gamma * xhat + beta, summed over every position
        # (deferred: see nn/overlap.py)
        def add_param_grads():
            self.grads["weight"] += (dy2 * xhat).sum(0)
            self.grads["bias"] += dy2.sum(0)
        defer(add_param_grads)
        g = dy2 * self.params["weight"]
        dx = g - row_mean(g) - xhat * row_mean(g * xhat)
        dx *= rstd
        return dx.reshape(dy.shape)


def row_mean(a: np.ndarray) -> np.ndarray:
    """a.mean(-1, keepdims=True) of a 2-D array (N, D), as the matrix product a @ (1/D, ..., 1/D)^T.

    The same means, but NumPy's own reduction over a short last axis loops once
    per row: for N = 1088, D = 64 the product is ~5x faster (measured).
    """
    return a @ np.full((a.shape[-1], 1), 1.0 / a.shape[-1], dtype=a.dtype)
