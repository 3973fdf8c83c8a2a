"""The foundation layers: gradient checks, forward values against the textbook formulas,
dtype discipline and clear errors on bad input.

Legend: B batch, T time, D d_model, F d_ff, V vocabulary (all distinct so no shape can coincide).
"""

import math

import numpy as np
import pytest

from tinytransformer.nn import (GELU, CrossEntropyLoss, Dropout, Embedding, FeedForward, LayerNorm,
                                LearnedPositionalEmbedding, Linear, MultiHeadAttention, ReLU, RMSNorm,
                                SiLU, SinusoidalPositionalEncoding, Softmax)

B, T, D, F, V = 2, 3, 4, 6, 7
f64 = np.float64


def randomize(module, rng):
    """Give every parameter random values, so a zero bias or a unit gamma hides nothing."""
    for _, p, _ in module.named_parameters():
        p[...] = rng.standard_normal(p.shape)
    return module


# ---- gradient checks: every input and every parameter, float64 -----------------------------

def test_linear_gradcheck_on_3d_input(rng, assert_gradcheck):
    layer = randomize(Linear(D, F, rng=rng, dtype=f64), rng)
    assert_gradcheck(layer, rng.standard_normal((B, T, D)))


def test_linear_without_bias_gradcheck(rng, assert_gradcheck):
    layer = Linear(D, F, bias=False, rng=rng, dtype=f64)
    assert "bias" not in layer.params
    assert_gradcheck(layer, rng.standard_normal((B, T, D)))


def test_embedding_gradcheck_with_repeated_ids(rng, assert_gradcheck):
    ids = np.array([[1, 3, 1, 5], [3, 3, 0, 1]])
    result = assert_gradcheck(Embedding(V, D, rng=rng, dtype=f64), ids)
    assert [c.name for c in result.checks] == ["param weight"]


@pytest.mark.parametrize("offset", [0, 3])
def test_sinusoidal_positional_encoding_gradcheck(offset, rng, assert_gradcheck):
    assert_gradcheck(SinusoidalPositionalEncoding(D, max_len=8, dtype=f64),
                     rng.standard_normal((B, T, D)), offset)


@pytest.mark.parametrize("offset", [0, 2])
def test_learned_positional_embedding_gradcheck(offset, rng, assert_gradcheck):
    assert_gradcheck(LearnedPositionalEmbedding(8, D, rng=rng, dtype=f64),
                     rng.standard_normal((B, T, D)), offset)


def test_learned_positional_embedding_gradient_lands_on_the_offset_rows(rng):
    layer = LearnedPositionalEmbedding(8, D, rng=rng, dtype=f64)
    layer(rng.standard_normal((B, T, D)), offset=2)
    dy = rng.standard_normal((B, T, D))
    layer.backward(dy)
    expected = np.zeros((8, D))
    expected[2:2 + T] = dy.sum(axis=0)
    np.testing.assert_allclose(layer.grads["weight"], expected, rtol=1e-15)


@pytest.mark.parametrize("activation", [ReLU(), GELU("none"), GELU("tanh"), Softmax(-1), Softmax(0)],
                         ids=["relu", "gelu", "gelu_tanh", "softmax_last", "softmax_axis0"])
def test_activation_gradcheck(activation, rng, assert_gradcheck):
    assert_gradcheck(activation, 2 * rng.standard_normal((B, T, D)))


def test_layernorm_gradcheck(rng, assert_gradcheck):
    layer = randomize(LayerNorm(D, dtype=f64), rng)
    assert_gradcheck(layer, rng.standard_normal((B, T, D)))


def test_dropout_gradcheck_in_training_mode(rng, assert_gradcheck):
    layer = Dropout(0.3, rng=np.random.default_rng(7))
    x = rng.standard_normal((B, T, D))
    assert layer.training and 0 < np.count_nonzero(layer(x) == 0) < x.size   # masks really drop
    assert_gradcheck(layer, x)


@pytest.mark.parametrize("activation, dropout", [("relu", 0.0), ("gelu", 0.0), ("gelu_tanh", 0.0),
                                                 ("relu", 0.3)])
def test_feedforward_gradcheck(activation, dropout, rng, assert_gradcheck):
    layer = randomize(FeedForward(D, F, activation, dropout, rng=rng, dtype=f64), rng)
    assert_gradcheck(layer, rng.standard_normal((B, T, D)))


