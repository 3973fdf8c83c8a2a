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
    scatter_add_rows   2                         32 us     504 us    (N = 1088, V = 13)

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


def masked_softmax_(scores: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """softmax(where(mask, scores, -inf)) over the last axis; a row with no allowed entry is all 0.

    ``mask`` is boolean, True = allowed, broadcastable to ``scores``; None allows all.
    In place, as the trailing underscore says: the weights are written over ``scores`` (the
    caller's fresh array) and returned, instead of allocating new arrays. The only routine
    here that changes an argument; its reference leaves ``scores`` as it was.
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
