"""Top-k and top-p (nucleus) filters, and draws from what they keep."""

from itertools import combinations

import numpy as np
import pytest

from tinytransformer.sampling import choose_next, sample_logits, top_k_filter, top_p_filter


def smallest_sets_reaching(probs, p):
    """Every smallest set of token ids whose probabilities sum to at least p, by brute force."""
    V = len(probs)
    for size in range(1, V + 1):
        found = [set(c) for c in combinations(range(V), size) if probs[list(c)].sum() >= p]
        if found:
            return found
    raise AssertionError("no set reaches p")


@pytest.mark.parametrize("seed", range(20))
def test_top_p_keeps_exactly_the_smallest_set_whose_probability_reaches_p(seed):
    rng = np.random.default_rng(seed)
    V = 7
    z = rng.normal(scale=2.0, size=(3, V))
    for row, p in zip(z, rng.uniform(0.05, 0.99, size=3)):
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        kept = set(np.flatnonzero(np.isfinite(top_p_filter(row[None], p)[0])))
        assert kept in smallest_sets_reaching(probs, p)
        # the set is the most likely tokens: its least likely beats every token left out
        left_out = [probs[i] for i in range(V) if i not in kept]
        assert not left_out or min(probs[list(kept)]) >= max(left_out)


def test_top_p_edges():
    z = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(top_p_filter(z, 1e-9)).sum() == 1          # the most likely token alone
    assert np.isfinite(top_p_filter(z, 1.0)).all()                 # p = 1 keeps every token
    kept = np.isfinite(top_p_filter(z, 0.6))[0]
    np.testing.assert_array_equal(kept, [True, True, False, False])   # 0.5 < 0.6 <= 0.8
    tied = np.zeros((1, 4))                                        # four equal tokens, p = 0.5: two, by id
    np.testing.assert_array_equal(np.isfinite(top_p_filter(tied, 0.5))[0], [True, True, False, False])


def test_top_k_keeps_the_k_largest_and_ties():
    z = np.array([[0.1, 3.0, 2.0, 2.0, -1.0]])
    np.testing.assert_array_equal(np.isfinite(top_k_filter(z, 1))[0], [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(np.isfinite(top_k_filter(z, 2))[0], [0, 1, 1, 1, 0])


def test_draws_follow_the_renormalised_nucleus():
    """Frequencies of 40,000 draws against the nucleus's renormalised probabilities."""
    probs = np.array([0.4, 0.25, 0.2, 0.1, 0.05])
    logits = np.tile(np.log(probs), (40_000, 1))
    tokens = sample_logits(logits, 1.0, np.random.default_rng(0), top_p=0.8)   # nucleus {0, 1, 2}
    freq = np.bincount(tokens, minlength=5) / len(tokens)
    expected = np.array([0.4, 0.25, 0.2, 0, 0]) / 0.85
    np.testing.assert_allclose(freq, expected, atol=0.01)        # ~4.5 standard errors


def test_filters_apply_after_temperature_in_order_k_then_p():
    """Temperature flattens the distribution first, so the same p keeps more tokens."""
    logits = np.log(np.array([[0.6, 0.2, 0.1, 0.06, 0.04]]))
    rng = np.random.default_rng(1)
    cold = {int(sample_logits(logits, 1.0, rng, top_p=0.75)[0]) for _ in range(300)}
    hot = {int(sample_logits(logits, 5.0, rng, top_p=0.75)[0]) for _ in range(300)}
    assert cold == {0, 1} and hot == {0, 1, 2, 3}
    # top-k first: two tokens left, renormalised 0.75 / 0.25; then top-p 0.7 keeps only the first
    assert {int(sample_logits(logits, 1.0, rng, top_k=2, top_p=0.7)[0]) for _ in range(100)} == {0}


def test_temperature_zero_is_greedy_and_ignores_the_generator():
    logits = np.array([[0.0, 2.0, 1.0], [5.0, 0.0, 0.0]])
    np.testing.assert_array_equal(choose_next(logits), [1, 0])
