"""The gradient checker itself: it must catch a wrong backward, check everything, refuse float32.

Each broken layer below makes one classic mistake; the checker must fail it, and say where.
"""

import numpy as np
import pytest

from tinytransformer.gradcheck import directional_gradcheck, gradcheck, rel_error
from tinytransformer.nn import (Embedding, LayerNorm, Linear, Module, MultiHeadAttention, Softmax,
                                causal_mask)

B, T, D, F = 2, 3, 4, 6
f64 = np.float64


class LinearForgetsBias(Linear):
    def backward(self, dy):
        x = self._saved().x
        self.grads["weight"] += x.reshape(-1, self.in_features).T @ dy.reshape(-1, self.out_features)
        return dy @ self.params["weight"].T


class LinearWrongTranspose(Linear):
    """dx = dy @ W instead of dy @ W^T: only runs when W is square, which is why checks need D != F."""

    def backward(self, dy):
        super().backward(dy)
        return dy @ self.params["weight"]


class LinearOverwrites(Linear):
    """grads[...] = instead of +=: right alone, wrong as soon as the weight is used twice."""

    def backward(self, dy):
        x = self._saved().x
        self.grads["weight"][...] = x.reshape(-1, self.in_features).T @ dy.reshape(-1, self.out_features)
        self.grads["bias"][...] = dy.reshape(-1, self.out_features).sum(0)
        return dy @ self.params["weight"].T


class LayerNormDropsVarianceTerm(LayerNorm):
    def backward(self, dy):
        xhat, rstd = self._saved()
        self.grads["weight"] += (dy * xhat).reshape(-1, self.d_model).sum(0)
        self.grads["bias"] += dy.reshape(-1, self.d_model).sum(0)
        g = dy * self.params["weight"]
        return rstd * (g - g.mean(-1, keepdims=True))          # missing - xhat * mean(g * xhat)


class SoftmaxMissingSum(Softmax):
    def backward(self, ds):
        return self._saved().s * ds                              # missing - sum(ds * s)


class EmbeddingKeepsOneRepeat(Embedding):
    def backward(self, dy):
        ids = self._saved().ids
        self.grads["weight"][ids.reshape(-1)] += dy.reshape(-1, dy.shape[-1])   # repeats collide


