"""Cross-entropy loss over token logits.

Legend: N number of target positions (all leading axes flattened), V vocabulary size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .functional import log_softmax
from .module import Module, check_float_input


class CrossEntropyCache(NamedTuple):
    logp: np.ndarray        # (N, V) log-probabilities
    labels: np.ndarray      # (N,) class ids (0 where ignored)
    keep: np.ndarray        # (N,) bool, False where the label is ignore_index
    n: int                  # number of kept positions
    shape: tuple            # the logits' shape


class CrossEntropyLoss(Module):
    """Mean over non-ignored positions of -sum_v q_v log p_v, p = softmax(logits).

    The target distribution q puts 1 - eps on the label and spreads eps
    uniformly over all V classes (label smoothing with PyTorch's meaning):
        q = (1 - eps) * onehot(label) + eps / V
    Positions whose label equals ``ignore_index`` count for nothing, neither in
    the sum nor in the number n it is divided by.

    Backward: d loss / d logits = (p - q) / n on kept positions, 0 on ignored ones.
    ``backward(dout=1.0)`` scales that by the gradient of whatever uses the loss.
    log p is computed as logits - logsumexp(logits), stable for huge logits (``log_softmax``,
    a few rows at a time: nn/functional.py).
    """

    def __init__(self, ignore_index: int | None = None, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing}")
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        check_float_input("logits", logits)
        V = logits.shape[-1]
        if not isinstance(targets, np.ndarray) or targets.dtype.kind not in "iu":
            got = targets.dtype.name if isinstance(targets, np.ndarray) else type(targets).__name__
            raise TypeError(f"targets: expected an integer array of class ids, got {got}")
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f"targets: expected shape {logits.shape[:-1]} (logits.shape[:-1]), "
                             f"got {targets.shape}")
        labels = targets.reshape(-1)                                  # (N,)
        keep = (labels != self.ignore_index) if self.ignore_index is not None else np.ones(labels.shape, bool)
        n = int(keep.sum())
        if n == 0:
            raise ValueError("targets: every position equals ignore_index "
                             f"({self.ignore_index}), so there is no token to average the loss over")
        bad = keep & ((labels < 0) | (labels >= V))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"targets: class id {labels[i]} out of range for {V} classes "
                             f"(flat position {i})")
        z = logits.reshape(-1, V)                                     # (N, V)
        logp = log_softmax(z)                        # (N, V): z - max - log(sum(exp(z - max)))
        safe_labels = np.where(keep, labels, 0)
        nll = -logp[np.arange(len(labels)), safe_labels]              # (N,)
        eps = self.label_smoothing
        per_position = (1.0 - eps) * nll - eps * logp.mean(axis=1)    # mean = sum / V
        loss = float((per_position * keep).sum() / n)
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss is {loss}: the logits contain non-finite values "
                                     f"(max |logit| = {np.abs(z).max()}); training has diverged")
        self.cache = CrossEntropyCache(logp, safe_labels, keep, n, logits.shape)
        return loss

    def backward(self, dout: float = 1.0) -> np.ndarray:
        logp, labels, keep, n, shape = self._saved()
        # forward was loss = sum_kept(-sum_v q_v logp_v) / n, and d(-sum q logp)/dz = p - q
        dz = np.exp(logp)                                             # p, (N, V)
        eps = self.label_smoothing
        dz -= eps / logp.shape[1]
        dz[np.arange(len(labels)), labels] -= 1.0 - eps
        dz *= (keep * (dout / n))[:, None].astype(dz.dtype)
        return dz.reshape(shape)
