"""The position-wise feed-forward network of the Transformer, plain or gated (SwiGLU).

Legend: D d_model, F d_ff; ``...`` any leading axes (batch, time).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .activation import GELU, ReLU, SiLU
from .dropout import Dropout
from .linear import Linear
from .module import ChildCaches, Module, default_rng

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "swiglu")


class SwiGLUCache(NamedTuple):
    gate: np.ndarray        # (..., F) silu(linear1(x))
    up: np.ndarray          # (..., F) linear3(x)


def make_activation(name: str) -> Module:
    """'relu' -> ReLU(), 'gelu' -> exact (erf) GELU, 'gelu_tanh' -> tanh-approximate GELU,
    'swiglu' -> SiLU(), the gate's nonlinearity (FeedForward multiplies it by a third projection)."""
    if name == "relu":
        return ReLU()
    if name == "gelu":
        return GELU("none")
    if name == "gelu_tanh":
        return GELU("tanh")
    if name == "swiglu":
        return SiLU()
    raise ValueError(f"activation: expected one of {', '.join(map(repr, ACTIVATIONS))}, got {name!r}")


class FeedForward(Module):
    """Applied to every position alone, D -> F -> D:

        plain  (relu, gelu, gelu_tanh):  y = linear2(dropout(act(linear1(x))))
        gated  (swiglu):                 y = linear2(dropout(silu(linear1(x)) * linear3(x)))

    SwiGLU (Shazeer 2020, as in LLaMA): linear1 (D -> F) is the gate, linear3 (D -> F) the
    "up" projection, linear2 (F -> D) brings the product back; F used as given (LLaMA shrinks
    it to 2/3 to keep the parameter count; here it is yours to set).
    ``bias=False`` drops the bias of every Linear (LLaMA has none).
    Backward runs the chain in reverse; for the product h = gate * up:
        dgate = dh * up            dup = dh * gate
        dx    = linear1.backward(silu.backward(dgate)) + linear3.backward(dup)
    (x feeds both projections, so both gradients add into dx).
    """

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu", dropout: float = 0.0,
                 rng: np.random.Generator | None = None, dtype=np.float32, bias: bool = True):
        super().__init__()
        rng = default_rng(rng)            # one Generator for every Linear: distinct weights
        self.gated = activation == "swiglu"
        self.linear1 = Linear(d_model, d_ff, bias, rng=rng, dtype=dtype)
        self.act = make_activation(activation)
        self.dropout = Dropout(dropout, rng=rng)
        self.linear2 = Linear(d_ff, d_model, bias, rng=rng, dtype=dtype)
        if self.gated:                    # drawn after linear2: the plain network's weights do not move
            self.linear3 = Linear(d_model, d_ff, bias, rng=rng, dtype=dtype)

    def extra_repr(self) -> str:
        return "gated (SwiGLU)" if self.gated else ""

    def forward(self, x: np.ndarray) -> np.ndarray:             # x: (..., D)
        if self.gated:
            gate = self.act(self.linear1(x))                    # (..., F)
            up = self.linear3(x)                                # (..., F)
            self.cache = SwiGLUCache(gate, up)
            hidden = self.dropout(gate * up)                    # (..., F)
        else:
            hidden = self.dropout(self.act(self.linear1(x)))    # (..., F)
            self.cache = ChildCaches()
        return self.linear2(hidden)                             # (..., D)

    def backward(self, dy: np.ndarray) -> np.ndarray:           # dy: (..., D)
        cache = self._saved()
        dhidden = self.dropout.backward(self.linear2.backward(dy))      # (..., F)
        if not self.gated:
            return self.linear1.backward(self.act.backward(dhidden))
        gate, up = cache
        # forward was hidden = gate * up, gate = silu(linear1(x)), up = linear3(x)
        dx = self.linear1.backward(self.act.backward(dhidden * up))
        return dx + self.linear3.backward(dhidden * gate)