@pytest.mark.parametrize("ignore_index, smoothing", [(None, 0.0), (0, 0.0), (None, 0.1), (0, 0.2)])
def test_cross_entropy_gradcheck(ignore_index, smoothing, rng, assert_gradcheck):
    targets = np.array([[2, 0, 5], [0, 6, 1]])
    result = assert_gradcheck(CrossEntropyLoss(ignore_index, smoothing),
                              rng.standard_normal((B, T, V)), targets)
    assert [c.name for c in result.checks] == ["input 0"]     # the integer targets have no gradient


# ---- forward values -------------------------------------------------------------------------

def test_linear_forward_is_x_at_w_plus_b(rng):
    layer = randomize(Linear(D, F, rng=rng, dtype=f64), rng)
    x = rng.standard_normal((B, T, D))
    expected = np.einsum("bti,io->bto", x, layer.params["weight"]) + layer.params["bias"]
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12)


def pe_formula(pos, col, d_model):
    i = col // 2
    angle = pos / 10000 ** (2 * i / d_model)
    return math.sin(angle) if col % 2 == 0 else math.cos(angle)


@pytest.mark.parametrize("d_model", [6, 7])
def test_sinusoidal_table_matches_the_paper_formula(d_model):
    pe = SinusoidalPositionalEncoding(d_model, max_len=50, dtype=f64)
    table = pe(np.zeros((1, 50, d_model)))[0]
    for pos, col in [(0, 0), (0, 1), (1, 0), (1, 1), (7, 2), (7, 3), (49, 4), (13, d_model - 1)]:
        assert table[pos, col] == pytest.approx(pe_formula(pos, col, d_model), abs=1e-12), (pos, col)
    assert table.shape == (50, d_model)


def test_sinusoidal_offset_adds_the_later_rows(rng):
    pe = SinusoidalPositionalEncoding(D, max_len=10, dtype=f64)
    x = rng.standard_normal((B, T, D))
    shifted = pe(x, offset=4) - x
    for t in range(T):
        for col in range(D):
            assert shifted[1, t, col] == pytest.approx(pe_formula(4 + t, col, D), abs=1e-12)


def test_learned_positional_embedding_adds_rows_from_offset(rng):
    layer = LearnedPositionalEmbedding(8, D, rng=rng, dtype=f64)
    x = rng.standard_normal((B, T, D))
    np.testing.assert_array_equal(layer(x, offset=5), x + layer.params["weight"][5:5 + T])


def test_layernorm_output_has_zero_mean_and_unit_biased_variance_per_row(rng):
    x = 10 * rng.standard_normal((B, T, F)) + 3
    y = LayerNorm(F, dtype=f64)(x)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-6)       # np.var is the biased variance


def test_layernorm_matches_the_formula_with_eps_inside_the_sqrt(rng):
    # rows with variance ~1e-6 make eps = 1e-5 dominate: a missing or misplaced eps shows
    layer = randomize(LayerNorm(D, dtype=f64), rng)
    x = 1e-3 * rng.standard_normal((B, T, D))
    gamma, beta = layer.params["weight"], layer.params["bias"]
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    np.testing.assert_allclose(layer(x), gamma * (x - mean) / np.sqrt(var + 1e-5) + beta, rtol=1e-12)
    assert not np.allclose(layer(x), gamma * (x - mean) / np.sqrt(var) + beta, rtol=1e-2)


def test_softmax_rows_sum_to_one_and_match_exp_over_sum(rng):
    x = rng.standard_normal((B, T, V))
    s = Softmax()(x)
    np.testing.assert_allclose(s.sum(-1), 1, rtol=1e-14)
    np.testing.assert_allclose(s, np.exp(x) / np.exp(x).sum(-1, keepdims=True), rtol=1e-12)


def test_softmax_over_axis_0_normalises_columns(rng):
    x = rng.standard_normal((F, D))
    np.testing.assert_allclose(Softmax(axis=0)(x).sum(0), 1, rtol=1e-14)


def test_softmax_of_huge_inputs_has_no_overflow(rng):
    x = 1e4 * rng.standard_normal((B, T, V))
    layer = Softmax()
    with np.errstate(over="raise", invalid="raise"):
        s = layer(x)
        ds = layer.backward(rng.standard_normal(s.shape))
    assert np.isfinite(s).all() and np.isfinite(ds).all()
    np.testing.assert_allclose(s.sum(-1), 1, rtol=1e-14)
    np.testing.assert_array_equal(s.argmax(-1), x.argmax(-1))


def test_exact_gelu_is_x_times_normal_cdf(rng):
    x = 3 * rng.standard_normal(50)
    expected = [v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x]
    np.testing.assert_allclose(GELU()(x), expected, rtol=1e-13, atol=1e-15)


