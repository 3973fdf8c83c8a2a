"""The graded exercises: every reference passes, the classic mistakes fail with a report that
names the wrong gradient and says why, and an unfinished or crashing function gets "not yet"."""

from pathlib import Path

import numpy as np
import pytest

import tinytransformer
from tinytransformer.exercises import EXERCISES, check, reference, stub

NAMES = list(EXERCISES)


def replacing(name, grad, wrong):
    """The reference of ``name`` with gradient ``grad`` replaced by ``wrong(*inputs, dout, right)``."""
    exercise = EXERCISES[name]
    i = exercise.grads.index(grad)

    def broken(*args):
        grads = list(exercise.solution(*args)) if len(exercise.grads) > 1 else [exercise.solution(*args)]
        grads[i] = wrong(*args, grads[i])
        return tuple(grads)
    return broken


def assert_wrong_only(result, exercise, grad):
    """The report marks ``grad`` WRONG and every other gradient right."""
    assert not result.passed
    lines = result.report.splitlines()
    for g in exercise.grads:
        expected = f"  {g}: WRONG" if g == grad else f"  {g}: right"
        assert any(line.startswith(expected) for line in lines), f"{expected!r} not in\n{result.report}"


def all_grads():
    return [(name, grad) for name in NAMES for grad in EXERCISES[name].grads]


