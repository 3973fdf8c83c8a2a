"""The vocabulary of the toy tasks: PAD 0, BOS 1, EOS 2, symbol i -> 3 + i, then SEP if asked.

A sequence is written as its symbols' integers ("3 1 4"); ``Vocab`` turns such text
into token ids and back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["PAD", "BOS", "EOS", "FIRST_SYMBOL", "Vocab", "check_special_ids"]

PAD, BOS, EOS = 0, 1, 2
FIRST_SYMBOL = 3          # symbol i is token id FIRST_SYMBOL + i
# the model config's field for each special id, and the id the toy tasks use for it
SPECIAL_IDS = {"pad_id": PAD, "bos_id": BOS, "eos_id": EOS}

_SPECIAL_NAMES = {PAD: "<pad>", BOS: "<bos>", EOS: "<eos>"}
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class Vocab:
    """Token ids of a toy task: PAD 0, BOS 1, EOS 2, symbol i -> 3 + i, then SEP if asked.

    Text convention: a sequence is written as its symbols' integers separated by
    spaces (commas also separate), so "3 1 4" is symbols 3, 1, 4, which are token
    ids 6, 4, 7. Special tokens are written <pad>, <bos>, <eos>, <sep>.

    >>> v = Vocab(10)
    >>> v.encode("3 1 4")
    array([6, 4, 7])
    >>> v.decode([1, 6, 4, 7, 2, 0])
    '3 1 4'
    >>> v.format([1, 6, 4, 7, 2, 0])
    '<bos> 3 1 4 <eos> <pad>'
    """

    n_symbols: int
    with_sep: bool = False

    def __post_init__(self):
        if isinstance(self.n_symbols, bool) or not isinstance(self.n_symbols, (int, np.integer)) \
                or self.n_symbols < 1:
            raise ValueError(f"n_symbols: expected an integer >= 1, got {self.n_symbols!r}")

    @property
    def size(self) -> int:
        """Number of token ids: 3 + n_symbols, plus 1 with SEP. This is the model's vocab_size."""
        return FIRST_SYMBOL + self.n_symbols + (1 if self.with_sep else 0)

    @property
    def sep(self) -> int | None:
        """SEP's id (3 + n_symbols), or None when the vocabulary has no SEP."""
        return FIRST_SYMBOL + self.n_symbols if self.with_sep else None

    def symbol_ids(self) -> np.ndarray:
        """The token ids of all symbols, in symbol order."""
        return np.arange(FIRST_SYMBOL, FIRST_SYMBOL + self.n_symbols, dtype=np.int64)

    def token_name(self, token_id: int) -> str:
        """How one id is written: the symbol's integer, or <pad>/<bos>/<eos>/<sep>."""
        token_id = int(token_id)
        if token_id in _SPECIAL_NAMES:
            return _SPECIAL_NAMES[token_id]
        if FIRST_SYMBOL <= token_id < FIRST_SYMBOL + self.n_symbols:
            return str(token_id - FIRST_SYMBOL)
        if token_id == self.sep:
            return "<sep>"
        raise ValueError(f"token id {token_id} out of range for vocab_size {self.size} "
                         f"(ids 0..{self.size - 1})")

    def _token_id(self, token: str, allow_special: bool) -> int:
        specials = {name: i for i, name in _SPECIAL_NAMES.items()}
        if self.with_sep:
            specials["<sep>"] = self.sep
        if token.lower() in specials:
            if not allow_special:
                raise ValueError(f"token {token!r}: a sequence to encode holds symbols only "
                                 f"(the integers 0..{self.n_symbols - 1}), not special tokens")
            return specials[token.lower()]
        if re.fullmatch(r"[+-]?\d+", token) and 0 <= int(token) < self.n_symbols:
            return FIRST_SYMBOL + int(token)
        names = ", ".join(specials) if allow_special else ""
        raise ValueError(f"token {token!r} is not a symbol: symbols are the integers "
                         f"0..{self.n_symbols - 1}, separated by spaces (e.g. '3 1 4')"
                         + (f"; special tokens are {names}" if names else ""))

    def parse(self, text: str) -> np.ndarray:
        """Text -> int64 token ids, every token kept; the inverse of ``format``.

        Accepts symbols ("0".."n_symbols-1") and special names (<pad> <bos> <eos>
        <sep>), separated by spaces or commas. An empty string gives an empty array.
        """
        if not isinstance(text, str):
            raise TypeError(f"text: expected a string such as '3 1 4', got {type(text).__name__}")
        tokens = [t for t in _SEPARATORS.split(text.strip()) if t]
        return np.array([self._token_id(t, allow_special=True) for t in tokens], dtype=np.int64)

    def format(self, ids) -> str:
        """Token ids -> text, every id written (specials by name); the inverse of ``parse``."""
        ids = self._check_ids(ids)
        return " ".join(self.token_name(i) for i in ids)

    def encode(self, text: str) -> np.ndarray:
        """A source sequence as a person types it ("3 1 4") -> int64 token ids (symbols only)."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a string such as '3 1 4', got {type(text).__name__}")
        tokens = [t for t in _SEPARATORS.split(text.strip()) if t]
        if not tokens:
            raise ValueError(f"empty sequence: type at least one symbol, integers "
                             f"0..{self.n_symbols - 1} separated by spaces (e.g. '3 1 4')")
        return np.array([self._token_id(t, allow_special=False) for t in tokens], dtype=np.int64)

    def decode(self, ids) -> str:
        """A model's output -> text: stops at the first EOS, drops PAD and BOS.

        1-D ids only; use ``decode_batch`` for a (B, T) array.
        """
        ids = self._check_ids(ids)
        names = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                names.append(self.token_name(i))
        return " ".join(names)

    def decode_batch(self, ids) -> list[str]:
        """``decode`` for every row of a (B, T) array."""
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"ids: expected a (B, T) array, got shape {ids.shape}")
        return [self.decode(row) for row in ids]

    def _check_ids(self, ids) -> list[int]:
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"ids: expected a 1-D array of integer token ids, "
                             f"got shape {ids.shape} dtype {ids.dtype.name}")
        bad = np.flatnonzero((ids < 0) | (ids >= self.size))
        if bad.size:
            raise ValueError(f"token id {int(ids[bad[0]])} out of range for vocab_size "
                             f"{self.size} (ids[{int(bad[0])}])")
        return [int(i) for i in ids]


def check_special_ids(config) -> None:
    """Refuse a model config (a ``TransformerConfig``) whose pad, bos or eos id is not the toy
    tasks' (PAD 0, BOS 1, EOS 2): their batches are padded, started and ended with these ids,
    so a model that reads others would mask, ignore and stop at the wrong tokens."""
    for name, task_id in SPECIAL_IDS.items():
        if getattr(config, name) != task_id:
            raise ValueError(f"{name}: the toy tasks' batches use {task_id} (PAD {PAD}, BOS {BOS}, "
                             f"EOS {EOS}), the model config has {name}={getattr(config, name)!r}; "
                             f"a model for these tasks needs {name}={task_id}")


def as_vocab(vocab) -> Vocab:
    """A Vocab as given, or Vocab(n) for an integer n (the number of symbols)."""
    if isinstance(vocab, Vocab):
        return vocab
    if isinstance(vocab, (int, np.integer)) and not isinstance(vocab, bool):
        return Vocab(int(vocab))
    raise TypeError(f"vocab: expected a Vocab or the number of symbols, got {type(vocab).__name__}")