def test_tanh_gelu_is_the_gpt2_formula(rng):
    x = 3 * rng.standard_normal(50)
    expected = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))) for v in x]
    np.testing.assert_allclose(GELU("tanh")(x), expected, rtol=1e-13, atol=1e-15)


def test_relu_zeroes_negatives_only():
    np.testing.assert_array_equal(ReLU()(np.array([-2.0, -0.0, 0.5, 3.0])), [0.0, 0.0, 0.5, 3.0])


def cross_entropy_by_hand(logits, targets, ignore_index=None, smoothing=0.0):
    """Mean over kept positions of -sum_v q_v log p_v, q = (1 - eps) onehot + eps / V."""
    V = logits.shape[-1]
    losses = []
    for z, label in zip(logits.reshape(-1, V), targets.reshape(-1)):
        if label == ignore_index:
            continue
        top = max(z)
        log_total = top + math.log(sum(math.exp(zv - top) for zv in z))
        q = [(1 - smoothing) * (v == label) + smoothing / V for v in range(V)]
        losses.append(-sum(q[v] * (z[v] - log_total) for v in range(V)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("ignore_index, smoothing", [(None, 0.0), (0, 0.0), (None, 0.1), (0, 0.3)])
def test_cross_entropy_matches_hand_computation(ignore_index, smoothing, rng):
    logits = 2 * rng.standard_normal((B, T, V))
    targets = np.array([[2, 0, 5], [0, 6, 1]])
    loss = CrossEntropyLoss(ignore_index, smoothing)(logits, targets)
    assert loss == pytest.approx(cross_entropy_by_hand(logits, targets, ignore_index, smoothing), rel=1e-12)


def test_label_smoothing_spreads_eps_over_all_classes_including_the_target():
    # logits (0, log 2): p = (1/3, 2/3). Target 0, eps = 0.5, V = 2:
    # q = (1 - 0.5 + 0.25, 0.25) = (0.75, 0.25), so loss = 0.75 log 3 + 0.25 log 1.5
    loss = CrossEntropyLoss(label_smoothing=0.5)(np.array([[0.0, math.log(2)]]), np.array([0]))
    assert loss == pytest.approx(0.75 * math.log(3) + 0.25 * math.log(1.5), rel=1e-12)


def test_cross_entropy_averages_over_non_ignored_positions_only(rng):
    logits = rng.standard_normal((B, T, V))
    targets = np.array([[2, 0, 0], [0, 6, 1]])
    kept = targets != 0
    loss_fn = CrossEntropyLoss(ignore_index=0)
    assert loss_fn(logits, targets) == pytest.approx(CrossEntropyLoss()(logits[kept], targets[kept]), rel=1e-12)
    dlogits = loss_fn.backward()
    assert not dlogits[~kept].any()
    np.testing.assert_allclose(dlogits[kept].sum(-1), 0, atol=1e-15)   # p - onehot sums to 0


def test_cross_entropy_of_huge_logits_is_finite_and_exact(rng):
    logits = 1e4 * rng.standard_normal((B, T, V))
    targets = np.array([[2, 0, 5], [0, 6, 1]])
    loss_fn = CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)
    with np.errstate(over="raise", invalid="raise"):
        loss = loss_fn(logits, targets)
        dlogits = loss_fn.backward()
    assert loss == pytest.approx(cross_entropy_by_hand(logits, targets, 0, 0.1), rel=1e-12)
    assert np.isfinite(dlogits).all()


def test_cross_entropy_with_every_position_ignored_raises():
    with pytest.raises(ValueError, match="every position equals ignore_index"):
        CrossEntropyLoss(ignore_index=0)(np.zeros((B, T, V)), np.zeros((B, T), dtype=int))


def test_dropout_in_eval_is_the_identity(rng):
    layer = Dropout(0.5, rng=rng).eval()
    x = rng.standard_normal((B, T, D))
    np.testing.assert_array_equal(layer(x), x)
    dy = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(layer.backward(dy), dy)


def test_dropout_keeps_about_1_minus_p_and_scales_by_its_inverse():
    x = np.ones((200, 500))
    y = Dropout(0.3, rng=np.random.default_rng(0))(x)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-15)


def test_dropout_with_the_same_seed_draws_the_same_mask():
    x = np.ones((20, 30))
    a, b = Dropout(0.4, rng=np.random.default_rng(5)), Dropout(0.4, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a(x), b(x))


def test_dropout_draws_a_new_mask_at_every_call():
    layer, x = Dropout(0.4, rng=np.random.default_rng(5)), np.ones((20, 30))
    assert not np.array_equal(layer(x), layer(x))