def square_grads():
    """(exercise, gradient) pairs whose last two axes have the same size: a transpose fits."""
    pairs = []
    for name, exercise in EXERCISES.items():
        floats = [a for a in exercise.build(np.random.default_rng(0))
                  if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
        pairs += [(name, grad) for grad, a in zip(exercise.grads, floats)
                  if a.ndim >= 2 and a.shape[-1] == a.shape[-2]]
    return pairs


def test_the_exercises_the_issue_asks_for_exist_and_are_reachable_from_the_package():
    assert {"linear", "relu", "gelu", "softmax", "layernorm", "cross_entropy", "attention",
            "embedding", "split_heads", "merge_heads", "residual"} <= set(EXERCISES)
    assert tinytransformer.exercises.check is check and tinytransformer.exercises.EXERCISES is EXERCISES
    assert EXERCISES["linear"].signature == "linear_backward(x, W, b, dy) -> (dx, dW, db)"
    assert str(EXERCISES["linear"]).startswith("linear: write linear_backward(x, W, b, dy) -> (dx, dW, db)\n"
                                               "y = x @ W + b,   x (B, T, I), W (I, O), b (O,)")


@pytest.mark.parametrize("name", NAMES)
def test_every_reference_passes(name):
    result = check(name, reference(name))
    assert result.passed, f"\n{result}"
    assert result.gradcheck.worst_error < 1e-8
    assert "passed" in result.report


@pytest.mark.parametrize("seed", [1, 2])
def test_references_pass_on_other_seeds_too(seed):
    assert all(check(name, reference(name), seed=seed).passed for name in NAMES)


@pytest.mark.parametrize("name,grad", all_grads())
def test_a_gradient_scaled_by_two_fails_and_the_report_says_which_and_by_what_factor(name, grad):
    result = check(name, replacing(name, grad, lambda *args: 2 * args[-1]))
    assert_wrong_only(result, EXERCISES[name], grad)
    assert "off by a constant factor (x 2)" in result.report


@pytest.mark.parametrize("name,grad", square_grads())
def test_a_transposed_gradient_fails_where_its_shape_allows(name, grad):
    result = check(name, replacing(name, grad, lambda *args: args[-1].swapaxes(-1, -2)))
    assert_wrong_only(result, EXERCISES[name], grad)
    assert "looks transposed" in result.report


def test_there_is_a_square_gradient_to_transpose():
    assert ("residual", "dW") in square_grads()


def test_a_transposed_gradient_of_the_wrong_shape_gets_a_not_yet_report():
    result = check("linear", replacing("linear", "dW", lambda *args: args[-1].T))
    assert not result.passed
    assert result.report == ("not yet: linear_backward: dW has shape (5, 4) (transposed?), "
                             "expected (4, 5) (the shape of W)")


MISTAKES = [(name, i) for name in NAMES for i in range(len(EXERCISES[name].mistakes))]


def test_every_exercise_knows_at_least_one_mistake():
    assert {name for name, _ in MISTAKES} == set(NAMES)


@pytest.mark.parametrize("name,i", MISTAKES)
def test_each_known_mistake_fails_with_its_own_hint(name, i):
    mistake = EXERCISES[name].mistakes[i]
    result = check(name, replacing(name, mistake.grad, lambda *args: mistake.wrong(*args[:-1])))
    assert_wrong_only(result, EXERCISES[name], mistake.grad)
    assert f"hint: {mistake.hint}" in result.report


def test_the_residual_without_its_identity_path_is_told_so():
    result = check("residual", lambda x, W, dy: (dy @ W.T, x.reshape(-1, 5).T @ dy.reshape(-1, 5)))
    assert_wrong_only(result, EXERCISES["residual"], "dx")
    assert "a term is missing: the residual adds the upstream gradient" in result.report


def test_a_mistake_nobody_listed_still_gets_the_place_and_a_hint():
    ref = reference("embedding")
    result = check("embedding", lambda ids, W, dy: ref(ids[:, :-1], W, dy[:, :-1]))   # the last t left out
    assert_wrong_only(result, EXERCISES["embedding"], "dW")
    assert "worst relative error" in result.report and " at dW[" in result.report
    assert "hint: right at" in result.report                  # the repeats' rows are the wrong ones


@pytest.mark.parametrize("name", NAMES)
def test_the_unsolved_stub_runs_and_gets_not_yet(name):
    exercise, namespace = EXERCISES[name], {}
    source = stub(name)
    assert source.startswith(f"def {exercise.function_name}(")
    exec(source, namespace)
    result = check(name, namespace[exercise.function_name])
    assert not result.passed
    fname, grads = exercise.function_name, exercise.grads
    says = " returned None: fill it in" if len(grads) == 1 else f": {grads[0]} is None: compute it"
    assert result.report.startswith(f"not yet: {fname}{says}"), result.report


def test_a_function_returning_none_gets_not_yet():
    result = check("linear", lambda x, W, b, dy: None)
    assert result.report == ("not yet: linear_backward returned None: fill it in "
                             "(it should return a tuple (dx, dW, db))")
    assert result.gradcheck is None


def test_a_function_that_raises_gets_a_report_with_the_shapes_it_was_called_with():
    result = check("attention", lambda q, k, v, dout: q @ k)                  # (.., 4, 5) @ (.., 6, 5)
    assert not result.passed
    assert result.report.startswith("not yet: attention_backward raised ValueError: matmul")
    assert "called with q (2, 3, 4, 5), k (2, 3, 6, 5), v (2, 3, 6, 7), dout (2, 3, 4, 7)" in result.report


@pytest.mark.parametrize("returned,says", [
    ((np.zeros((2, 3, 4)), np.zeros((4, 5))), "returned 2 value(s); expected a tuple (dx, dW, db)"),
    ((np.zeros((2, 3, 4)), np.zeros((4, 5)), "db"), "db is a str, expected an array of shape (5,)"),
    ((np.full((2, 3, 4), np.nan), np.zeros((4, 5)), np.zeros(5)), "dx contains NaN or inf"),
])
def test_wrong_kinds_of_answer_get_not_yet(returned, says):
    result = check("linear", lambda x, W, b, dy: returned)
    assert result.report.startswith("not yet: linear_backward") and result.report.endswith(says)


def test_returning_the_upstream_gradient_unchanged_is_told_so():
    assert "hint: that is the upstream gradient unchanged" in check("gelu", lambda x, dy: dy).report


def test_the_readme_example_runs_and_shows_a_not_yet_report(capsys):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = readme.split("```python\nfrom tinytransformer.exercises import")[1].split("```")[0]
    exec("from tinytransformer.exercises import" + example, {})
    printed = capsys.readouterr().out
    assert "def softmax_backward(x, ds):" in printed and "softmax_backward: not yet (dx wrong" in printed


def test_something_that_is_not_a_function_gets_a_report():
    assert check("relu", None).report == "not yet: expected your function relu_backward, got NoneType None"


def test_a_function_that_edits_its_arguments_in_place_does_not_spoil_the_check():
    ref = reference("layernorm")

    def scribbles(x, gamma, beta, dy):
        grads = ref(x, gamma, beta, dy)
        x[...], gamma[...], dy[...] = 0.0, 0.0, 0.0
        return grads
    assert check("layernorm", scribbles).passed


def test_the_report_is_what_the_result_prints_as():
    result = check("relu", lambda x, dy: dy)
    assert str(result) == repr(result) == result.report


def test_the_same_seed_gives_the_same_report():
    broken = replacing("attention", "dv", lambda *args: 3 * args[-1])
    assert check("attention", broken, seed=5).report == check("attention", broken, seed=5).report


def test_an_unknown_exercise_is_a_clear_error():
    with pytest.raises(KeyError, match="no exercise 'lineer'; the exercises are linear, relu"):
        check("lineer", reference("linear"))


# ---- the derivations left to the reader by notebooks 07 and 08 ----------------------------------

def test_the_modern_exercises_forwards_are_the_package_layers_math():
    """swiglu is FeedForward("swiglu") without biases; rope_pairs is RotaryEmbedding with the features
    interleaved (neighbour pairing is rotate-half under a fixed permutation); alibi_asymmetric with equal
    slopes is ALiBiBias's symmetric bias."""
    from tinytransformer.nn import ALiBiBias, FeedForward, RotaryEmbedding
    from tinytransformer.nn.functional import softmax
    rng = np.random.default_rng(3)
    x, W1, W3, W2 = EXERCISES["swiglu"].build(rng)
    ff = FeedForward(5, 7, "swiglu", rng=rng, bias=False).astype(np.float64)
    ff.linear1.params["weight"][...], ff.linear3.params["weight"][...] = W1, W3
    ff.linear2.params["weight"][...] = W2
    assert np.allclose(EXERCISES["swiglu"].forward(x, W1, W3, W2), ff(x), rtol=1e-12, atol=1e-12)

    x, offset, base = EXERCISES["rope_pairs"].build(rng)
    d = x.shape[-1]
    halves = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])     # neighbours -> halves
    package = RotaryEmbedding(d, 16, base, dtype=np.float64)(x[..., halves], offset)
    ours = EXERCISES["rope_pairs"].forward(x, offset, base)
    assert np.allclose(ours[..., halves], package, rtol=1e-12, atol=1e-12)
    assert not np.allclose(ours, RotaryEmbedding(d, 16, base, dtype=np.float64)(x, offset))

    S = rng.standard_normal((2, 4, 5, 5))
    slopes = ALiBiBias(4).slopes
    assert np.allclose(EXERCISES["alibi_asymmetric"].forward(S, slopes, slopes),
                       softmax(ALiBiBias(4)(S)), rtol=1e-12, atol=1e-12)


