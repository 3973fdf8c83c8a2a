"""Language modelling on a text: the corpus, its split, random windows, bits per character.

Legend: B batch, T block size (the tokens a window feeds the model), N tokens of a text,
V vocabulary size.

The default corpus ships with every CPython: the help topics of ``pydoc_data.topics``
(English prose, grammar and code), their texts in sorted key order, joined by blank lines.
The last ``VAL_FRACTION`` of a text's characters is the validation split, never trained on.

A training batch is B random windows of T + 1 consecutive training tokens: the first T are
the input, the last T the labels (each token's label is the one after it).

Bits per character compares models whose tokenizers differ. The validation text is
tokenized on its own; every token but the first is scored exactly once, by the model
reading the tokens before it inside one window of at most T tokens:

    bpc = sum_p -ln p(token_p | its window's tokens before p) / ln 2 / (characters of the text)

Windows overlap by half (``window_plan``): after the first window, each scored token sees
at least T/2 tokens of context, at twice the cost of windows laid end to end (where the
first tokens of every window would see almost none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["VAL_FRACTION", "default_corpus", "load_text", "split_text", "encode_text",
           "TextData", "random_windows", "window_plan", "bits_per_char"]

VAL_FRACTION = 0.1


def default_corpus() -> str:
    """Python's help topics: the texts of ``pydoc_data.topics`` in sorted key order, joined by
    blank lines (~465,000 characters on CPython 3.11)."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[key] for key in sorted(topics))


def load_text(path: str | Path | None = None) -> str:
    """The text of a UTF-8 file, or the default corpus when ``path`` is None."""
    if path is None:
        return default_corpus()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--text {path}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"--text {path}: not UTF-8 text (byte {data[err.start]:#04x} at offset "
                         f"{err.start} cannot be decoded)") from None
    if not text:
        raise ValueError(f"--text {path}: the file is empty")
    return text


def split_text(text: str, val_fraction: float = VAL_FRACTION) -> tuple[str, str]:
    """(train, validation): the validation split is the last ``val_fraction`` of the characters."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction!r}")
    cut = len(text) - int(round(len(text) * val_fraction))
    if cut < 1 or cut >= len(text):
        raise ValueError(f"text: {len(text)} characters are too few to split off "
                         f"{val_fraction:.0%} for validation")
    return text[:cut], text[cut:]


def encode_text(tokenizer, text: str, what: str = "text") -> np.ndarray:
    """Token ids (N,) int64 of ``text``; the tokenizer's error, if any, says which character."""
    try:
        ids = tokenizer.encode(text)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    return np.asarray(ids, dtype=np.int64)


@dataclass
class TextData:
    """A text made ready for training: the training split as token ids, the validation split as text.

    ``min_tokens``: the training split must hold at least this many tokens (a window of
    ``block_size + 1``), else a clear error.
    """
    tokenizer: object
    train_ids: np.ndarray          # (N,) int64, the training split tokenized
    val_text: str                  # the validation split, scored by bits_per_char

    @classmethod
    def from_text(cls, text: str, tokenizer, block_size: int,
                  val_fraction: float = VAL_FRACTION) -> "TextData":
        train_text, val_text = split_text(text, val_fraction)
        train_ids = encode_text(tokenizer, train_text, "the training split")
        encode_text(tokenizer, val_text, "the validation split")      # fails now, not at evaluation
        if len(train_ids) < block_size + 1:
            raise ValueError(f"text: the training split has {len(train_ids)} tokens, fewer than one "
                             f"window of block_size + 1 = {block_size + 1}; use a longer text or a "
                             f"smaller --block-size")
        return cls(tokenizer, train_ids, val_text)


def random_windows(ids: np.ndarray, batch_size: int, block_size: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` windows of ``block_size + 1`` consecutive tokens at random starts:
    inputs (B, T) = window[:-1], labels (B, T) = window[1:]."""
    starts = rng.integers(0, len(ids) - block_size, size=batch_size)          # (B,)
    windows = ids[starts[:, None] + np.arange(block_size + 1)]                 # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def window_plan(n_tokens: int, block_size: int) -> list[tuple[int, int, int]]:
    """How bits_per_char covers N tokens: a list of (start, first, last) windows.

    A window feeds tokens start .. last - 1 (at most ``block_size`` of them) and scores
    tokens first .. last, each from the tokens before it in the window. Windows start
    every block_size // 2 tokens, and each scores only what no earlier window scored,
    so every token 1 .. N-1 is scored exactly once.
    """
    stride = max(1, block_size // 2)
    plan, scored, start = [], 0, 0           # tokens 1 .. scored are done
    while scored < n_tokens - 1:
        last = min(start + block_size, n_tokens - 1)
        plan.append((start, scored + 1, last))
        scored, start = last, start + stride
    return plan


def _log_probs_of(model, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ln p(targets) (B, T) in float64 from the model's logits for ``inputs`` (B, T)."""
    logits = model(inputs).astype(np.float64)                                  # (B, T, V)
    top = logits.max(axis=-1, keepdims=True)
    log_norm = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))         # (B, T)
    return np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0] - log_norm


def bits_per_char(model, tokenizer, text: str, block_size: int | None = None,
                  batch_size: int = 32) -> float:
    """Bits per character of ``text`` under a decoder-only model (see the module docstring).

    ``block_size`` (default: the model's ``max_len``) is the longest window fed to the model.
    Full windows go through the model ``batch_size`` at a time; the model is put in eval
    mode for the call and given back in the mode it was in.
    """
    block_size = model.config.max_len if block_size is None else int(block_size)
    if not 1 <= block_size <= model.config.max_len:
        raise ValueError(f"block_size: expected 1..{model.config.max_len} (the model's max_len), "
                         f"got {block_size}")
    if len(text) == 0:
        raise ValueError("text: expected at least one character, got an empty string")
    ids = encode_text(tokenizer, text)
    if len(ids) < 2:
        raise ValueError(f"text: {len(ids)} token(s); bits per character needs at least 2 "
                         f"(the first token is never scored)")
    plan = window_plan(len(ids), block_size)
    was_training = model.training
    model.eval()
    try:
        total = 0.0                                        # sum of -ln p over scored tokens
        full = [w for w in plan if w[2] - w[0] == block_size]
        for i in range(0, len(full), batch_size):
            group = np.array(full[i:i + batch_size])                             # (B, 3)
            positions = group[:, :1] + np.arange(block_size + 1)                 # (B, T + 1)
            windows = ids[positions]
            logp = _log_probs_of(model, windows[:, :-1], windows[:, 1:])         # (B, T)
            target_at = positions[:, 1:]                                         # token index of each label
            scored = (target_at >= group[:, 1:2]) & (target_at <= group[:, 2:3])
            total -= logp[scored].sum()
        for start, first, last in (w for w in plan if w[2] - w[0] != block_size):
            window = ids[start:last + 1][None]                                   # (1, <= T + 1)
            logp = _log_probs_of(model, window[:, :-1], window[:, 1:])[0]
            total -= logp[first - start - 1:].sum()
    finally:
        model.train(was_training)
    return total / math.log(2) / len(text)
