"""Inverted dropout."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .module import Module, check_float_input, require_rng


class DropoutCache(NamedTuple):
    scaled_mask: np.ndarray | None      # m / (1 - p); None when nothing is dropped (eval, p = 0)


class Dropout(Module):
    """y = x * m / (1 - p) in training, with m_i ~ Bernoulli(1 - p); y = x in eval.

    Scaling the kept units by 1/(1-p) at training time keeps E[y] = x, so
    evaluation needs no rescaling ("inverted" dropout). A new mask is drawn
    from ``rng`` at every forward; backward applies that same mask:
        dx = dy * m / (1 - p)
    Use one Dropout per place in the network: a shared one would hand the
    second call's mask to the first call's backward. With p > 0 it needs ``rng``
    (a composite hands it its own): two Dropouts must not draw the same masks.
    """

    def __init__(self, p: float = 0.0, rng: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout p: expected a probability in [0, 1), got {p}")
        self.p = p
        # masks are drawn only when p > 0: Dropout(0.0) may go without a Generator
        self.rng = require_rng(rng, f"Dropout(p={p})") if p > 0 or rng is not None else None

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_input("Dropout input x", x)
        if not self.training or self.p == 0.0:
            self.cache = DropoutCache(None)     # nothing dropped: backward is the identity
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        scaled_mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.p)
        self.cache = DropoutCache(scaled_mask)
        return x * scaled_mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        scaled_mask = self._saved().scaled_mask
        if scaled_mask is None:
            return dy
        return dy * scaled_mask