class TwiceThrough(Module):
    """y = layer(layer(x)) with one square layer: its weight is used twice."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        self.cache = x
        return self.layer(self.layer(x))

    def backward(self, dy):
        x = self._saved()
        dhidden = self.layer.backward(dy)
        self.layer(x)                  # the layer caches only its last input: redo the first call
        return self.layer.backward(dhidden)


def by_name(result):
    return {c.name: c for c in result.checks}


def test_correct_linear_passes(rng):
    result = gradcheck(Linear(D, F, rng=rng, dtype=f64), rng.standard_normal((B, T, D)))
    assert result.passed, f"\n{result}"
    assert result.worst_error < 1e-8


def test_a_forgotten_bias_gradient_is_caught_on_the_bias(rng):
    result = gradcheck(LinearForgetsBias(D, F, rng=rng, dtype=f64), rng.standard_normal((B, T, D)))
    assert not result.passed
    checks = by_name(result)
    assert checks["param bias"].error > 0.1
    assert checks["param weight"].error < 1e-6 and checks["input 0"].error < 1e-6
    assert "FAIL" in str(result) and "param bias" in str(result)


def test_a_wrong_transpose_is_caught_on_the_input(rng):
    result = gradcheck(LinearWrongTranspose(D, D, rng=rng, dtype=f64), rng.standard_normal((B, T, D)))
    assert not result.passed
    assert by_name(result)["input 0"].error > 0.1


def test_overwriting_instead_of_accumulating_is_caught_when_a_weight_is_used_twice(rng):
    x = rng.standard_normal((B, T, D))
    assert gradcheck(TwiceThrough(Linear(D, D, rng=rng, dtype=f64)), x).passed
    result = gradcheck(TwiceThrough(LinearOverwrites(D, D, rng=rng, dtype=f64)), x)
    assert not result.passed
    assert by_name(result)["param layer.weight"].error > 0.1


def test_a_layernorm_missing_the_variance_term_is_caught(rng):
    result = gradcheck(LayerNormDropsVarianceTerm(D, dtype=f64), rng.standard_normal((B, T, D)))
    assert not result.passed
    assert by_name(result)["input 0"].error > 0.1


def test_a_softmax_backward_missing_the_sum_term_is_caught(rng):
    result = gradcheck(SoftmaxMissingSum(), rng.standard_normal((B, T, D)))
    assert not result.passed


def test_an_embedding_that_drops_repeated_ids_is_caught(rng):
    ids = np.array([[1, 1, 2], [1, 3, 3]])
    result = gradcheck(EmbeddingKeepsOneRepeat(5, D, rng=rng, dtype=f64), ids)
    assert not result.passed


def test_every_float_input_and_every_parameter_is_checked_in_full(rng):
    mha = MultiHeadAttention(D, 2, rng=rng, dtype=f64)
    x, context = rng.standard_normal((B, T, D)), rng.standard_normal((B, T + 2, D))
    mask = np.ones((B, 1, T, T + 2), dtype=bool)               # boolean input: passed through
    result = gradcheck(mha, x, context, mask)
    assert [c.name for c in result.checks] == ["input 0", "input 1"] + [
        f"param {w}.{p}" for w in ("w_q", "w_k", "w_v", "w_o") for p in ("weight", "bias")]
    assert [c.kind for c in result.checks] == ["input"] * 2 + ["param"] * 8
    assert all(c.checked == c.size for c in result.checks)
    assert by_name(result)["input 1"].size == B * (T + 2) * D
    assert result.passed, f"\n{result}"


def test_input_names_label_the_table(rng):
    result = gradcheck(MultiHeadAttention(D, 2, rng=rng, dtype=f64), rng.standard_normal((B, T, D)),
                       None, causal_mask(T), input_names=("x", "context", "mask"))
    assert result.checks[0].name == "input x"


def test_max_elements_checks_a_sample_of_that_many_elements(rng):
    result = gradcheck(Linear(D, F, rng=rng, dtype=f64), rng.standard_normal((B, T, D)), max_elements=5)
    assert {c.name: (c.checked, c.size) for c in result.checks} == {
        "input 0": (5, B * T * D), "param weight": (5, D * F), "param bias": (5, F)}
    assert result.passed, f"\n{result}"


def test_max_elements_larger_than_an_array_checks_all_of_it(rng):
    result = gradcheck(Linear(D, F, rng=rng, dtype=f64), rng.standard_normal((B, T, D)), max_elements=10)
    assert by_name(result)["param bias"].checked == F
    assert by_name(result)["input 0"].checked == 10


def test_float32_module_is_refused_with_a_type_error(rng):
    with pytest.raises(TypeError, match=r"parameter weight is float32; call module.astype\(np.float64\)"):
        gradcheck(Linear(D, F, rng=rng), rng.standard_normal((B, T, D)))


def test_float32_input_is_refused_with_a_type_error(rng):
    with pytest.raises(TypeError, match="input 0 is float32; expected float64"):
        gradcheck(Softmax(), rng.standard_normal((B, T, D)).astype(np.float32))


def test_a_backward_returning_too_few_gradients_is_an_error(rng):
    class ForgetsContext(MultiHeadAttention):
        def backward(self, dout):
            return super().backward(dout)[0]
    mha = ForgetsContext(D, 2, rng=rng, dtype=f64)
    with pytest.raises(ValueError, match=r"backward returned 1 gradient\(s\) for 2 floating input\(s\)"):
        gradcheck(mha, rng.standard_normal((B, T, D)), rng.standard_normal((B, T + 1, D)))


def test_rel_error_is_floored_where_both_gradients_vanish():
    errors = rel_error(np.array([1.0, 1e-12, 0.0]), np.array([1.0 + 1e-9, 0.0, 0.0]))
    assert errors[0] == pytest.approx(5e-10, rel=1e-3)
    assert errors[1] == pytest.approx(1e-9)                     # 1e-12 / floor 1e-3
    assert errors[2] == 0.0


def test_the_upstream_gradient_is_not_the_input_drawn_from_the_same_seed():
    # inputs from default_rng(0) and gradcheck(seed=0): the upstream must still differ, or a
    # backward that multiplies by x instead of dy passes (it did, for the standard cases)
    class Square(Module):
        def __init__(self, x_for_dy: bool):
            super().__init__()
            self.x_for_dy = x_for_dy

        def forward(self, x):
            self.cache = x
            return x * x

        def backward(self, dy):
            x = self.cache
            return 2 * x * (x if self.x_for_dy else dy)

    x = np.random.default_rng(0).standard_normal((3, 5))
    assert gradcheck(Square(x_for_dy=False), x, seed=0).passed
    assert not gradcheck(Square(x_for_dy=True), x, seed=0).passed


def test_an_output_that_is_a_view_of_its_input_is_still_checked():
    class Identity(Module):
        def forward(self, x):
            self.cache = True
            return x                                   # a view of the very input gradcheck nudges

        def backward(self, dy):
            return dy

    x = np.random.default_rng(1).standard_normal((2, 3))
    assert gradcheck(Identity(), x).passed


def test_the_directional_check_catches_a_wrong_gradient_anywhere(rng):
    x = rng.standard_normal((B, T, D))
    assert directional_gradcheck(Linear(D, F, rng=rng, dtype=f64), x) < 1e-8
    assert directional_gradcheck(LinearForgetsBias(D, F, rng=rng, dtype=f64), x) > 1e-3
    assert directional_gradcheck(LayerNormDropsVarianceTerm(D, dtype=f64), x) > 1e-3
    with pytest.raises(TypeError, match="must be float64"):
        directional_gradcheck(Linear(D, F, rng=rng), x)