def rope_backward(x, offset, base, dout, pairs):
    """A learner's whole answer: the turn by -theta, pairing (2i, 2i+1) or (i, i + d/2)."""
    d = x.shape[-1]
    theta = np.arange(offset, offset + x.shape[-2])[:, None] * base ** (-np.arange(0, d, 2) / d)
    a, b = ((slice(0, None, 2), slice(1, None, 2)) if pairs == "neighbours"
            else (slice(0, d // 2), slice(d // 2, None)))
    dx = np.empty_like(dout)
    dx[..., a] = dout[..., a] * np.cos(theta) + dout[..., b] * np.sin(theta)
    dx[..., b] = dout[..., b] * np.cos(theta) - dout[..., a] * np.sin(theta)
    return dx


def test_rope_pairs_tells_the_half_pairing_from_the_neighbour_pairing():
    assert check("rope_pairs", lambda x, o, b, dout: rope_backward(x, o, b, dout, "neighbours")).passed
    result = check("rope_pairs", lambda x, o, b, dout: rope_backward(x, o, b, dout, "halves"))
    assert not result.passed and "hint: that is the backward of the rotate-half pairing" in result.report
    forward_again = check("rope_pairs", lambda x, o, b, dout: EXERCISES["rope_pairs"].forward(dout, o, b))
    assert "hint: that turns dout by +theta, as the forward does" in forward_again.report


def test_a_learner_swiglu_with_sigmoid_for_the_silu_slope_is_told_so():
    from scipy.special import expit

    def sigmoid_slope(x, W1, W3, W2, dy):
        a, up = x @ W1, x @ W3
        h = a * expit(a) * up
        dh = dy @ W2.T
        da, dup = dh * up * expit(a), dh * a * expit(a)
        rows = lambda m: m.reshape(-1, m.shape[-1])       # noqa: E731
        return da @ W1.T + dup @ W3.T, rows(x).T @ rows(da), rows(x).T @ rows(dup), rows(h).T @ rows(dy)
    report = check("swiglu", sigmoid_slope).report
    assert "  dx: WRONG" in report and "  dW1: WRONG" in report and "  dW3: right" in report
    assert report.count("hint: silu'(a) is not sigmoid(a)") == 2


def test_alibi_asymmetric_with_one_slope_for_both_sides_is_told_so():
    ref = reference("alibi_asymmetric")

    def both_sides(S, m_back, m_ahead, dout):
        dS, _, _ = ref(S, m_back, m_ahead, dout)
        distance = np.abs(np.arange(S.shape[-1])[:, None] - np.arange(S.shape[-1]))
        d_slope = -(dS * distance).sum((0, 2, 3))
        return dS, d_slope, d_slope
    report = check("alibi_asymmetric", both_sides).report
    assert "hint: m_back only multiplies the keys behind the query" in report
    assert "hint: m_ahead only multiplies the keys ahead of the query" in report
