"""Attention masks: boolean, True means "may attend", broadcast to the scores (B, H, Tq, Tk).

Legend: B batch, H heads, T time, Tq query positions, Tk key positions.

Only keys are masked: a query at a padded position is computed like any other
(the loss ignores it). Masks combine with ``&``. Padding is the token id ``pad_id``
(a model passes its ``config.pad_id``); ``pad_id=None`` means the vocabulary has no
padding, and no key is masked for it.
"""

from __future__ import annotations

import numpy as np


def causal_mask(T: int) -> np.ndarray:
    """(T, T) boolean, True where key j <= query i: no position sees the future.

    >>> causal_mask(3).astype(int)
    array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 1]])
    """
    return np.tril(np.ones((T, T), dtype=bool))


def real_tokens(ids: np.ndarray, pad_id: int | None) -> np.ndarray:
    """(B, T) boolean, True where the token is not padding: ids != pad_id, or all True when
    pad_id is None (no id is padding).

    >>> real_tokens(np.array([[5, 6, 0]]), pad_id=0).astype(int)
    array([[1, 1, 0]])
    >>> real_tokens(np.array([[5, 6, 0]]), pad_id=None).astype(int)
    array([[1, 1, 1]])
    """
    return np.ones(ids.shape, dtype=bool) if pad_id is None else ids != pad_id


def padding_mask(ids: np.ndarray, pad_id: int | None = 0) -> np.ndarray:
    """(B, 1, 1, T) boolean, True where the key is a real token (``real_tokens``).

    >>> padding_mask(np.array([[5, 6, 0], [7, 0, 0]])).astype(int)[:, 0, 0]
    array([[1, 1, 0],
           [1, 0, 0]])
    """
    return real_tokens(ids, pad_id)[:, None, None, :]


def causal_padding_mask(ids: np.ndarray, pad_id: int | None = 0) -> np.ndarray:
    """(B, 1, T, T): the decoder's self-attention mask, causal AND not padding.

    >>> causal_padding_mask(np.array([[5, 6, 0]])).astype(int)[0, 0]
    array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 0]])
    """
    return causal_mask(ids.shape[1]) & padding_mask(ids, pad_id)


def check_mask(mask, scores_shape: tuple) -> None:
    """Raise a clear error unless ``mask`` is boolean and broadcasts to the scores (B, H, Tq, Tk)."""
    if not isinstance(mask, np.ndarray) or mask.dtype != bool:
        got = mask.dtype.name if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TypeError(f"mask: expected a boolean array (True = may attend), got {got}")
    try:
        broadcast = np.broadcast_shapes(mask.shape, scores_shape)
    except ValueError:
        broadcast = None
    if broadcast != tuple(scores_shape):
        raise ValueError(f"mask: shape {mask.shape} does not broadcast to the attention scores "
                         f"(B, H, Tq, Tk) = {tuple(scores_shape)}; a per-sequence padding mask "
                         f"is (B, 1, 1, Tk) (see padding_mask), a 2-D mask is (Tq, Tk)")


def key_mask(name: str, token_mask, ids: np.ndarray, pad_id: int | None) -> np.ndarray:
    """(B, T) 'True = real token' -> (B, 1, 1, T) key mask; ``real_tokens(ids, pad_id)`` when
    ``token_mask`` is None (every key, when pad_id is None)."""
    if token_mask is None:
        token_mask = real_tokens(ids, pad_id)
    elif not isinstance(token_mask, np.ndarray) or token_mask.dtype != bool or token_mask.shape != ids.shape:
        got = (f"{token_mask.dtype.name} array of shape {token_mask.shape}"
               if isinstance(token_mask, np.ndarray) else type(token_mask).__name__)
        raise ValueError(f"{name}: expected a boolean array of shape {ids.shape} "
                         f"(True = real token), got {got}")
    return token_mask[:, None, None, :]
