"""Layer normalisation."""

from __future__ import annotations

import numpy as np

from .module import Module, check_float_input


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
        mean = x.mean(-1, keepdims=True)                          # (..., 1)
        centered = x - mean
        rstd = 1.0 / np.sqrt((centered * centered).mean(-1, keepdims=True) + self.eps)
        xhat = centered * rstd                                    # (..., D)
        self.cache = (xhat, rstd)
        return self.params["weight"] * xhat + self.params["bias"]

    def backward(self, dy: np.ndarray) -> np.ndarray:            # dy: (..., D)
        xhat, rstd = self._saved()
        # forward was y = gamma * xhat + beta, summed over every leading axis
        self.grads["weight"] += (dy * xhat).reshape(-1, self.d_model).sum(0)
        self.grads["bias"] += dy.reshape(-1, self.d_model).sum(0)
        g = dy * self.params["weight"]
        return rstd * (g - g.mean(-1, keepdims=True)
                       - xhat * (g * xhat).mean(-1, keepdims=True))
