"""Judging a model: greedy decoding of a held-out set, exact match overall and per length.

``evaluate`` scores; ``solved`` is the reference run's stop rule; ``eval_rank`` orders
evaluations so that the kept checkpoint is the best one by that rule.
"""

from __future__ import annotations

import numpy as np

from . import decode
from .nn.module import Module
from .tasks import PAD, Batch, LMBatch
from .vocab import check_special_ids

__all__ = ["evaluate", "solved", "eval_rank"]


def _generate(model: Module, data: Batch | LMBatch, rows: np.ndarray, width: int) -> np.ndarray:
    """Greedy outputs (len(rows), <= width) for the given rows, without BOS/prompt."""
    if isinstance(data, LMBatch):
        n_prompt = int(data.prompt_mask[rows[0]].sum())      # rows share one prompt length
        return decode.generate(model, data.prompt[rows, :n_prompt], width)
    n_src = int(data.src_mask[rows].sum(1).max())
    return decode.greedy_decode(model, data.src[rows, :n_src], width)


def evaluate(model: Module, data: Batch | LMBatch) -> dict:
    """Greedy decoding of every example of ``data`` (a Batch, or an LMBatch for decoder-only).

    token_accuracy: the fraction of answer tokens (target and EOS) the output gets right,
                    position by position, each output token following the model's own
                    previous tokens (free running, no teacher forcing);
    exact_match:    the fraction of examples whose output is the whole answer, EOS included;
    by_length:      {source length: exact match of the examples of that length};
    worst_length, worst: the length with the lowest exact match (the shortest of any tie)
                    and that exact match.
    Examples are decoded in groups of equal source length, so no group waits for a longer one.
    The model's special ids (``model.config``) must be the toy tasks' (a clear error otherwise).
    """
    check_special_ids(model.config)
    answer = data.answer if isinstance(data, LMBatch) else data.labels       # (N, Ta)
    lengths = (data.prompt_mask if isinstance(data, LMBatch) else data.src_mask).sum(1)
    correct_tokens = exact = 0
    by_length = {}
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        want = answer[rows]
        want = want[:, :int((want != PAD).sum(1).max())]                         # (b, Ta)
        out = _generate(model, data, rows, want.shape[1])
        got = np.full(want.shape, PAD, dtype=np.int64)
        got[:, :out.shape[1]] = out[:, :want.shape[1]]
        real = want != PAD
        correct_tokens += int(((got == want) & real).sum())
        right = ((got == want) | ~real).all(1)                                 # (b,)
        exact += int(right.sum())
        source_length = int(length) - 1 if isinstance(data, LMBatch) else int(length)  # s SEP
        by_length[source_length] = float(right.mean())
    worst_length = min(by_length, key=by_length.get)
    return {"exact_match": exact / len(answer), "token_accuracy": correct_tokens / int((answer != PAD).sum()),
            "n": len(answer), "by_length": by_length, "worst_length": worst_length,
            "worst": by_length[worst_length]}


def solved(scores: dict, config) -> bool:
    """The stop rule: exact match >= target overall and >= target_worst at every length.

    ``config``: anything with ``target`` and ``target_worst`` (a ``TrainConfig``).
    """
    return scores["exact_match"] >= config.target and scores["worst"] >= config.target_worst


def eval_rank(entry: dict, config) -> tuple:
    """Orders evaluations from worst to best: solved first, then the worst length, then overall."""
    return solved(entry, config), entry["worst"], entry["exact_match"]
