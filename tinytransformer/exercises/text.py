"""Exercises on text: one step of BPE training (bpe_merge), and the top-p filter of sampling (top_p).

Both are graded by their outputs (``outputs.py``): each has one right answer per input.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..sampling import top_p_filter
from ..tokenizers.bpe import merge_pair
from .outputs import OutputExercise, Slip

# ---- bpe_merge ----------------------------------------------------------------------------


def _pair_counts(words, counts, weighted=True) -> Counter:
    pair_counts = Counter()
    for tokens, count in zip(words, counts):
        for pair in zip(tokens, tokens[1:]):
            pair_counts[pair] += count if weighted else 1
    return pair_counts


def bpe_merge_step(words, counts):
    """One step of BPE training: count the adjacent pairs of every word, each word weighted by
    how often the text has it; the most frequent pair (ties: the smaller pair, comparing left
    then right bytes) becomes one token in every word, left to right."""
    pair_counts = _pair_counts(words, counts)
    best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
    return best, [merge_pair(tokens, best) for tokens in words]


def _unweighted(words, counts):
    pair_counts = _pair_counts(words, counts, weighted=False)
    best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
    return best, [merge_pair(tokens, best) for tokens in words]


def _first_seen_wins_ties(words, counts):
    best = _pair_counts(words, counts).most_common(1)[0][0]
    return best, [merge_pair(tokens, best) for tokens in words]


def _right_to_left(words, counts):
    best = bpe_merge_step(words, counts)[0]

    def merge_from_the_right(tokens):
        merged, i = [], len(tokens) - 1
        while i >= 0:
            if i >= 1 and (tokens[i - 1], tokens[i]) == best:
                merged.insert(0, tokens[i - 1] + tokens[i])
                i -= 2
            else:
                merged.insert(0, tokens[i])
                i -= 1
        return merged
    return best, [merge_from_the_right(tokens) for tokens in words]


def _split(*words: str) -> list[list[bytes]]:
    return [[bytes([b]) for b in word.encode()] for word in words]


def _draw_words(rng: np.random.Generator) -> tuple:
    n = int(rng.integers(2, 6))
    words = ["".join(rng.choice(list("abc "), size=int(rng.integers(2, 7)))) for _ in range(n)]
    return _split(*words), [int(c) for c in rng.integers(1, 5, size=n)]


BPE_MERGE = OutputExercise(
    "bpe_merge",
    """words: a list of words, each a list of tokens (bytes), e.g. [b"ab", b"c"];
counts: how often the text has each word (a list of ints, one per word).
Count every adjacent pair of tokens (a pair in a word that appears 3 times counts 3);
take the most frequent pair, ties going to the smaller pair ((left, right) compared as
tuples of bytes); replace every occurrence of it in every word by one token left + right,
scanning left to right ([a, a, a] with (a, a) gives [aa, a]).
Return (pair, new_words).""",
    solution=bpe_merge_step,
    cases=((_split("abab", " abc", " ab"), [1, 1, 1]),       # (a, b): 4 times
           (_split("ba", "ab"), [1, 1]),                      # a tie: (a, b) < (b, a)
           (_split("xy", "yz"), [1, 5]),                      # the counts decide
           (_split("aaa"), [1])),                             # overlapping occurrences
    draw=_draw_words,
    same=lambda got, want: isinstance(got, tuple) and len(got) == 2 and tuple(got[0]) == want[0]
    and list(map(list, got[1])) == want[1],
    returns="(pair, new_words)",
    slips=(Slip(_unweighted, "weight each pair by its word's count: a word the text has 5 times adds "
                             "5 to each of its pairs"),
           Slip(_first_seen_wins_ties, "ties go to the smaller pair, not to the first one counted: "
                                       "min over (-count, pair)"),
           Slip(_right_to_left, "scan left to right: an occurrence that overlaps the one just merged "
                                "is not one ([a, a, a] with (a, a) gives [aa, a])")),
)


# ---- top_p --------------------------------------------------------------------------------


def top_p(z, p):
    """The nucleus of every row: with probabilities softmax(z) sorted down (ties by id, lower
    first), keep a token when the tokens ranked before it sum to less than p; the others'
    logits become -inf."""
    return top_p_filter(z, p)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _keep_where(z, order, keep_sorted):
    keep = np.zeros(z.shape, dtype=bool)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return np.where(keep, z, -np.inf)


def _drops_the_boundary_token(z, p):
    probs = _softmax(z)
    order = np.argsort(-probs, axis=-1, kind="stable")
    return _keep_where(z, order, np.cumsum(np.take_along_axis(probs, order, -1), -1) < p)


def _ties_reversed(z, p):
    probs = _softmax(z)
    order = np.argsort(probs, axis=-1, kind="stable")[:, ::-1]
    sorted_probs = np.take_along_axis(probs, order, -1)
    return _keep_where(z, order, np.cumsum(sorted_probs, -1) - sorted_probs < p)


def _on_logits(z, p):
    order = np.argsort(-z, axis=-1, kind="stable")
    sorted_z = np.take_along_axis(z, order, -1)
    return _keep_where(z, order, np.cumsum(sorted_z, -1) - sorted_z < p)


def _same_filter(got, want) -> bool:
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return got.shape == want.shape and bool(np.array_equal(got, want))


TOP_P = OutputExercise(
    "top_p",
    """z: logits (B, V), float; p: a probability in (0, 1].
For each row, sort the probabilities softmax(z) from the largest down (tokens tied at the
same probability ranked by id, lower first) and keep the tokens whose predecessors in that
order sum to less than p: the smallest set of most likely tokens whose probabilities reach p.
Return z with every other token's logit set to -inf, shape (B, V).""",
    solution=top_p,
    cases=((np.array([[2.0, 1.0, 0.5, -1.0]]), 0.6),
           (np.array([[0.0, 3.0, 1.0], [1.0, 0.0, 3.0]]), 0.9),
           (np.array([[1.0, 1.0, 1.0, 0.0]]), 0.5),            # three tied: the lower ids first
           (np.array([[0.5, 2.5, -1.0, 1.5]]), 1.0),            # p = 1 keeps every token
           (np.array([[4.0, 0.0, 0.0]]), 0.01)),                # the first token is always kept
    draw=lambda rng: (2.0 * rng.standard_normal((int(rng.integers(1, 4)), int(rng.integers(3, 9)))),
                      float(rng.uniform(0.05, 0.99))),
    same=_same_filter,
    returns="z filtered, (B, V)",
    slips=(Slip(_drops_the_boundary_token, "keep the token whose cumulative probability first reaches "
                                           "p: compare the sum of the tokens ranked BEFORE each one"),
           Slip(_ties_reversed, "tied tokens are ranked by id, lower first: reversing an ascending sort "
                                "puts the higher id first (sort -probs with kind='stable')"),
           Slip(_on_logits, "p is a probability: take the softmax of the logits before summing")),
)

TEXT_EXERCISES = (BPE_MERGE, TOP_P)
