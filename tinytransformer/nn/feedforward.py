"""The position-wise feed-forward network of the Transformer."""

from __future__ import annotations

import numpy as np

from .activation import GELU, ReLU
from .dropout import Dropout
from .linear import Linear
from .module import ChildCaches, Module, default_rng


def make_activation(name: str) -> Module:
    """'relu' -> ReLU(), 'gelu' -> exact (erf) GELU, 'gelu_tanh' -> tanh-approximate GELU."""
    if name == "relu":
        return ReLU()
    if name == "gelu":
        return GELU("none")
    if name == "gelu_tanh":
        return GELU("tanh")
    raise ValueError(f"activation: expected 'relu', 'gelu' or 'gelu_tanh', got {name!r}")


class FeedForward(Module):
    """y = linear2(dropout(act(linear1(x)))), applied to every position alone.

    D -> d_ff -> D. Backward runs the chain in reverse: each child's backward
    takes the gradient of its output and returns the gradient of its input.
    """

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu", dropout: float = 0.0,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)            # one Generator for both Linears: distinct weights
        self.linear1 = Linear(d_model, d_ff, rng=rng, dtype=dtype)
        self.act = make_activation(activation)
        self.dropout = Dropout(dropout, rng=rng)
        self.linear2 = Linear(d_ff, d_model, rng=rng, dtype=dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:             # x: (..., D)
        hidden = self.dropout(self.act(self.linear1(x)))        # (..., d_ff)
        self.cache = ChildCaches()
        return self.linear2(hidden)                              # (..., D)

    def backward(self, dy: np.ndarray) -> np.ndarray:           # dy: (..., D)
        self._saved()
        dhidden = self.dropout.backward(self.linear2.backward(dy))
        return self.linear1.backward(self.act.backward(dhidden))
