"""Token ids handed to ``decode``: Python or NumPy integers, checked one by one."""

from __future__ import annotations

import numbers

__all__ = ["check_token_ids"]


def check_token_ids(ids, vocab_size: int) -> list[int]:
    """``ids`` as a list of Python ints, refusing a non-integer or an id outside 0 .. vocab_size - 1
    by its position: ``ValueError: ids[3] is 300: expected an id in 0 .. 255``."""
    checked = []
    for position, token_id in enumerate(ids):
        if isinstance(token_id, bool) or not isinstance(token_id, numbers.Integral):
            raise ValueError(f"ids[{position}] is {token_id!r}: expected an integer token id")
        if not 0 <= token_id < vocab_size:
            raise ValueError(f"ids[{position}] is {token_id}: expected an id in 0 .. {vocab_size - 1}")
        checked.append(int(token_id))
    return checked
