"""Token embeddings and positional encodings.

Legend: B batch, T time, D d_model, V vocabulary size (number of embeddings).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .functional import scatter_add_rows
from .module import Module, check_float_input, require_rng


class EmbeddingCache(NamedTuple):
    ids: np.ndarray         # (B, T) the ids looked up


class PositionsCache(NamedTuple):
    offset: int             # the position of the first row of x


def check_ids(name: str, ids, n: int) -> None:
    """Raise a clear error unless ``ids`` is an integer array with every value in [0, n)."""
    if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu":
        got = ids.dtype.name if isinstance(ids, np.ndarray) else type(ids).__name__
        raise TypeError(f"{name}: expected an integer array of token ids, got {got}")
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = np.argwhere((ids < 0) | (ids >= n))[0]
        where = ", ".join(str(i) for i in bad)
        raise ValueError(f"token id {ids[tuple(bad)]} out of range for vocab_size {n} ({name}[{where}])")


class Embedding(Module):
    """y[b, t] = W[ids[b, t]]: a lookup of rows of W (num_embeddings, D).

    Initialisation: W ~ N(0, 1/D), so that sqrt(D) * W (the scaling the
    Transformer applies) has unit variance per feature.

    Backward: every position that looked up row i adds its upstream gradient
    into dW[i]; a token repeated in the batch adds several times (so not
    ``dW[ids] += dy``, which would keep only one of the repeats):
        dW = scatter_add_rows(ids, dy),   i.e. np.add.at(dW, ids, dy)   (nn/functional.py)
    The ids are integers: they have no gradient.
    """

    def __init__(self, num_embeddings: int, d_model: int,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = require_rng(rng, "Embedding")
        self.num_embeddings, self.d_model = num_embeddings, d_model
        self.add_param("weight", (rng.standard_normal((num_embeddings, d_model))
                                  / math.sqrt(d_model)).astype(dtype, copy=False))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.d_model}"

    def forward(self, ids: np.ndarray) -> np.ndarray:        # ids: (B, T) int
        check_ids("ids", ids, self.num_embeddings)
        self.cache = EmbeddingCache(ids)
        return self.params["weight"][ids]                     # (B, T, D)

    def backward(self, dy: np.ndarray) -> None:               # dy: (B, T, D)
        ids = self._saved().ids
        # forward was y[b, t] = W[ids[b, t]]: add each dy[b, t] into row ids[b, t]
        self.add_grad("weight", lambda: scatter_add_rows(ids.reshape(-1), dy.reshape(-1, self.d_model),
                                                         self.num_embeddings))       # (V, D)
        return None


def sinusoidal_table(max_len: int, d_model: int) -> np.ndarray:
    """PE[pos, 2i] = sin(pos / 10000^(2i/D)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/D)).   (max_len, D)"""
    position = np.arange(max_len)[:, None]                     # (max_len, 1)
    freq = 10000.0 ** (-np.arange(0, d_model, 2) / d_model)    # (ceil(D/2),)
    angle = position * freq                                    # (max_len, ceil(D/2))
    table = np.zeros((max_len, d_model))
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return table


def check_positions(name: str, x, offset: int, max_len: int, d_model: int, dtype) -> None:
    """Raise a clear error unless x (..., T, d_model) has ``dtype`` and positions offset .. offset + T - 1
    fit a table of ``max_len`` rows."""
    check_float_input(name, x, dtype, last_dim=d_model, min_ndim=2)
    T = x.shape[-2]
    if offset < 0 or offset + T > max_len:
        raise ValueError(f"{name}: positions {offset}..{offset + T - 1} do not fit max_len {max_len} "
                         f"(sequence length {T}); raise max_len in the config or shorten the input")


class SinusoidalPositionalEncoding(Module):
    """y = x + PE[offset : offset + T], the fixed sine/cosine table of the paper.

    No parameters. ``offset`` is the position of the first row of x (non-zero
    when decoding one token at a time). Backward: the table is a constant, so dx = dy.
    The table is computed in float64 and rounded once to the module's dtype; after
    ``astype`` changed that dtype it is computed again (``recompute_tables``), not widened.
    """

    def __init__(self, d_model: int, max_len: int, dtype=np.float32):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.buffers["pe"] = sinusoidal_table(max_len, d_model).astype(dtype)

    def recompute_tables(self) -> None:
        self.buffers["pe"] = sinusoidal_table(self.max_len, self.d_model).astype(self.buffers["pe"].dtype)

    def extra_repr(self) -> str:
        return f"{self.d_model}, max_len={self.max_len}"

    def forward(self, x: np.ndarray, offset: int = 0) -> np.ndarray:   # x: (B, T, D)
        pe = self.buffers["pe"]
        check_positions("positional encoding input x", x, offset, self.max_len, self.d_model, pe.dtype)
        self.cache = PositionsCache(offset)
        return x + pe[offset: offset + x.shape[-2]]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self._saved()
        return dy


class LearnedPositionalEmbedding(Module):
    """y = x + P[offset : offset + T], with a learned table P (max_len, D).

    Initialisation: P ~ N(0, 1/2), the per-feature variance of the sinusoidal table.
    Backward: dx = dy, and row offset + t of P collects dy[:, t] summed over the batch.

    The Transformer adds the same table to the source and to the target, so
    one instance runs forward twice before its two backwards. That is safe
    here because the cache holds only the offset (0 in training) and T is read
    from dy; both backwards add into the one gradient of P.
    """

    def __init__(self, max_len: int, d_model: int,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = require_rng(rng, "LearnedPositionalEmbedding")
        self.max_len, self.d_model = max_len, d_model
        self.add_param("weight", (rng.standard_normal((max_len, d_model)) / math.sqrt(2.0)).astype(dtype, copy=False))

    def extra_repr(self) -> str:
        return f"{self.max_len}, {self.d_model}"

    def forward(self, x: np.ndarray, offset: int = 0) -> np.ndarray:   # x: (B, T, D)
        weight = self.params["weight"]
        check_positions("positional embedding input x", x, offset, self.max_len, self.d_model, weight.dtype)
        self.cache = PositionsCache(offset)
        return x + weight[offset: offset + x.shape[-2]]

    def backward(self, dy: np.ndarray) -> np.ndarray:        # dy: (B, T, D)
        offset, T = self._saved().offset, dy.shape[-2]
        # forward was y[b, t] = x[b, t] + P[offset + t], the same row for every b
        self.add_grad("weight", lambda: dy.reshape(-1, T, self.d_model).sum(axis=0),
                      at=slice(offset, offset + T))
        return dy


def embed_forward(embed: Embedding, pos: Module | None, ids: np.ndarray, offset: int = 0,
                  scale: bool = True) -> np.ndarray:
    """A model's input: x = pos(embed(ids) * sqrt(D)), scaled token embeddings plus positions. (B, T, D)

    ``pos`` None: nothing is added (positions "rope", "alibi" live inside attention; "none" has none).
    ``scale`` False: x = pos(embed(ids)), unscaled (GPT-2, LLaMA).
    """
    e = embed(ids)                                             # (B, T, D)
    scaled = e * e.dtype.type(np.sqrt(embed.d_model)) if scale else e
    return scaled if pos is None else pos(scaled, offset)


def embed_backward(embed: Embedding, pos: Module | None, dx: np.ndarray, scale: bool = True) -> None:
    """The gradient of ``embed_forward`` into the embedding (and a learned position table)."""
    # forward was x = pos(e * sqrt(D)) (or pos(e) unscaled), e = embed(ids)
    dscaled = dx if pos is None else pos.backward(dx)
    embed.backward(dscaled * dx.dtype.type(np.sqrt(embed.d_model)) if scale else dscaled)
