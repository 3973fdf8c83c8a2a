"""Toy sequence-to-sequence tasks and their padded batches (the vocabulary is in vocab.py).

Legend: B batch, Ts source time, Tt target time (decoder input and labels),
T time of a decoder-only sequence, L a sequence's length before padding.

Vocabulary: PAD = 0, BOS = 1, EOS = 2, and symbol i is token id 3 + i. A
decoder-only model also needs a separator between the source and the target;
``Vocab(n_symbols, with_sep=True)`` adds SEP as the id right after the last
symbol (3 + n_symbols), so no other id moves. A model reads its special ids from
its own config (``pad_id``, ``bos_id``, ``eos_id``); one trained or judged on these
tasks must have these three (``train`` and ``evaluate`` refuse others:
``vocab.check_special_ids``).

A task maps a source (1-D array of symbol token ids) to its target:
copy (the same), reverse (back to front), sort (ascending). Every batch is
drawn from a ``np.random.Generator`` that the caller passes in, so the same
seed always gives the same batches; nothing here touches global random state.

Encoder-decoder format (``Batch``), for a source s and target t:
    src    = s                padded with PAD to the batch's longest source
    tgt_in = [BOS] + t        padded with PAD to the batch's longest target + 1
    labels = t + [EOS]        padded likewise; PAD is ignored by the loss

Decoder-only format (``LMBatch``), one sequence  s SEP t EOS  per example:
    ids    = seq[:-1]         the model's input
    labels = seq[1:]          with every position that predicts the source or
                              SEP set to PAD, so the loss counts t and EOS only
    prompt = s SEP            what generation starts from
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .vocab import BOS, EOS, FIRST_SYMBOL, PAD, Vocab, as_vocab

__all__ = [
    "PAD", "BOS", "EOS", "FIRST_SYMBOL", "EVAL_SEED", "Vocab", "TASKS", "get_task",
    "copy_task", "reverse_task", "sort_task", "Batch", "batch_from_pairs", "make_batch", "batches",
    "eval_set", "LMBatch", "lm_prompt", "lm_sequence", "to_lm_batch", "make_lm_batch", "lm_batches",
    "lm_eval_set",
]

# The held-out evaluation set's seed. Training code seeds its own Generator;
# this one is kept apart from the small seeds (0, 1, 2, ...) training runs use.
EVAL_SEED = 20170612


# ---- tasks --------------------------------------------------------------------------------


def copy_task(src: np.ndarray) -> np.ndarray:
    """target = source."""
    return src.copy()


def reverse_task(src: np.ndarray) -> np.ndarray:
    """target = source back to front."""
    return src[::-1].copy()


def sort_task(src: np.ndarray) -> np.ndarray:
    """target = source in ascending order (symbol ids are ordered like the symbols)."""
    return np.sort(src)


TASKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": copy_task,
    "reverse": reverse_task,
    "sort": sort_task,
}


def get_task(task) -> Callable[[np.ndarray], np.ndarray]:
    """The target function of a task name in ``TASKS`` (a callable is returned as is)."""
    if callable(task):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: known tasks are {', '.join(sorted(TASKS))}")
    return TASKS[task]


# ---- encoder-decoder batches --------------------------------------------------------------


@dataclass
class Batch:
    """A padded batch for the encoder-decoder model (PAD = 0 after each sequence).

    src      (B, Ts) int64   source token ids
    tgt_in   (B, Tt) int64   [BOS] + target: the decoder's input
    labels   (B, Tt) int64   target + [EOS]: what the decoder must predict at each position
    src_mask (B, Ts) bool    True = a real source token
    tgt_mask (B, Tt) bool    True = a real decoder-input token (the same positions
                             as the non-PAD labels)
    n_tokens int             number of non-PAD labels (what the loss averages over)
    """

    src: np.ndarray
    tgt_in: np.ndarray
    labels: np.ndarray
    src_mask: np.ndarray
    tgt_mask: np.ndarray
    n_tokens: int

    def __len__(self) -> int:
        return self.src.shape[0]

    def chunks(self, size: int) -> Iterator["Batch"]:
        """Consecutive sub-batches of ``size`` rows (the last may be smaller), each
        trimmed to its own longest sequence. For evaluating a large set in pieces."""
        if size < 1:
            raise ValueError(f"size: expected a chunk size >= 1, got {size}")
        for start in range(0, len(self), size):
            rows = slice(start, start + size)
            Ts = int(self.src_mask[rows].sum(1).max())
            Tt = int(self.tgt_mask[rows].sum(1).max())
            labels = self.labels[rows, :Tt]
            yield Batch(src=self.src[rows, :Ts], tgt_in=self.tgt_in[rows, :Tt], labels=labels,
                        src_mask=self.src_mask[rows, :Ts], tgt_mask=self.tgt_mask[rows, :Tt],
                        n_tokens=int((labels != PAD).sum()))


def _check_lengths(min_len, max_len) -> None:
    for name, value in (("min_len", min_len), ("max_len", max_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    if min_len > max_len:
        raise ValueError(f"min_len ({min_len}) must not exceed max_len ({max_len})")


def _pad(rows: list[np.ndarray]) -> np.ndarray:
    """(B, longest) int64, each row left-aligned and followed by PAD."""
    out = np.full((len(rows), max(len(r) for r in rows)), PAD, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")


def _sources_of_lengths(vocab: Vocab, lengths: np.ndarray,
                        rng: np.random.Generator) -> list[np.ndarray]:
    """One source per entry of ``lengths`` (B,), symbols uniform."""
    symbols = rng.integers(0, vocab.n_symbols, size=(len(lengths), int(lengths.max())))
    return [FIRST_SYMBOL + symbols[i, :L] for i, L in enumerate(lengths)]


def _sample_sources(vocab: Vocab, batch_size: int, min_len: int, max_len: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """``batch_size`` sources, lengths uniform in [min_len, max_len], symbols uniform."""
    _check_batch_size(batch_size)
    _check_lengths(min_len, max_len)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    lengths = rng.integers(min_len, max_len + 1, size=batch_size)            # (B,)
    return _sources_of_lengths(vocab, lengths, rng)


def batch_from_pairs(sources: list[np.ndarray], targets: list[np.ndarray]) -> Batch:
    """Pad (source, target) token-id pairs into a Batch: tgt_in = [BOS]+t, labels = t+[EOS]."""
    if len(sources) != len(targets) or not sources:
        raise ValueError(f"expected as many targets as sources (at least one), "
                         f"got {len(sources)} sources and {len(targets)} targets")
    src = _pad(sources)                                                      # (B, Ts)
    tgt_in = _pad([np.concatenate([[BOS], t]) for t in targets])            # (B, Tt)
    labels = _pad([np.concatenate([t, [EOS]]) for t in targets])            # (B, Tt)
    return Batch(src=src, tgt_in=tgt_in, labels=labels, src_mask=src != PAD,
                 tgt_mask=tgt_in != PAD, n_tokens=int((labels != PAD).sum()))


def make_batch(task, vocab, batch_size: int, min_len: int, max_len: int,
               rng: np.random.Generator) -> Batch:
    """One random Batch of ``task`` ("copy", "reverse", "sort" or a callable).

    ``vocab`` is a Vocab or the number of symbols. Source lengths are uniform
    integers in [min_len, max_len] (both included), symbols uniform; every random
    number comes from ``rng``.
    """
    target_of = get_task(task)
    sources = _sample_sources(as_vocab(vocab), batch_size, min_len, max_len, rng)
    return batch_from_pairs(sources, [target_of(s) for s in sources])


def batches(task, vocab, batch_size: int, min_len: int, max_len: int,
            rng: np.random.Generator) -> Iterator[Batch]:
    """An endless stream of ``make_batch(task, vocab, batch_size, min_len, max_len, rng)``."""
    get_task(task)          # fail at the call, not at the first next()
    as_vocab(vocab)
    _check_lengths(min_len, max_len)
    while True:
        yield make_batch(task, vocab, batch_size, min_len, max_len, rng)


def eval_set(task, vocab, n: int = 3200, min_len: int = 1, max_len: int = 16,
             seed: int = EVAL_SEED) -> Batch:
    """The fixed held-out set: ``n`` examples, every length equally often, as ONE padded Batch.

    Lengths go min_len, min_len + 1, ..., max_len, min_len, ... in turn, so each
    length gets n // n_lengths examples (the first n % n_lengths lengths one more):
    a figure per length is then measured on as many sequences as any other, and the
    longest, hardest length cannot hide in the average. The default, 3,200 sequences
    of lengths 1..16, is the reference run's judge: 200 per length, so "99% at
    length 16" means at most 2 mistakes there. Symbols are drawn from ``seed``, a seed
    of its own (EVAL_SEED), so the set never depends on the training seed and is the
    same on every call. Use ``.chunks(size)`` to evaluate it in pieces.
    For length generalisation, ask for longer sequences than training saw, e.g.
    ``eval_set("reverse", 10, n=800, min_len=17, max_len=24)`` (within the model's max_len).
    Short sequences (there are only 10 of length 1 with 10 symbols) also turn up in
    training: held out means drawn separately, not guaranteed unseen.
    """
    target_of = get_task(task)
    _check_batch_size(n)
    _check_lengths(min_len, max_len)
    lengths = min_len + np.arange(n) % (max_len - min_len + 1)              # (n,)
    sources = _sources_of_lengths(as_vocab(vocab), lengths, np.random.default_rng(seed))
    return batch_from_pairs(sources, [target_of(s) for s in sources])


# ---- decoder-only (language-model) format -------------------------------------------------


@dataclass
class LMBatch:
    """A padded batch for the decoder-only model, one sequence  s SEP t EOS  per row.

    ids         (B, T)  int64  seq[:-1]: the model's input, PAD after each sequence
    labels      (B, T)  int64  seq[1:], PAD wherever the label is a source token or SEP
                               (and on padding), so the loss counts t and EOS only
    mask        (B, T)  bool   True = a real input token
    n_tokens    int            number of non-PAD labels (= len(t) + 1 summed over rows)
    prompt      (B, Tp) int64  s SEP, PAD after it: where generation starts
    prompt_mask (B, Tp) bool   True = a real prompt token
    answer      (B, Ta) int64  t + [EOS], PAD after it: what generation should produce
    """

    ids: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    n_tokens: int
    prompt: np.ndarray
    prompt_mask: np.ndarray
    answer: np.ndarray

    def __len__(self) -> int:
        return self.ids.shape[0]


def lm_prompt(src, vocab: Vocab) -> np.ndarray:
    """One source's prompt for generation: s + [SEP] (1-D int64)."""
    _require_sep(vocab)
    return np.concatenate([np.asarray(src, dtype=np.int64), [vocab.sep]])


def lm_sequence(src, tgt, vocab: Vocab) -> np.ndarray:
    """One training sequence: s + [SEP] + t + [EOS] (1-D int64)."""
    return np.concatenate([lm_prompt(src, vocab), np.asarray(tgt, dtype=np.int64), [EOS]])


def _require_sep(vocab) -> None:
    if not isinstance(vocab, Vocab) or not vocab.with_sep:
        raise ValueError("the decoder-only format needs a separator: use "
                         "Vocab(n_symbols, with_sep=True) (SEP = 3 + n_symbols)")


def to_lm_batch(batch: Batch, vocab: Vocab) -> LMBatch:
    """The same examples as ``batch``, in the decoder-only format (see ``LMBatch``)."""
    _require_sep(vocab)
    if batch.src.size and batch.src.max() >= vocab.sep:
        raise ValueError(f"batch holds token id {int(batch.src.max())}, not a symbol of "
                         f"{vocab} (symbols end below SEP = {vocab.sep})")
    ids, labels, prompts, answers = [], [], [], []
    for src_row, m_src, lab_row, m_tgt in zip(batch.src, batch.src_mask,
                                              batch.labels, batch.tgt_mask):
        s, answer = src_row[m_src], lab_row[m_tgt]           # answer = t + [EOS]
        seq = np.concatenate([lm_prompt(s, vocab), answer])  # s SEP t EOS
        row_labels = seq[1:].copy()
        # label i is seq[i+1]; for i < len(s) that is a source token or SEP: not learnable
        row_labels[:len(s)] = PAD
        ids.append(seq[:-1])
        labels.append(row_labels)
        prompts.append(seq[:len(s) + 1])
        answers.append(answer)
    ids, labels, prompt = _pad(ids), _pad(labels), _pad(prompts)
    return LMBatch(ids=ids, labels=labels, mask=ids != PAD, n_tokens=int((labels != PAD).sum()),
                   prompt=prompt, prompt_mask=prompt != PAD, answer=_pad(answers))


def make_lm_batch(task, vocab: Vocab, batch_size: int, min_len: int, max_len: int,
                  rng: np.random.Generator) -> LMBatch:
    """``make_batch`` in the decoder-only format; ``vocab`` must have SEP."""
    _require_sep(vocab)
    return to_lm_batch(make_batch(task, vocab, batch_size, min_len, max_len, rng), vocab)


def lm_batches(task, vocab: Vocab, batch_size: int, min_len: int, max_len: int,
               rng: np.random.Generator) -> Iterator[LMBatch]:
    """An endless stream of ``make_lm_batch(...)``."""
    _require_sep(vocab)
    for batch in batches(task, vocab, batch_size, min_len, max_len, rng):
        yield to_lm_batch(batch, vocab)


def lm_eval_set(task, vocab: Vocab, n: int = 3200, min_len: int = 1, max_len: int = 16,
                seed: int = EVAL_SEED) -> LMBatch:
    """``eval_set`` in the decoder-only format: the very same examples, one LMBatch."""
    _require_sep(vocab)
    return to_lm_batch(eval_set(task, vocab, n, min_len, max_len, seed), vocab)
