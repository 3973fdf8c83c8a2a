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
from .tasks import Batch

__all__ = ["train_step", "model_inputs"]


def model_inputs(batch) -> tuple:
    """What the model is called with: (src, tgt_in) for the encoder-decoder, (ids,) for a
    decoder-only model (an ``LMBatch`` of a toy task, a ``TextBatch`` of a text)."""
    return (batch.src, batch.tgt_in) if isinstance(batch, Batch) else (batch.ids,)


def train_step(model: Module, crit: CrossEntropyLoss, opt: Optimizer, batch,
               clip: float | None = None) -> tuple[float, float]:
    """One update of ``model`` from ``batch``; returns (loss, gradient norm before clipping)."""
    model.zero_grad()
    logits = model(*model_inputs(batch))                          # (B, T, V)
    loss = crit(logits, batch.labels)
    model.backward(crit.backward())
    norm = clip_grad_norm(model, clip) if clip else grad_norm(model)
    opt.step()
    return loss, norm
