"""ALiBi (Press et al. 2022, "Train Short, Test Long"): attention with linear biases instead of positions.

Legend: B batch, H heads, Tq query positions, Tk key positions.

Nothing is added to the token embeddings. Every self-attention head h adds a
penalty proportional to the distance between query and key to the scaled scores,
with a slope of its own, m_h = 2 ** (-8 (h+1) / H): for 4 heads 1/4, 1/16, 1/64,
1/256. A steep head looks at its neighbours; a shallow one can see far back.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .module import Module, check_float_input, check_upstream


class ALiBiCache(NamedTuple):
    shape: tuple            # (B, H, Tq, Tk) of the scores


def alibi_slopes(n_heads: int) -> np.ndarray:
    """m_h = 2 ** (-8 (h+1) / H), h = 0 .. H-1, for a head count H that is a power of two.   (H,)

    The paper defines these slopes for powers of two only (its code interpolates the others
    with a second geometric sequence); this package refuses the others rather than guess.
    """
    if isinstance(n_heads, bool) or not isinstance(n_heads, (int, np.integer)) or n_heads < 1 \
            or n_heads & (n_heads - 1):
        raise ValueError(f"ALiBi: n_heads must be a power of two (1, 2, 4, 8, ...: the slopes "
                         f"2 ** (-8 (h+1) / n_heads) are defined for those), got n_heads={n_heads!r}")
    return 2.0 ** (-8.0 * np.arange(1, n_heads + 1) / n_heads)


class ALiBiBias(Module):
    """scores + bias, with bias[h, i, j] = -m_h * |i - j| for query position i and key position j.

    The queries are the last Tq of the Tk positions: i = (Tk - Tq) + row. That holds in
    a full forward (Tq = Tk) and in a decoding step (the Tq new queries follow the Tk - Tq
    cached keys), so the bias uses absolute positions with no offset to pass around.
    Under a causal mask every allowed key has j <= i, so the bias there is -m_h (i - j),
    the paper's; the encoder's bidirectional attention gets -m_h |i - j| both ways.
    Masked entries are set to -inf afterwards, whatever their bias.

    Backward: the bias is a constant (no parameter, nothing learned), so dscores = dout.
    """

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = int(n_heads)
        self.slopes = alibi_slopes(n_heads)          # (H,) float64, cast to the scores' dtype

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}"

    def bias(self, Tq: int, Tk: int, dtype=np.float64) -> np.ndarray:
        """-m_h * |i - j| (H, Tq, Tk), queries at positions Tk - Tq .. Tk - 1, keys at 0 .. Tk - 1."""
        distance = np.abs(np.arange(Tk - Tq, Tk)[:, None] - np.arange(Tk))           # (Tq, Tk)
        return (-self.slopes[:, None, None] * distance).astype(dtype)               # (H, Tq, Tk)

    def forward(self, scores: np.ndarray) -> np.ndarray:         # scores: (B, H, Tq, Tk)
        check_float_input("ALiBi scores", scores, min_ndim=4)
        if scores.shape[1] != self.n_heads or scores.shape[-2] > scores.shape[-1]:
            raise ValueError(f"ALiBi scores: expected (B, {self.n_heads}, Tq, Tk) with Tq <= Tk "
                             f"(queries are the last Tq positions), got shape {scores.shape}")
        self.cache = ALiBiCache(scores.shape)
        return scores + self.bias(*scores.shape[-2:], dtype=scores.dtype)

    def backward(self, dout: np.ndarray) -> np.ndarray:          # dout: (B, H, Tq, Tk)
        check_upstream("ALiBi dout", dout, self._saved().shape)
        # forward was scores + bias, the bias a constant
        return dout
