"""Linear (fully connected) layer.

Legend: N any number of leading axes (batch, time, ...), I in_features, O out_features.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .functional import column_sum, matmul_2d
from .module import Module, check_float_input, check_upstream, require_rng


class LinearCache(NamedTuple):
    x: np.ndarray           # (..., I) the input


def xavier_uniform(rng: np.random.Generator, fan_in: int, fan_out: int, dtype) -> np.ndarray:
    """W (fan_in, fan_out) ~ U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(dtype, copy=False)


class Linear(Module):
    """y = x @ W + b, with W (in_features, out_features) and b (out_features,).

    Initialisation: Xavier/Glorot uniform, W ~ U(-a, a) with a = sqrt(6 / (in + out)),
    which keeps the variance of activations and gradients roughly constant; b = 0.

    Backward, with x flattened to (N, I) and dy to (N, O):
        dW = x^T @ dy        db = sum_n dy[n]        dx = dy @ W^T
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.add_param("weight", xavier_uniform(require_rng(rng, "Linear"), in_features, out_features, dtype))
        if bias:
            self.add_param("bias", np.zeros(out_features, dtype=dtype))

    @classmethod
    def from_arrays(cls, weight: np.ndarray, bias: np.ndarray | None = None) -> "Linear":
        """A Linear whose parameters are these very arrays (no copy, nothing drawn):
        weight (in_features, out_features), bias (out_features,) or None for no bias."""
        layer = cls.__new__(cls)
        Module.__init__(layer)
        layer.in_features, layer.out_features = weight.shape
        layer.add_param("weight", weight)
        if bias is not None:
            layer.add_param("bias", bias)
        return layer

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self.params}"

    def forward(self, x: np.ndarray) -> np.ndarray:          # x: (..., I)
        weight = self.params["weight"]
        check_float_input("Linear input x", x, weight.dtype, last_dim=weight.shape[0])
        self.cache = LinearCache(x)
        y = matmul_2d(x, weight)                                # (..., O): x @ W
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:          # dy: (..., O)
        x = self._saved().x
        weight = self.params["weight"]
        check_upstream("Linear dy", dy, x.shape[:-1] + (weight.shape[1],))
        x2 = x.reshape(-1, weight.shape[0])                     # (N, I)
        dy2 = dy.reshape(-1, weight.shape[1])                   # (N, O)
        # forward was y = x @ W + b, every leading position using the same W and b
        self.add_grad("weight", lambda: x2.T @ dy2)             # (I, O)
        if "bias" in self.params:
            self.add_grad("bias", lambda: column_sum(dy2))       # (O,)
        return (dy2 @ weight.T).reshape(x.shape)                # (..., I)
