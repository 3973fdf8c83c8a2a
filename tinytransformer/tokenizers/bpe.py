"""Byte-pair encoding (Sennrich et al. 2016; byte-level as in GPT-2): the algorithm itself.

A token is a byte string. Text is cut into pre-tokens (``gpt2_pattern``); each
pre-token starts as its single bytes, and merges never cross from one pre-token
into the next.

Training: count adjacent pairs, merge the most frequent, repeat.

    b"abab", b" abc", b" ab"     pairs: (a, b) 4 times, ( , a) 2, (b, a) 1, (b, c) 1
    merge (a, b) -> "ab"         now b"abab" is [ab, ab], b" abc" is [ , ab, c], ...
    count again, merge again, until the vocabulary has the size asked for

A merge is a pair (left, right); its rank is its place in the list (0 = learned
first). Ties between equally frequent pairs go to the smaller pair, comparing the
left tokens' bytes and then the right tokens': the same merges on every run and
machine, whatever the order of the text.

Encoding applies the merges by rank, never left to right: of the pairs in the
pre-token, merge the one learned first (every occurrence of it), and repeat until
no pair is a merge. Decoding concatenates the tokens' bytes.

Both training loops take each distinct pre-token once, with its count (a text
repeats its words: the default corpus's 103,139 pre-tokens are 6,025 distinct ones).
``learn_merges`` is the plain loop; ``learn_merges_incremental`` gives the same merges
(a test holds them equal) and is the one ``BPETokenizer.train`` runs: after a merge it
updates only the pair counts of the pre-tokens that held the merged pair, instead of
recounting everything (1,000 merges on the default corpus: about a second instead of
over a minute on a 2-core machine).
"""

from __future__ import annotations

import heapq
import numbers
from collections import Counter, defaultdict

__all__ = ["apply_merges", "learn_merges", "learn_merges_incremental", "merge_pair", "single_bytes"]

Pair = tuple[bytes, bytes]


def merge_pair(tokens: list[bytes], pair: Pair) -> list[bytes]:
    """Replace every occurrence of ``pair`` in ``tokens``, left to right, by one token.

    [a, a, a] with (a, a) gives [aa, a]: an occurrence that overlaps the one just merged is not one.
    """
    left, right = pair
    merged, i = [], 0
    while i < len(tokens):
        if i + 1 < len(tokens) and tokens[i] == left and tokens[i + 1] == right:
            merged.append(left + right)
            i += 2
        else:
            merged.append(tokens[i])
            i += 1
    return merged


def single_bytes(data: bytes) -> list[bytes]:
    """b"hi" -> [b"h", b"i"]: where every pre-token starts."""
    return [bytes([byte]) for byte in data]


def _check_vocab_size(vocab_size: int) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) or vocab_size < 256:
        raise ValueError(f"vocab_size: expected an integer >= 256 (the 256 bytes, then one per merge), "
                         f"got {vocab_size!r}")


def learn_merges(pre_token_counts: dict[bytes, int], vocab_size: int) -> list[Pair]:
    """The merges that grow the 256 byte tokens into ``vocab_size`` tokens, in the order learned.

    ``pre_token_counts``: each distinct pre-token (UTF-8 bytes) and how often the text has it.
    Stops early when no pre-token has two tokens left to merge.
    """
    _check_vocab_size(vocab_size)
    split = {pre_token: single_bytes(pre_token) for pre_token in pre_token_counts}
    vocabulary = {bytes([byte]) for byte in range(256)}
    merges = []
    while len(vocabulary) < vocab_size:
        # count adjacent pairs
        pair_counts = Counter()
        for pre_token, tokens in split.items():
            for pair in zip(tokens, tokens[1:]):
                pair_counts[pair] += pre_token_counts[pre_token]
        if not pair_counts:
            break
        # merge the most frequent (ties: the smaller pair)
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        merges.append(best)
        vocabulary.add(best[0] + best[1])
        split = {pre_token: merge_pair(tokens, best) for pre_token, tokens in split.items()}
    return merges


def learn_merges_incremental(pre_token_counts: dict[bytes, int], vocab_size: int) -> list[Pair]:
    """``learn_merges``, with the pair counts kept up to date instead of recounted.

    ``holders[pair]``: the pre-tokens that (may) hold ``pair``. Merging a pair changes
    only those: their old pairs' counts go down, their new pairs' counts go up.
    The most frequent pair comes from a heap of (-count, pair) entries; an entry whose
    count is no longer the pair's count is stale (a newer entry was pushed) and skipped.
    """
    _check_vocab_size(vocab_size)
    pre_tokens = list(pre_token_counts)
    split = [single_bytes(pre_token) for pre_token in pre_tokens]
    pair_counts, holders = Counter(), defaultdict(set)
    for i, tokens in enumerate(split):
        for pair in zip(tokens, tokens[1:]):
            pair_counts[pair] += pre_token_counts[pre_tokens[i]]
            holders[pair].add(i)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    vocabulary = {bytes([byte]) for byte in range(256)}
    merges = []
    while len(vocabulary) < vocab_size and heap:
        negative_count, best = heapq.heappop(heap)
        if pair_counts[best] != -negative_count:
            continue
        merges.append(best)
        vocabulary.add(best[0] + best[1])
        changed = set()
        for i in holders.pop(best):
            count, old = pre_token_counts[pre_tokens[i]], split[i]
            new = merge_pair(old, best)
            for pair in zip(old, old[1:]):
                pair_counts[pair] -= count
                changed.add(pair)
            for pair in zip(new, new[1:]):
                pair_counts[pair] += count
                holders[pair].add(i)
                changed.add(pair)
            split[i] = new
        for pair in changed:
            if pair_counts[pair] > 0:
                heapq.heappush(heap, (-pair_counts[pair], pair))
    return merges


def apply_merges(tokens: list[bytes], merge_ranks: dict[Pair, int]) -> list[bytes]:
    """Merge by rank: while some adjacent pair is a merge, merge the lowest-ranked one (every
    occurrence), as GPT-2's encoder does. ``merge_ranks``: pair -> its place in the merges."""
    while len(tokens) > 1:
        best = min(zip(tokens, tokens[1:]), key=lambda pair: merge_ranks.get(pair, len(merge_ranks)))
        if best not in merge_ranks:
            return tokens
        tokens = merge_pair(tokens, best)
    return tokens
