"""One training step: five lines, always the same, and nothing else.

    model.zero_grad()
    logits = model(src, tgt_in)            # decoder-only: model(ids)
    loss = crit(logits, labels)            # PAD labels are ignored
    model.backward(crit.backward())
    opt.step()

plus, between the last two, the global gradient norm (clipped to ``clip`` if given).
``train`` calls this for every batch and keeps its bookkeeping (learning-rate schedule,
history, evaluation, checkpoints) around it. A loop of your own can call it, or write
the five lines out: the model holds NumPy's BLAS threads itself (``threads.py``), so
either runs as fast as ``train`` does.
"""

from __future__ import annotations

from .nn.loss import CrossEntropyLoss
from .nn.module import Module
from .optim import Optimizer, clip_grad_norm, grad_norm
from .tasks import Batch, LMBatch

__all__ = ["train_step", "model_inputs"]


def model_inputs(batch: Batch | LMBatch) -> tuple:
    """What the model is called with: (src, tgt_in) for the encoder-decoder, (ids,) for decoder-only."""
    return (batch.ids,) if isinstance(batch, LMBatch) else (batch.src, batch.tgt_in)


def train_step(model: Module, crit: CrossEntropyLoss, opt: Optimizer, batch: Batch | LMBatch,
               clip: float | None = None) -> tuple[float, float]:
    """One update of ``model`` from ``batch``; returns (loss, gradient norm before clipping)."""
    model.zero_grad()
    logits = model(*model_inputs(batch))                          # (B, T, V)
    loss = crit(logits, batch.labels)
    model.backward(crit.backward())
    norm = clip_grad_norm(model, clip) if clip else grad_norm(model)
    opt.step()
    return loss, norm
