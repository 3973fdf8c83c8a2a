"""Attention: gradient checks under every kind of mask, the forward against a loop-by-loop
reference, the properties masks promise, the mask helpers and clear errors.

Legend: B batch, H heads, Tq query positions, Tk key positions, dk size per head, D = H * dk.
"""

import doctest
import math

import numpy as np
import pytest

import tinytransformer.nn.masks as masks_module
from tinytransformer.nn import (MultiHeadAttention, ScaledDotProductAttention, causal_mask,
                                causal_padding_mask, padding_mask)

B, H, DK = 3, 2, 3
D = H * DK
TQ, TK = 4, 6
f64 = np.float64


def make_mha(rng, dropout=0.0, n_heads=H, d_model=D):
    """A float64 MultiHeadAttention with random biases too (zero biases would hide their gradient)."""
    mha = MultiHeadAttention(d_model, n_heads, dropout=dropout, rng=rng, dtype=f64)
    for _, p, _ in mha.named_parameters():
        p[...] = rng.standard_normal(p.shape) / math.sqrt(d_model)
    return mha


def lengths_mask(lengths, T):
    """(B, 1, 1, T) key mask: True for the first lengths[b] positions of sequence b."""
    return (np.arange(T)[None, :] < np.array(lengths)[:, None])[:, None, None, :]


# ---- gradient checks ------------------------------------------------------------------------

