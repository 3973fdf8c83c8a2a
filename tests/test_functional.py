"""Every fast routine of nn/functional.py equals its plain reference, edge cases included."""

import numpy as np
import pytest

from tinytransformer.nn import functional as F

DTYPES = [np.float32, np.float64]


def close(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (5, 7), (2, 3, 7), (2, 1, 3, 7), (0, 3, 7)])
def test_matmul_2d_equals_the_stacked_product(dtype, shape):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((7, 4)).astype(dtype)
    for a, b in ((x, w), (x, np.ascontiguousarray(w.T).T)):        # b as a transposed view (tied weights)
        got = F.matmul_2d(a, b)
        assert got.shape == shape[:-1] + (4,) and got.dtype == dtype
        np.testing.assert_allclose(got, F.matmul_2d_reference(a, b), **close(dtype))
    if len(shape) == 3:                                   # a non-contiguous x: a view with swapped axes
        xt = rng.standard_normal((shape[1], shape[0], 7)).astype(dtype).swapaxes(0, 1)
        np.testing.assert_allclose(F.matmul_2d(xt, w), F.matmul_2d_reference(xt, w), **close(dtype))


def test_matmul_2d_of_an_empty_inner_axis_is_zero():
    x, w = np.ones((2, 3, 0)), np.ones((0, 4))
    np.testing.assert_array_equal(F.matmul_2d(x, w), np.zeros((2, 3, 4)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 64), (4, 1), (1, 1)])
def test_row_mean_equals_the_mean(dtype, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    got = F.row_mean(x)
    assert got.shape == shape[:-1] + (1,) and got.dtype == dtype
    np.testing.assert_allclose(got, F.row_mean_reference(x), **close(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", [((5, 7), -1), ((2, 3, 17), -1), ((4, 1), -1), ((2, 3, 5), 1),
                                         ((2, 3, 5), 0), ((2, 3, 5), -2), ((7,), -1), ((0, 4), -1),
                                         ((4, 0), -1)])
def test_row_sum_equals_the_sum(dtype, shape, axis):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    got = F.row_sum(x, axis)
    want = F.row_sum_reference(x, axis)
    assert got.shape == want.shape and got.dtype == dtype
    np.testing.assert_allclose(got, want, **close(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1088, 64), (7, 3), (1, 5), (6, 1)])
def test_column_sum_equals_the_sum(dtype, shape):
    x = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    exact = F.column_sum_reference(x.astype(np.longdouble))
    # a float32 sum of 1088 terms is off by ~1e-5 whichever order it adds in (x.sum(0) too):
    # both are held to a bound of a few roundings per unit of sum(|x|)
    bound = 8 * np.finfo(dtype).eps * np.abs(x).sum(0)
    x_t = np.ascontiguousarray(x.T).T                    # a transposed view (x2.T in Linear's backward)
    for a in (x, x_t):
        got = F.column_sum(a)
        assert got.shape == shape[1:] and got.dtype == dtype
        assert np.all(np.abs(got - exact) <= bound)
        assert np.all(np.abs(F.column_sum_reference(a) - exact) <= bound)


