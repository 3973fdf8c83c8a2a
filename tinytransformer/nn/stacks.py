"""The encoder and decoder stacks: N layers, and a final norm when pre-LN.

Legend: B batch, S source length, T target length, D d_model.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .layers import DecoderLayer, EncoderLayer
from .module import ChildCaches, Module, default_rng
from .normalization import make_norm


class DecoderCache(NamedTuple):
    memory_shape: tuple     # (B, S, D): dmemory is summed over the layers into an array of it


class Encoder(Module):
    """A stack of EncoderLayers; pre-LN stacks end with a norm (``norm``).

    Arguments as EncoderLayer's (``norm_eps``, ``positional``, ``max_len``, ``rope_base``,
    ``n_kv_heads``, ``bias`` by keyword).
    """

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu",
                 rng: np.random.Generator | None = None, dtype=np.float32, norm: str = "layernorm",
                 norm_eps: float = 1e-5, **options):
        super().__init__()
        rng = default_rng(rng)
        self.layers = [EncoderLayer(d_model, n_heads, d_ff, dropout, norm_first, activation, rng, dtype,
                                    norm, norm_eps=norm_eps, **options) for _ in range(n_layers)]
        if norm_first:
            self.norm = make_norm(norm, d_model, dtype, norm_eps)

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        for layer in self.layers:
            x = layer(x, mask)
        self.cache = ChildCaches()
        return self.norm(x) if hasattr(self, "norm") else x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self._saved()
        if hasattr(self, "norm"):
            dout = self.norm.backward(dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout


class Decoder(Module):
    """A stack of DecoderLayers; pre-LN stacks end with a norm (``norm``); arguments as DecoderLayer's.

    Every layer attends to the same memory, so dmemory is the sum over layers.
    """

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu",
                 rng: np.random.Generator | None = None, dtype=np.float32, norm: str = "layernorm",
                 norm_eps: float = 1e-5, **options):
        super().__init__()
        rng = default_rng(rng)
        self.layers = [DecoderLayer(d_model, n_heads, d_ff, dropout, norm_first, activation, rng, dtype,
                                    norm, norm_eps=norm_eps, **options) for _ in range(n_layers)]
        if norm_first:
            self.norm = make_norm(norm, d_model, dtype, norm_eps)

    def forward(self, y: np.ndarray, memory: np.ndarray, self_mask: np.ndarray | None = None,
                memory_mask: np.ndarray | None = None) -> np.ndarray:
        for layer in self.layers:
            y = layer(y, memory, self_mask, memory_mask)
        self.cache = DecoderCache(memory.shape)
        return self.norm(y) if hasattr(self, "norm") else y

    def backward(self, dout: np.ndarray):
        memory_shape = self._saved().memory_shape
        if hasattr(self, "norm"):
            dout = self.norm.backward(dout)
        dmemory = np.zeros(memory_shape, dtype=dout.dtype)
        for layer in reversed(self.layers):
            dout, dmem = layer.backward(dout)
            dmemory += dmem
        return dout, dmemory
