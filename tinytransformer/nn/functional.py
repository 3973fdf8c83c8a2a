"""The few routines where speed needed more than the plain formula, each beside its plain reference.

A layer calls ``row_mean(x)`` or ``masked_softmax_(scores, mask)`` and reads as the
math; whatever makes the routine fast is here, and only here. Each routine
computes what its ``*_reference`` twin computes (tests/test_functional.py holds
the two together on random inputs, fully masked rows and rows of length 1), and
each was kept because it measured more than ~2% of a reference training step
(batch 64, lengths 1..16, d_model 64, float32, one BLAS thread; NumPy 2.4; the times
are the fastest of 7 x 200 calls on a 2-core AMD EPYC):

    routine            calls per step            fast      reference
    matmul_2d          33 (Linear), and below    222 us    285 us    (64, 16, 64) @ (64, 192)
    row_mean           4 per LayerNorm           5 us      27 us     (N = 1088, D = 64)
    row_sum            6 softmax, 6 its backward 15 us     71 us     (64, 4, 17, 17)
    column_sum         57 (Linear, LayerNorm)    4 us      26 us     (N = 1088, D = 64)
    masked_softmax_    6                         141 us    332 us    (64, 4, 17, 17)
    softmax_backward_  6                         89 us     110 us    (64, 4, 17, 17)
    scatter_add_rows   2                         32 us     504 us    (N = 1088, V = 13)

Three more were kept for the large shapes (GPT-2 small: batch 4, 256 positions, d_model 768;
medians of 5-7 calls, the two taking turns, 2-core AMD EPYC with a load average of ~6):

    routine                  calls per step          fast         reference
    gelu_tanh (+ backward)   12 (GPT-2 small)        27 ms        334 ms      (4, 256, 3072)
    in_blocks                1 per parameter         155-235 ms   440-1040 ms AdamW, (768, 50257)
    log_softmax              1 (the loss)            170 ms       256 ms      (1024, 50257)

The tanh GELU's formula, written as one line, makes eight temporary arrays and raises
x to the power 3 (NumPy's float32 power: slower than x * x * x by orders of magnitude, as
measured); the fast one writes every step into two arrays it owns. An optimizer's formula over
a large parameter makes as many temporaries of the parameter's size, each fresh memory the
operating system hands out page by page, and passes over memory once per operation; applied
to blocks of 64K numbers, its temporaries stay in the cache and are reused. The loss's
log-softmax needs exp(z - max) only for its row sums: a few rows at a time, it lives in a
small reused buffer, and the (N, V) logits make one new array instead of three.

The attention's softmax backward is the same story at long sequences: written over the
gradient it is given, with the row sums of ds * s read by einsum instead of written out, it
makes no array of the scores' size where the formula makes three; 8.6 ms against 19.2 ms at
(32, 4, 256, 256), half the reference model's batch at length 256 (fastest of 7 x 7 calls).

NumPy's reductions over a short last axis loop once per row; a matrix product
with a column of ones (or of 1/D) does the same sums in one BLAS call. Sums down
the first axis (over positions, for parameter gradients) are a row of ones times
the matrix, for the same reason. And NumPy runs a stacked product (B, T, I) @ (I, O)
as one product per leading index; on the (B*T, I) view it is a single one (on an
Intel Xeon the two took the same time; it is kept for the machines where it helps).

Legend: N rows, D row length, V rows of the table being scattered into.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import scipy.sparse


def matmul_2d(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w, every leading index at once: one product on the (N, I) view.   (..., I) @ (I, O) -> (..., O)

    For float arrays whose shapes the caller has checked (Linear does).
    """
    n = math.prod(x.shape[:-1])                                              # N = B * T * ...
    return (x.reshape(n, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[1])


def matmul_2d_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x @ w


def row_mean(x: np.ndarray) -> np.ndarray:
    """x.mean(-1, keepdims=True), as the product x @ (1/D, ..., 1/D)^T.       (..., D) -> (..., 1)"""
    return matmul_2d(x, np.full((x.shape[-1], 1), 1.0 / x.shape[-1], dtype=x.dtype))


def row_mean_reference(x: np.ndarray) -> np.ndarray:
    return x.mean(-1, keepdims=True)


def row_sum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x.sum(axis, keepdims=True) of a float array, as the product with a column of ones along ``axis``."""
    moved = np.moveaxis(x, axis, -1)                                         # (..., n)
    return np.moveaxis(matmul_2d(moved, np.ones((moved.shape[-1], 1), dtype=x.dtype)), -1, axis)


def row_sum_reference(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.sum(axis, keepdims=True)


def column_sum(x: np.ndarray) -> np.ndarray:
    """x.sum(0) of a float matrix, as the product (1, ..., 1) @ x.                 (N, D) -> (D,)"""
    if x.ndim != 2:          # on more axes the product would sum another axis than the first
        raise ValueError(f"column_sum: expected a matrix (N, D), got shape {x.shape}")
    return np.ones(x.shape[0], dtype=x.dtype) @ x


def column_sum_reference(x: np.ndarray) -> np.ndarray:
    return x.sum(0)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)   # a Python float: float32 arrays stay float32
_GELU_A = 0.044715


def gelu_tanh(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = x (1 + tanh(u)) / 2 with u = sqrt(2/pi) (x + 0.044715 x^3); returns (y, tanh(u)).

    u is computed as sqrt(2/pi) * x * (1 + 0.044715 x^2), each step written into the array
    made for it (two arrays in all).
    """
    tanh_u = x * x                                   # x^2
    tanh_u *= _GELU_A
    tanh_u += 1.0
    tanh_u *= x                                      # x + a x^3
    tanh_u *= _SQRT_2_OVER_PI                        # u
    np.tanh(tanh_u, out=tanh_u)
    y = tanh_u + 1.0
    y *= x
    y *= 0.5
    return y, tanh_u


def gelu_tanh_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tanh_u = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_A * x ** 3))
    return 0.5 * x * (1.0 + tanh_u), tanh_u