def test_dropout_backward_uses_the_mask_of_the_last_forward(rng):
    layer, x = Dropout(0.4, rng=np.random.default_rng(5)), np.ones((20, 30))
    layer(x)
    scaled_mask = layer(x)                                     # x is ones: y is the scaled mask
    dy = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(layer.backward(dy), dy * scaled_mask)


def test_embedding_forward_looks_up_rows(rng):
    layer = Embedding(V, D, rng=rng, dtype=f64)
    ids = np.array([[6, 0, 2], [2, 2, 1]])
    np.testing.assert_array_equal(layer(ids)[1, 0], layer.params["weight"][2])
    assert layer(ids).shape == (B, T, D)


def test_embedding_gradient_sums_every_repeat_of_an_id(rng):
    layer = Embedding(V, D, rng=rng, dtype=f64)
    ids = np.array([[2, 2, 2], [2, 0, 1]])
    layer(ids)
    dy = rng.standard_normal((B, T, D))
    layer.backward(dy)
    grad = layer.grads["weight"]
    np.testing.assert_allclose(grad[2], dy[0, 0] + dy[0, 1] + dy[0, 2] + dy[1, 0], rtol=1e-14)
    np.testing.assert_array_equal(grad[0], dy[1, 1])
    assert not grad[3:].any()


# ---- dtype: float32 in, float32 out, no silent upcast ------------------------------------

def _float32_cases():
    x = lambda rng: rng.standard_normal((B, T, D)).astype(np.float32)   # noqa: E731
    ids = lambda rng: np.array([[1, 2, 2], [0, 6, 3]])                   # noqa: E731
    return {
        "Linear": (lambda r: Linear(D, F, rng=r), x),
        "Embedding": (lambda r: Embedding(V, D, rng=r), ids),
        "SinusoidalPositionalEncoding": (lambda r: SinusoidalPositionalEncoding(D, 8), x),
        "LearnedPositionalEmbedding": (lambda r: LearnedPositionalEmbedding(8, D, rng=r), x),
        "ReLU": (lambda r: ReLU(), x),
        "GELU": (lambda r: GELU(), x),
        "GELU_tanh": (lambda r: GELU("tanh"), x),
        "Softmax": (lambda r: Softmax(), x),
        "LayerNorm": (lambda r: LayerNorm(D), x),
        "RMSNorm": (lambda r: RMSNorm(D), x),
        "SiLU": (lambda r: SiLU(), x),
        "FeedForward_swiglu_dropout": (lambda r: FeedForward(D, F, "swiglu", 0.2, rng=r), x),
        "MultiHeadAttention_rope": (lambda r: MultiHeadAttention(D, 2, rng=r, positional="rope", max_len=8), x),
        "MultiHeadAttention_alibi": (lambda r: MultiHeadAttention(D, 2, rng=r, positional="alibi"), x),
        "Dropout": (lambda r: Dropout(0.3, rng=r), x),
        "FeedForward_gelu_dropout": (lambda r: FeedForward(D, F, "gelu", 0.2, rng=r), x),
        "FeedForward_gelu_tanh": (lambda r: FeedForward(D, F, "gelu_tanh", rng=r), x),
        "MultiHeadAttention": (lambda r: MultiHeadAttention(D, 2, dropout=0.2, rng=r), x),
    }


@pytest.mark.parametrize("case", list(_float32_cases()))
def test_float32_layer_keeps_float32_forward_and_backward(case, rng):
    make_layer, make_input = _float32_cases()[case]
    layer = make_layer(rng)
    y = layer(make_input(rng))
    assert y.dtype == np.float32
    dx = layer.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert dx is None or dx.dtype == np.float32
    assert all(g.dtype == np.float32 for _, _, g in layer.named_parameters())


def test_float32_cross_entropy_gradient_is_float32(rng):
    loss_fn = CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)
    loss_fn(rng.standard_normal((B, T, V)).astype(np.float32), np.array([[1, 0, 2], [3, 4, 0]]))
    assert loss_fn.backward().dtype == np.float32


@pytest.mark.parametrize("make_layer", [lambda: Linear(D, F, rng=np.random.default_rng(0)),
                                        lambda: LayerNorm(D),
                                        lambda: MultiHeadAttention(D, 2)],
                         ids=["Linear", "LayerNorm", "MultiHeadAttention"])
def test_float64_input_into_float32_layer_is_a_type_error(make_layer, rng):
    with pytest.raises(TypeError, match="expected dtype float32.*got float64"):
        make_layer()(rng.standard_normal((B, T, D)))