def test_column_sum_refuses_more_than_two_axes():
    with pytest.raises(ValueError, match=r"column_sum: expected a matrix \(N, D\), got shape \(3, 3, 5\)"):
        F.column_sum(np.ones((3, 3, 5)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Tk", [1, 5, 17, 40])      # 40: rows past the transposed-copy threshold
def test_masked_softmax_in_place_equals_the_plain_formula(dtype, Tk):
    rng = np.random.default_rng(Tk)
    scores = (3 * rng.standard_normal((2, 3, 4, Tk))).astype(dtype)
    mask = rng.random((2, 1, 4, Tk)) < 0.6
    mask[0, 0, 1] = False                        # a fully masked row
    mask[1, 0, 2] = True                         # a fully open row
    for m in (mask, None, np.tri(4, Tk, dtype=bool)):
        want = F.masked_softmax_reference(scores, m)
        got = F.masked_softmax_(scores.copy(), m)
        assert got.dtype == dtype and not np.isnan(got).any()
        np.testing.assert_allclose(got, want, **close(dtype))
    got = F.masked_softmax_(scores.copy(), mask)
    np.testing.assert_array_equal(got[0, :, 1], 0.0)       # fully masked: zero weights, not NaN
    np.testing.assert_allclose(got.sum(-1)[mask.any(-1).repeat(3, axis=1)], 1.0, rtol=1e-5)


def test_masked_softmax_in_place_of_huge_scores_does_not_overflow():
    scores = np.array([[1e4, 0.0, -1e4]], dtype=np.float32)
    np.testing.assert_allclose(F.masked_softmax_(scores.copy(), None), [[1.0, 0.0, 0.0]])


def test_softmax_backward_is_the_product_with_the_jacobian():
    rng = np.random.default_rng(0)
    x, ds = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    s = F.softmax(x)
    jacobian = np.einsum("ni,ij->nij", s, np.eye(5)) - np.einsum("ni,nj->nij", s, s)
    np.testing.assert_allclose(F.softmax_backward(s, ds), np.einsum("ni,nij->nj", ds, jacobian),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Tk", [1, 7, 40])
def test_softmax_backward_in_place_equals_the_plain_formula(dtype, Tk):
    rng = np.random.default_rng(Tk)
    scores = rng.standard_normal((2, 3, 5, Tk)).astype(dtype)
    mask = np.tril(np.ones((5, Tk), dtype=bool), k=Tk - 5)        # causal; at Tk = 1 four rows are all masked
    s = F.masked_softmax_(scores, mask)                             # masked weights are 0
    ds = rng.standard_normal(s.shape).astype(dtype)
    want = F.softmax_backward(s, ds)
    given = ds.copy()
    got = F.softmax_backward_(s, given)
    assert got is given and got.dtype == dtype
    np.testing.assert_allclose(got, want, **close(dtype))
    assert not got[..., ~mask].any()                                # no gradient where A = 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, 50])
def test_scatter_add_rows_equals_add_at_with_repeats(dtype, N):
    rng = np.random.default_rng(N)
    ids = rng.integers(0, 4, N)
    ids[:1] = 3                                       # at least one id; repeats when N > 4
    rows = rng.standard_normal((N, 6)).astype(dtype)
    got = F.scatter_add_rows(ids, rows, 7)
    assert got.shape == (7, 6) and got.dtype == dtype
    np.testing.assert_allclose(got, F.scatter_add_rows_reference(ids, rows, 7), **close(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 7), (1, 1), (0, 5)])
def test_gelu_tanh_and_its_backward_equal_the_formula(dtype, shape):
    rng = np.random.default_rng(3)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    if x.size:
        x.flat[:3] = [0.0, 40.0, -40.0][:x.size]          # 0, and |x| where tanh(u) = +-1
    dy = rng.standard_normal(shape).astype(dtype)
    before = x.copy(), dy.copy()
    y, tanh_u = F.gelu_tanh(x)
    want_y, want_tanh_u = F.gelu_tanh_reference(x)
    assert y.dtype == tanh_u.dtype == dtype and y.shape == tanh_u.shape == shape
    np.testing.assert_allclose(y, want_y, **close(dtype))
    np.testing.assert_allclose(tanh_u, want_tanh_u, **close(dtype))
    dx = F.gelu_tanh_backward(x, tanh_u, dy)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, F.gelu_tanh_backward_reference(x, want_tanh_u, dy), **close(dtype))
    np.testing.assert_array_equal(x, before[0])            # the inputs are left as they were
    np.testing.assert_array_equal(dy, before[1])


def adam_like(p, g, m, v):
    """An elementwise update in place, with temporaries, as an optimizer writes it."""
    m *= 0.9
    m += 0.1 * g
    v += g * g
    p -= 0.01 * m / (np.sqrt(v) + 1e-8)


@pytest.mark.parametrize("shape, block", [((50,), 7), ((6, 9), 8), ((4, 4), 16), ((3,), 5)])
def test_in_blocks_gives_the_same_numbers_as_the_update_on_the_whole(shape, block):
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
    np.abs(arrays[3], out=arrays[3])                              # v >= 0, as a second moment
    want = [a.copy() for a in arrays]
    for _ in range(2):
        F.in_blocks(adam_like, *arrays, block=block)
        F.in_blocks_reference(adam_like, *want)
    for got, expected in zip(arrays, want):
        np.testing.assert_array_equal(got, expected)             # bit for bit, every block


def test_in_blocks_updates_a_view_that_is_not_contiguous():
    rng = np.random.default_rng(5)
    owner = rng.standard_normal((6, 9))
    arrays = [owner.T] + [np.abs(rng.standard_normal((9, 6))) for _ in range(3)]    # a transposed view
    want = [a.copy() for a in arrays]
    F.in_blocks(adam_like, *arrays, block=4)
    adam_like(*want)
    np.testing.assert_array_equal(owner.T, want[0])          # the update reached the owner


def test_in_blocks_refuses_arrays_of_different_shapes():
    with pytest.raises(ValueError, match=r"in_blocks arrays: expected one shape for all, got \[\(3,\), \(4,\)\]"):
        F.in_blocks(adam_like, np.zeros(3), np.zeros(4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (3, 1), (40, 3000), (2, 70000)])   # rows of one block,
def test_log_softmax_equals_the_formula(dtype, shape):                    # of several, longer than one
    rng = np.random.default_rng(6)
    z = (4 * rng.standard_normal(shape)).astype(dtype)
    z[0, 0] = 1e4                                    # a huge logit: exp(z) alone would overflow
    got = F.log_softmax(z)
    assert got.shape == shape and got.dtype == dtype and np.isfinite(got).all()
    np.testing.assert_allclose(got, F.log_softmax_reference(z), **close(dtype))


def test_log_softmax_refuses_anything_but_a_matrix():
    with pytest.raises(ValueError, match=r"log_softmax: expected a matrix \(N, V\), got shape \(2, 3, 4\)"):
        F.log_softmax(np.zeros((2, 3, 4)))