MASKS = {
    "no_mask": None,
    "causal": causal_mask(TK),
    "padding_one_short": lengths_mask([6, 1, 4], TK),
    "causal_and_padding": causal_mask(TK) & lengths_mask([6, 2, 5], TK),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_self_attention_gradcheck(name, rng, assert_gradcheck):
    x = rng.standard_normal((B, TK, D))
    assert_gradcheck(make_mha(rng), x, None, MASKS[name])


def test_self_attention_gradcheck_with_a_fully_masked_query_row(rng, assert_gradcheck):
    mask = np.ones((B, 1, TK, TK), dtype=bool)
    mask[1, 0, 2, :] = False                                    # query 2 of sequence 1 sees nothing
    assert_gradcheck(make_mha(rng), rng.standard_normal((B, TK, D)), None, mask)


def test_cross_attention_gradcheck_returns_dx_and_dcontext(rng, assert_gradcheck):
    x, context = rng.standard_normal((B, TQ, D)), rng.standard_normal((B, TK, D))
    mha = make_mha(rng)
    result = assert_gradcheck(mha, x, context, lengths_mask([6, 2, 5], TK))
    assert [c.name for c in result.checks][:2] == ["input 0", "input 1"]
    dx, dcontext = mha.backward(rng.standard_normal((B, TQ, D)))
    assert dx.shape == (B, TQ, D) and dcontext.shape == (B, TK, D)


def test_attention_dropout_gradcheck_under_a_fixed_seed(rng, assert_gradcheck):
    mha = make_mha(np.random.default_rng(11), dropout=0.2)
    x = rng.standard_normal((B, TK, D))
    mha(x, mask=causal_mask(TK))
    assert (mha.attention.dropout.cache[0] == 0).any()         # some weights really dropped
    assert_gradcheck(mha, x, None, causal_mask(TK))


@pytest.mark.parametrize("name", ["no_mask", "causal_and_padding"])
def test_scaled_dot_product_attention_gradcheck(name, rng, assert_gradcheck):
    q = rng.standard_normal((B, H, TK, DK))
    k = rng.standard_normal((B, H, TK, DK))
    v = rng.standard_normal((B, H, TK, DK + 1))                 # dv != dk
    assert_gradcheck(ScaledDotProductAttention(), q, k, v, MASKS[name])


# ---- a fully masked query row --------------------------------------------------------------

def test_fully_masked_query_row_gives_zero_output_and_zero_gradient(rng):
    q, k, v = (rng.standard_normal((B, H, n, DK)) for n in (TQ, TK, TK))
    mask = np.ones((B, 1, TQ, TK), dtype=bool)
    mask[0, 0, 1, :] = False
    sdpa = ScaledDotProductAttention()
    with np.errstate(divide="raise", invalid="raise", over="raise"):   # no 0/0, no inf - inf
        out = sdpa(q, k, v, mask)
        dq, dk, dv = sdpa.backward(rng.standard_normal(out.shape))
    assert not out[0, :, 1].any() and not sdpa.attn[0, :, 1].any()
    assert not dq[0, :, 1].any()
    assert all(np.isfinite(a).all() for a in (out, dq, dk, dv))


def test_every_row_fully_masked_is_still_finite(rng):
    q, k, v = (rng.standard_normal((B, H, n, DK)) for n in (TQ, TK, TK))
    sdpa = ScaledDotProductAttention()
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        out = sdpa(q, k, v, np.zeros((1, 1, 1, TK), dtype=bool))
        grads = sdpa.backward(rng.standard_normal(out.shape))
    assert not out.any()
    assert all(not g.any() for g in grads)


# ---- forward against a straightforward reference ---------------------------------------------

def reference_attention(q, k, v, mask):
    """Loops over batch, head and query; returns (out, weights). No key allowed -> zero row."""
    Bn, Hn, Tq, dk = q.shape
    Tk, dv = v.shape[2], v.shape[3]
    out, weights = np.zeros((Bn, Hn, Tq, dv)), np.zeros((Bn, Hn, Tq, Tk))
    for b in range(Bn):
        for h in range(Hn):
            for i in range(Tq):
                allowed = [j for j in range(Tk) if mask is None or mask[b, 0, i, j]]
                if not allowed:
                    continue
                scores = {j: sum(q[b, h, i, c] * k[b, h, j, c] for c in range(dk)) / math.sqrt(dk)
                          for j in allowed}
                top = max(scores.values())
                total = sum(math.exp(s - top) for s in scores.values())
                for j in allowed:
                    weights[b, h, i, j] = math.exp(scores[j] - top) / total
                    out[b, h, i] += weights[b, h, i, j] * v[b, h, j]
    return out, weights


def reference_mha(mha, x, context, mask):
    """Project per batch element, cut head h as columns h*dk:(h+1)*dk, attend, concatenate, project."""
    p = {name: w for name, w, _ in mha.named_parameters()}
    source = x if context is None else context
    dk = mha.d_model // mha.n_heads
    out = np.zeros(x.shape)
    for b in range(x.shape[0]):
        Q = x[b] @ p["w_q.weight"] + p["w_q.bias"]
        K = source[b] @ p["w_k.weight"] + p["w_k.bias"]
        Vv = source[b] @ p["w_v.weight"] + p["w_v.bias"]
        heads = []
        for h in range(mha.n_heads):
            cols = slice(h * dk, (h + 1) * dk)
            m = None if mask is None else mask[b:b + 1]
            head, _ = reference_attention(Q[None, None, :, cols], K[None, None, :, cols],
                                          Vv[None, None, :, cols], m)
            heads.append(head[0, 0])
        out[b] = np.concatenate(heads, axis=-1) @ p["w_o.weight"] + p["w_o.bias"]
    return out


def random_mask(rng, Bn, Tq, Tk):
    """(B, 1, Tq, Tk), about 30% masked, which leaves some rows fully masked now and then."""
    return rng.random((Bn, 1, Tq, Tk)) > 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scaled_dot_product_attention_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    # six different sizes, so no axis can stand in for another
    Bn, Hn, Tq, Tk, dk, dv = (int(n) for n in rng.choice(np.arange(2, 9), size=6, replace=False))
    q, k, v = (rng.standard_normal(s) for s in ((Bn, Hn, Tq, dk), (Bn, Hn, Tk, dk), (Bn, Hn, Tk, dv)))
    mask = random_mask(rng, Bn, Tq, Tk)
    mask[0, 0, 0] = False
    sdpa = ScaledDotProductAttention()
    out = sdpa(q, k, v, mask)
    expected_out, expected_weights = reference_attention(q, k, v, mask)
    np.testing.assert_allclose(out, expected_out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sdpa.attn, expected_weights, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_multi_head_attention_matches_loop_reference(seed, cross):
    rng = np.random.default_rng(seed)
    Bn, Hn, dk, Tq, Tk = (int(n) for n in rng.choice(np.arange(2, 8), size=5, replace=False))
    Tk = Tk if cross else Tq
    mha = make_mha(rng, n_heads=Hn, d_model=Hn * dk)
    x = rng.standard_normal((Bn, Tq, Hn * dk))
    context = rng.standard_normal((Bn, Tk, Hn * dk)) if cross else None
    mask = random_mask(rng, Bn, Tq, Tk)
    np.testing.assert_allclose(mha(x, context, mask), reference_mha(mha, x, context, mask),
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(mha(x, context), reference_mha(mha, x, context, None),
                               rtol=1e-12, atol=1e-13)


def test_attention_weights_are_kept_on_sdpa_and_mha_with_shape_b_h_tq_tk(rng):
    mha = make_mha(rng)
    mha(rng.standard_normal((B, TQ, D)), rng.standard_normal((B, TK, D)))
    assert mha.attn.shape == mha.attention.attn.shape == (B, H, TQ, TK)
    np.testing.assert_array_equal(mha.attn, mha.attention.attn)


def test_editing_the_exposed_map_in_place_changes_no_gradient(rng):
    # a learner normalising a map for a plot must not reach the array backward reads
    x, dout = rng.standard_normal((B, TQ, D)), rng.standard_normal((B, TQ, D))
    grads = []
    for edit in (False, True):
        mha = make_mha(np.random.default_rng(0))
        mha(x)
        if edit:
            shown = mha.attn
            shown /= shown.max()
            mha.attention.attn[...] = 0.0
        dx = mha.backward(dout)
        grads.append((dx, mha.w_q.grads["weight"].copy()))
    np.testing.assert_array_equal(grads[0][0], grads[1][0])
    np.testing.assert_array_equal(grads[0][1], grads[1][1])


def test_attention_rows_sum_to_one_except_fully_masked_rows(rng):
    mha = make_mha(rng)
    mask = lengths_mask([6, 3, 5], TK) & causal_mask(TK)
    mask = np.broadcast_to(mask, (B, 1, TK, TK)).copy()
    mask[2, 0, 4, :] = False
    mha(rng.standard_normal((B, TK, D)), mask=mask)
    sums = mha.attn.sum(-1)                                     # (B, H, T)
    fully_masked = ~mask.any(-1)                                # (B, 1, T)
    np.testing.assert_allclose(sums[np.broadcast_to(~fully_masked, sums.shape)], 1, rtol=1e-14)
    assert not sums[np.broadcast_to(fully_masked, sums.shape)].any()


def test_masked_positions_get_exactly_zero_weight(rng):
    mha = make_mha(rng)
    mask = causal_mask(TK) & lengths_mask([6, 2, 4], TK)
    mha(100 * rng.standard_normal((B, TK, D)), mask=mask)
    assert not mha.attn[~np.broadcast_to(mask, mha.attn.shape)].any()
    assert (mha.attn[np.broadcast_to(mask, mha.attn.shape)] > 0).any()


# ---- what the masks promise ------------------------------------------------------------------

@pytest.mark.parametrize("j", range(1, TK))
def test_causal_mask_hides_the_future(j, rng):
    mha = make_mha(rng)
    x = rng.standard_normal((B, TK, D))
    changed = x.copy()
    changed[:, j] += rng.standard_normal((B, D))
    before, after = mha(x, mask=causal_mask(TK)), mha(changed, mask=causal_mask(TK))
    np.testing.assert_allclose(after[:, :j], before[:, :j], rtol=1e-13, atol=1e-15)
    assert not np.allclose(after[:, j], before[:, j])


def test_padded_keys_and_values_do_not_change_any_output(rng):
    q, k, v = (rng.standard_normal((B, H, n, DK)) for n in (TQ, TK, TK))
    mask = lengths_mask([6, 2, 4], TK)
    padded = ~mask[:, 0, 0, :]                                  # (B, TK)
    k2, v2 = k.copy(), v.copy()
    k2.transpose(0, 2, 1, 3)[padded] = 1e3 * rng.standard_normal((padded.sum(), H, DK))
    v2.transpose(0, 2, 1, 3)[padded] = 1e3 * rng.standard_normal((padded.sum(), H, DK))
    sdpa = ScaledDotProductAttention()
    np.testing.assert_allclose(sdpa(q, k2, v2, mask), sdpa(q, k, v, mask), rtol=1e-13, atol=1e-15)


def test_padded_context_changes_no_cross_attention_output_and_gets_no_gradient(rng):
    mha = make_mha(rng)
    x, context = rng.standard_normal((B, TQ, D)), rng.standard_normal((B, TK, D))
    mask = lengths_mask([6, 2, 4], TK)
    padded = ~mask[:, 0, 0, :]
    changed = context.copy()
    changed[padded] = 1e3 * rng.standard_normal((padded.sum(), D))
    np.testing.assert_allclose(mha(x, changed, mask), mha(x, context, mask), rtol=1e-13, atol=1e-15)
    _, dcontext = mha.backward(rng.standard_normal((B, TQ, D)))
    assert not dcontext[padded].any() and dcontext[~padded].any()


def test_padded_input_changes_no_self_attention_output_at_real_positions(rng):
    mha = make_mha(rng)
    x = rng.standard_normal((B, TK, D))
    mask = lengths_mask([6, 2, 4], TK)
    real = mask[:, 0, 0, :]
    changed = x.copy()
    changed[~real] = 1e3 * rng.standard_normal(((~real).sum(), D))
    np.testing.assert_allclose(mha(changed, mask=mask)[real], mha(x, mask=mask)[real],
                               rtol=1e-13, atol=1e-15)


# ---- mask helpers --------------------------------------------------------------------------

def test_causal_mask_is_lower_triangular_boolean():
    mask = causal_mask(5)
    assert mask.shape == (5, 5) and mask.dtype == bool
    for i in range(5):
        for j in range(5):
            assert mask[i, j] == (j <= i)


def test_padding_mask_marks_real_tokens_with_shape_b_1_1_t():
    ids = np.array([[5, 9, 6, 9], [9, 9, 9, 9], [4, 5, 6, 7]])
    mask = padding_mask(ids, pad_id=9)
    assert mask.shape == (3, 1, 1, 4) and mask.dtype == bool
    np.testing.assert_array_equal(mask[:, 0, 0], ids != 9)


def test_causal_padding_mask_is_causal_and_not_padding():
    ids = np.array([[5, 6, 7, 0], [5, 0, 0, 0]])
    mask = causal_padding_mask(ids)
    assert mask.shape == (2, 1, 4, 4) and mask.dtype == bool
    for b in range(2):
        for i in range(4):
            for j in range(4):
                assert mask[b, 0, i, j] == (j <= i and ids[b, j] != 0), (b, i, j)


def test_mask_module_doctests_pass():
    result = doctest.testmod(masks_module)
    assert result.attempted >= 3 and result.failed == 0, result


# ---- bad inputs ----------------------------------------------------------------------------

def test_query_and_key_sizes_must_agree(rng):
    q, k, v = rng.standard_normal((B, H, TQ, DK)), rng.standard_normal((B, H, TK, DK + 1)), \
        rng.standard_normal((B, H, TK, DK))
    with pytest.raises(ValueError, match=r"k: expected last dimension 3"):
        ScaledDotProductAttention()(q, k, v)


def test_keys_and_values_must_have_the_same_positions(rng):
    q, k, v = rng.standard_normal((B, H, TQ, DK)), rng.standard_normal((B, H, TK, DK)), \
        rng.standard_normal((B, H, TK + 1, DK))
    with pytest.raises(ValueError, match=r"q, k, v: expected \(B, H, Tq, dk\), \(B, H, Tk, dk\)"):
        ScaledDotProductAttention()(q, k, v)


def test_query_and_key_batches_must_agree(rng):
    q, k = rng.standard_normal((B, H, TQ, DK)), rng.standard_normal((B + 1, H, TK, DK))
    with pytest.raises(ValueError, match=r"q, k, v: expected"):
        ScaledDotProductAttention()(q, k, k)


def test_a_mask_that_cannot_broadcast_is_a_value_error(rng):
    x = rng.standard_normal((B, TK, D))
    with pytest.raises(ValueError, match=r"mask: shape \(5, 5\) does not broadcast to the attention scores"):
        make_mha(rng)(x, mask=causal_mask(5))


def test_a_mask_that_would_grow_the_scores_is_a_value_error(rng):
    x = rng.standard_normal((1, TK, D))
    with pytest.raises(ValueError, match="does not broadcast"):
        make_mha(rng)(x, mask=lengths_mask([6, 2, 4], TK))     # mask batch 3, scores batch 1


def test_a_non_boolean_mask_is_a_type_error(rng):
    x = rng.standard_normal((B, TK, D))
    with pytest.raises(TypeError, match="mask: expected a boolean array .* got int64"):
        make_mha(rng)(x, mask=causal_mask(TK).astype(np.int64))


def test_d_model_must_be_divisible_by_n_heads():
    with pytest.raises(ValueError, match=r"d_model \(10\) must be divisible by n_heads \(4\)"):
        MultiHeadAttention(10, 4)


def test_context_batch_must_match(rng):
    with pytest.raises(ValueError, match="context: expected batch size 3"):
        make_mha(rng)(rng.standard_normal((B, TQ, D)), rng.standard_normal((B + 1, TK, D)))


def test_context_width_must_be_d_model(rng):
    with pytest.raises(ValueError, match=r"context: expected last dimension 6"):
        make_mha(rng)(rng.standard_normal((B, TQ, D)), rng.standard_normal((B, TK, D + 1)))