def gelu_tanh_backward(x: np.ndarray, tanh_u: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dx = dy * ((1 + tanh(u)) / 2 + x (1 - tanh(u)^2) / 2 * du/dx), du/dx = sqrt(2/pi) (1 + 3a x^2).

    Two arrays made here; ``x``, ``tanh_u`` and ``dy`` are left as they were.
    """
    du_dx = x * x
    du_dx *= 3 * _GELU_A
    du_dx += 1.0
    du_dx *= _SQRT_2_OVER_PI
    dx = tanh_u * tanh_u
    np.subtract(1.0, dx, out=dx)                     # 1 - tanh(u)^2
    dx *= x
    dx *= du_dx                                      # x (1 - tanh(u)^2) du/dx
    dx += tanh_u
    dx += 1.0
    dx *= 0.5
    dx *= dy
    return dx


def gelu_tanh_backward_reference(x: np.ndarray, tanh_u: np.ndarray, dy: np.ndarray) -> np.ndarray:
    du_dx = _SQRT_2_OVER_PI * (1.0 + 3 * _GELU_A * x * x)
    return dy * (0.5 * (1.0 + tanh_u) + 0.5 * x * (1.0 - tanh_u ** 2) * du_dx)


BLOCK = 1 << 16             # numbers per block of in_blocks: 256 KB of float32, within a core's cache


def in_blocks(update: Callable[..., None], *arrays: np.ndarray, block: int = BLOCK) -> None:
    """``update(*arrays)``, an elementwise update in place, run on consecutive blocks of ``block``
    numbers of the flattened arrays (all of one shape), so that its temporaries are small.

    Arrays that are not all C-contiguous (a view into a tied weight) are updated whole: their
    flattening would be a copy, and the update would be lost.
    """
    shapes = [a.shape for a in arrays]
    if len(set(shapes)) != 1:
        raise ValueError(f"in_blocks arrays: expected one shape for all, got {shapes}")
    if arrays[0].size <= block or not all(a.flags.c_contiguous for a in arrays):
        update(*arrays)
        return
    flat = [a.reshape(-1) for a in arrays]                                   # views, no copy
    for start in range(0, flat[0].size, block):
        update(*(a[start:start + block] for a in flat))


def in_blocks_reference(update: Callable[..., None], *arrays: np.ndarray) -> None:
    update(*arrays)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax(z) = (z - max) - log(sum(exp(z - max))) over each row of a matrix.     (N, V) -> (N, V)

    A few rows at a time (about ``BLOCK`` numbers), so that exp(z - max), needed only for
    its sum, lives in a small reused buffer and each row is read from memory once.
    """
    if z.ndim != 2:
        raise ValueError(f"log_softmax: expected a matrix (N, V), got shape {z.shape}")
    logp = np.empty_like(z)
    rows = max(1, BLOCK // max(1, z.shape[1]))
    scratch = np.empty((min(rows, z.shape[0]), z.shape[1]), dtype=z.dtype)
    for start in range(0, z.shape[0], rows):
        block = logp[start:start + rows]                                      # (rows, V)
        np.subtract(z[start:start + rows], z[start:start + rows].max(1, keepdims=True), out=block)
        exp = np.exp(block, out=scratch[:len(block)])
        block -= np.log(exp.sum(1, keepdims=True))
    return logp


def log_softmax_reference(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)): subtracting the max keeps exp from overflowing."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(s: np.ndarray, ds: np.ndarray, axis: int = -1) -> np.ndarray:
    """dx for s = softmax(x): dx = s * (ds - sum(ds * s)).

    From ds_i/dx_j = s_i (delta_ij - s_j): dx_j = sum_i ds_i s_i (delta_ij - s_j)
    = s_j (ds_j - sum_i ds_i s_i). No Jacobian matrix is built. Where s = 0 (a
    masked key) the gradient is 0. The one softmax backward of the package.
    """
    return s * (ds - row_sum(ds * s, axis))


def softmax_backward_(s: np.ndarray, ds: np.ndarray) -> np.ndarray:
    """softmax_backward(s, ds) over the last axis, written over ``ds`` (the caller's fresh array)
    and returned: ds <- (ds - sum(ds * s)) * s.

    The row sums of ds * s come from einsum, which reads the two arrays without writing their
    product out; at the attention's (B, H, Tq, Tk) a fresh array costs more than the
    arithmetic on it. Its reference is ``softmax_backward``, which leaves ``ds`` as it was.
    """
    row_dot = np.einsum("...i,...i->...", ds, s)[..., None]                    # (..., 1)
    ds -= row_dot
    ds *= s
    return ds


def masked_softmax_(scores: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """softmax(where(mask, scores, -inf)) over the last axis; a row with no allowed entry is all 0.

    ``mask`` is boolean, True = allowed, broadcastable to ``scores``; None allows all.
    In place, as the trailing underscore says: the weights are written over ``scores`` (the
    caller's fresh array) and returned, instead of allocating new arrays. One of the two
    routines here that change an argument (with ``softmax_backward_``); its reference leaves
    ``scores`` as it was.
    """
    if mask is not None:           # -inf as an added bias: faster than np.where with a broadcast mask
        scores += np.where(mask, scores.dtype.type(0), scores.dtype.type(-np.inf))
    n = scores.shape[-1]
    # the row maxima down the first axis of a transposed copy: one pass instead of a loop per
    # row; for rows longer than 32 the copy costs more than it saves
    row_max = (scores.max(-1, keepdims=True) if n > 32 else
               np.ascontiguousarray(scores.reshape(-1, n).T).max(0).reshape(*scores.shape[:-1], 1))
    row_max[row_max == -np.inf] = 0.0             # a fully masked row: exp(-inf - 0) = 0
    weights = np.exp(np.subtract(scores, row_max, out=scores), out=scores)
    total = row_sum(weights)                                                # (..., 1)
    total[total == 0.0] = 1.0                     # a fully masked row: 0 / 1 = 0
    return np.divide(weights, total, out=weights)


def masked_softmax_reference(scores: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    z = scores if mask is None else np.where(mask, scores, -np.inf)
    row_max = z.max(-1, keepdims=True)
    e = np.exp(z - np.where(row_max == -np.inf, 0.0, row_max))
    total = e.sum(-1, keepdims=True)
    return e / np.where(total == 0.0, 1.0, total)


def scatter_add_rows(ids: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """out (n, D) with out[i] = sum of rows[k] over every k with ids[k] = i.     ids (N,), rows (N, D)

    As a product: out = onehot(ids)^T @ rows, with onehot^T a sparse (n, N) matrix
    holding one 1 per column, so a repeated id adds every one of its rows.
    """
    onehot_t = scipy.sparse.coo_array((np.ones(len(ids), dtype=rows.dtype), (ids, np.arange(len(ids)))),
                                      shape=(n, len(ids)))
    return onehot_t @ rows


def scatter_add_rows_reference(ids: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, rows.shape[-1]), dtype=rows.dtype)
    np.add.at(out, ids, rows)
    return out
