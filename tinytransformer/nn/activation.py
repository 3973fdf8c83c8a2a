"""Elementwise activations and the softmax.

Each keeps in its cache only what its derivative needs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import erf, expit

from .functional import gelu_tanh, gelu_tanh_backward, softmax, softmax_backward
from .module import Module, check_float_input


class ReLUCache(NamedTuple):
    positive: np.ndarray            # bool, x > 0


class GELUCache(NamedTuple):
    x: np.ndarray
    cdf: np.ndarray | None = None       # Phi(x), exact GELU
    tanh_u: np.ndarray | None = None    # tanh(u), tanh approximation


class SiLUCache(NamedTuple):
    x: np.ndarray
    sigmoid: np.ndarray             # s = sigmoid(x)


class SoftmaxCache(NamedTuple):
    s: np.ndarray                   # the output softmax(x)


class ReLU(Module):
    """y = max(x, 0).   Backward: dx = dy * [x > 0]."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_input("ReLU input x", x)
        positive = x > 0
        self.cache = ReLUCache(positive)
        return x * positive

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self._saved().positive


class GELU(Module):
    """The Gaussian Error Linear Unit, y = x * Phi(x), Phi the standard normal CDF.

    approximate="none" (exact, as PyTorch's default):
        Phi(x) = (1 + erf(x / sqrt(2))) / 2
        dy/dx  = Phi(x) + x * phi(x),          phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    approximate="tanh" (the GPT-2 formula):
        y      = x * (1 + tanh(u)) / 2,        u = sqrt(2/pi) * (x + 0.044715 x^3)
        dy/dx  = (1 + tanh(u)) / 2 + x * (1 - tanh(u)^2) / 2 * sqrt(2/pi) * (1 + 3 * 0.044715 x^2)
    """

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate: expected 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_input("GELU input x", x)
        if self.approximate == "none":
            cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)).astype(x.dtype))
            self.cache = GELUCache(x, cdf=cdf)
            return x * cdf
        y, tanh_u = gelu_tanh(x)                 # the formula above, in fewer passes (functional.py)
        self.cache = GELUCache(x, tanh_u=tanh_u)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, cdf, tanh_u = self._saved()
        if self.approximate == "none":
            pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
            return dy * (cdf + x * pdf)
        return gelu_tanh_backward(x, tanh_u, dy)


class SiLU(Module):
    """The sigmoid-weighted linear unit (also "swish"), y = x * s, s = sigmoid(x) = 1 / (1 + exp(-x)).

    The gate of the SwiGLU feed-forward (FeedForward(activation="swiglu")), as PyTorch's
    ``torch.nn.SiLU``. ``expit`` is sigmoid without overflow for large |x|.
    Backward, from ds/dx = s (1 - s):
        dy/dx = s + x * s * (1 - s) = s * (1 + x * (1 - s))
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_input("SiLU input x", x)
        sigmoid = expit(x)
        self.cache = SiLUCache(x, sigmoid)
        return x * sigmoid

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, s = self._saved()
        return dy * (s * (1.0 + x * (1.0 - s)))


class Softmax(Module):
    """s = softmax(x) along ``axis``, numerically stable.   Backward: dx = s * (ds - sum(ds * s))."""

    def __init__(self, axis: int = -1):
        super().__init__()
        self.axis = axis

    def extra_repr(self) -> str:
        return f"axis={self.axis}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_input("Softmax input x", x)
        s = softmax(x, self.axis)
        self.cache = SoftmaxCache(s)
        return s

    def backward(self, ds: np.ndarray) -> np.ndarray:
        return softmax_backward(self._saved().s, ds, self.axis)