# ---- bad inputs: clear errors --------------------------------------------------------------

@pytest.mark.parametrize("make_layer", [lambda: Linear(D, F, rng=np.random.default_rng(0)),
                                        lambda: LayerNorm(D),
                                        lambda: MultiHeadAttention(D, 2)],
                         ids=["Linear", "LayerNorm", "MultiHeadAttention"])
def test_wrong_last_dimension_is_a_value_error(make_layer, rng):
    with pytest.raises(ValueError, match=r"expected last dimension 4, got shape \(2, 3, 6\)"):
        make_layer()(rng.standard_normal((B, T, F)).astype(np.float32))


def test_out_of_range_id_names_the_id_the_vocab_size_and_the_position():
    ids = np.array([[1, 2, 3], [4, 17, 5]])
    with pytest.raises(ValueError, match=r"token id 17 out of range for vocab_size 13 \(ids\[1, 1\]\)"):
        Embedding(13, D, rng=np.random.default_rng(0))(ids)


def test_negative_id_is_out_of_range():
    with pytest.raises(ValueError, match=r"token id -1 out of range for vocab_size 13 \(ids\[0, 2\]\)"):
        Embedding(13, D, rng=np.random.default_rng(0))(np.array([[1, 2, -1]]))


def test_float_ids_are_a_type_error():
    with pytest.raises(TypeError, match="integer array of token ids, got float64"):
        Embedding(V, D, rng=np.random.default_rng(0))(np.array([[1.0, 2.0]]))


@pytest.mark.parametrize("make_layer", [lambda: SinusoidalPositionalEncoding(D, max_len=5),
                                        lambda: LearnedPositionalEmbedding(5, D,
                                                                           rng=np.random.default_rng(0))],
                         ids=["sinusoidal", "learned"])
@pytest.mark.parametrize("length, offset", [(6, 0), (3, 3)])
def test_positions_beyond_max_len_are_a_value_error(make_layer, length, offset):
    x = np.zeros((B, length, D), dtype=np.float32)
    with pytest.raises(ValueError, match=f"positions {offset}..{offset + length - 1} do not fit max_len 5"):
        make_layer()(x, offset=offset)


@pytest.mark.parametrize("smoothing", [-0.1, 1.5])
def test_label_smoothing_out_of_range_is_a_value_error(smoothing):
    with pytest.raises(ValueError, match=r"label_smoothing: expected a value in \[0, 1\]"):
        CrossEntropyLoss(label_smoothing=smoothing)


def test_out_of_range_target_is_a_value_error():
    with pytest.raises(ValueError, match=f"class id {V} out of range for {V} classes"):
        CrossEntropyLoss()(np.zeros((1, 2, V)), np.array([[1, V]]))


def test_float_targets_are_a_type_error():
    with pytest.raises(TypeError, match="integer array of class ids"):
        CrossEntropyLoss()(np.zeros((2, V)), np.array([1.0, 2.0]))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_probability_out_of_range_is_a_value_error(p):
    with pytest.raises(ValueError, match=r"Dropout p: expected a probability in \[0, 1\)"):
        Dropout(p)


def test_unknown_gelu_approximation_is_a_value_error():
    with pytest.raises(ValueError, match="GELU approximate: expected 'none' or 'tanh', got 'erf'"):
        GELU("erf")


def test_unknown_feedforward_activation_is_a_value_error():
    with pytest.raises(ValueError, match="activation: expected one of 'relu', 'gelu', 'gelu_tanh', "
                                         "'swiglu', got 'swish'"):
        FeedForward(D, F, activation="swish")


@pytest.mark.parametrize("layer", [ReLU(), GELU(), GELU("tanh"), SiLU(), Softmax(),
                                   Dropout(0.2, np.random.default_rng(0))],
                         ids=["ReLU", "GELU", "GELU(tanh)", "SiLU", "Softmax", "Dropout"])
def test_elementwise_layers_refuse_integer_input(layer):
    # an integer input would be silently truncated (GELU) or divided into inf (Dropout)
    with pytest.raises(TypeError, match="input x: expected a floating-point array, got dtype int64"):
        layer(np.array([1, 2, 3]))


def test_linear_backward_refuses_an_upstream_gradient_of_the_wrong_shape(rng):
    layer = Linear(4, 3, rng=rng)
    layer(rng.standard_normal((2, 5, 4)).astype(np.float32))
    with pytest.raises(ValueError, match=r"Linear dy: expected the shape of the forward's output \(2, 5, 3\), got shape \(5, 2, 3\)"):
        layer.backward(np.ones((5, 2, 3), np.float32))
