"""Normalisation over the features of each position: LayerNorm (the paper's) and RMSNorm (LLaMA's).

Legend: D d_model; ``...`` any leading axes (batch, time).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .functional import column_sum, row_mean
from .module import Module, check_float_input


class LayerNormCache(NamedTuple):
    xhat: np.ndarray        # (..., D) the normalised input (x - mean) * rstd
    rstd: np.ndarray        # (..., 1) 1 / sqrt(var + eps)


class RMSNormCache(NamedTuple):
    xhat: np.ndarray        # (..., D) the normalised input x * rstd
    rstd: np.ndarray        # (..., 1) 1 / sqrt(mean(x^2) + eps)


class LayerNorm(Module):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, over the last axis (D).

    Biased variance and eps inside the square root, as in PyTorch. gamma = 1, beta = 0 at start.
    (``row_mean`` is x.mean(-1, keepdims=True) and ``column_sum`` a matrix's sum(0), computed
    faster: nn/functional.py.)
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
        centered = x - row_mean(x)                                # (..., D)
        rstd = 1.0 / np.sqrt(row_mean(centered * centered) + self.eps)    # (..., 1)
        xhat = centered * rstd                                    # (..., D)
        self.cache = LayerNormCache(xhat, rstd)
        return self.params["weight"] * xhat + self.params["bias"]

    def backward(self, dy: np.ndarray) -> np.ndarray:            # dy: (..., D)
        xhat, rstd = self._saved()
        # forward was y = gamma * xhat + beta, summed over every position
        dy2, xhat2 = dy.reshape(-1, self.d_model), xhat.reshape(-1, self.d_model)     # (N, D)
        self.add_grad("weight", lambda: column_sum(dy2 * xhat2))
        self.add_grad("bias", lambda: column_sum(dy2))
        g = dy * self.params["weight"]
        return rstd * (g - row_mean(g) - xhat * row_mean(g * xhat))


class RMSNorm(Module):
    """y = gamma * x / sqrt(mean(x^2) + eps), over the last axis (D): LayerNorm without centring.

    Only the root mean square is normalised away (no mean subtracted, no beta), as in
    Zhang & Sennrich 2019 and LLaMA. eps inside the square root, as in PyTorch's
    ``torch.nn.RMSNorm(D, eps=1e-5)``. gamma = 1 at start.
    Backward, with rstd = 1 / sqrt(mean(x^2) + eps), xhat = x * rstd and g = dy * gamma:
        dgamma = sum over positions of dy * xhat
        dx     = rstd * (g - xhat * mean(g * xhat))
    (from d rstd / dx_j = -rstd^3 x_j / D; LayerNorm's formula without its mean(g) term,
    since nothing was centred).
    """

    def __init__(self, d_model: int, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        self.d_model, self.eps = d_model, eps
        self.add_param("weight", np.ones(d_model, dtype=dtype))

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"

    def forward(self, x: np.ndarray) -> np.ndarray:              # x: (..., D)
        check_float_input("RMSNorm input x", x, self.params["weight"].dtype, last_dim=self.d_model)
        rstd = 1.0 / np.sqrt(row_mean(x * x) + self.eps)          # (..., 1)
        xhat = x * rstd                                           # (..., D)
        self.cache = RMSNormCache(xhat, rstd)
        return self.params["weight"] * xhat

    def backward(self, dy: np.ndarray) -> np.ndarray:            # dy: (..., D)
        xhat, rstd = self._saved()
        # forward was y = gamma * xhat, summed over every position
        dy2, xhat2 = dy.reshape(-1, self.d_model), xhat.reshape(-1, self.d_model)     # (N, D)
        self.add_grad("weight", lambda: column_sum(dy2 * xhat2))
        g = dy * self.params["weight"]
        # forward was xhat = x * rstd, rstd = (mean(x^2) + eps)^(-1/2)
        return rstd * (g - xhat * row_mean(g * xhat))


NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}


def make_norm(name: str, d_model: int, dtype=np.float32, eps: float = 1e-5) -> Module:
    """'layernorm' -> LayerNorm(d_model, eps), 'rmsnorm' -> RMSNorm(d_model, eps)."""
    if name not in NORMS:
        raise ValueError(f"norm: expected 'layernorm' or 'rmsnorm', got {name!r}")
    return NORMS[name](d_model, eps=eps, dtype=dtype)
