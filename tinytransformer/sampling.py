"""Choosing the next token from a model's logits: greedy, temperature, top-k, top-p (nucleus).

Legend: B rows (sequences), V vocabulary size.

For a row of logits z, sampling draws from p = softmax(z / temperature), narrowed in this
order (each step renormalises what is left):

- top-k keeps the k largest logits (and any tied with the k-th);
- top-p keeps the nucleus: the smallest set of most likely tokens whose probabilities sum
  to at least p. With the probabilities sorted down, p_(1) >= p_(2) >= ..., the token of
  rank r is kept when the tokens ranked before it sum to less than p:

      keep rank r  <=>  p_(1) + ... + p_(r-1) < p

  so the first token is always kept, and the last token kept is the one whose cumulative
  sum first reaches p. Tokens tied at the boundary are ranked by id (lower first), so
  the set is the same on every run.

Temperature 0 means greedy: the most likely token, no draw.
"""

from __future__ import annotations

import numpy as np

__all__ = ["top_k_filter", "top_p_filter", "sample_logits", "choose_next"]


def top_k_filter(z: np.ndarray, k: int) -> np.ndarray:
    """``z`` (B, V) with everything below each row's k-th largest value set to -inf."""
    kth = np.partition(z, -k, axis=-1)[:, -k, None]                      # (B, 1)
    return np.where(z >= kth, z, -np.inf)


def top_p_filter(z: np.ndarray, p: float) -> np.ndarray:
    """``z`` (B, V) with every token outside each row's nucleus of probability ``p`` set to -inf."""
    probs = np.exp(z - z.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)                           # (B, V)
    order = np.argsort(-probs, axis=-1, kind="stable")                   # most likely first, ties by id
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    before = np.cumsum(sorted_probs, axis=-1) - sorted_probs             # sum of the ranks before each
    keep = np.zeros_like(probs, dtype=bool)
    np.put_along_axis(keep, order, before < p, axis=-1)
    return np.where(keep, z, -np.inf)


def sample_logits(logits: np.ndarray, temperature: float, rng: np.random.Generator,
                  top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """One draw per row (B,) from softmax(logits / temperature), narrowed by top_k then top_p."""
    z = logits.astype(np.float64) / temperature                          # (B, V)
    if top_k is not None:
        z = top_k_filter(z, top_k)
    if top_p is not None:
        z = top_p_filter(z, top_p)
    cumulative = np.exp(z - z.max(axis=-1, keepdims=True)).cumsum(axis=-1)   # unnormalised
    u = rng.random((len(z), 1)) * cumulative[:, -1:]                     # uniform in [0, total)
    return (cumulative <= u).sum(axis=-1)        # the first token whose cumulative weight exceeds u


def choose_next(logits: np.ndarray, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """The next token of each row (B,): argmax when temperature is 0, else ``sample_logits``."""
    if temperature == 0:
        return logits.argmax(axis=-1)
    return sample_logits(logits, temperature, rng, top_k, top_p)
