"""An exercise on LoRA that the fine-tuning notebook leaves to the reader: the adapter's backward
with dropout on its input (PEFT's ``lora_dropout``), which the package's LoRALinear does not have.

Legend: N batch (B is the adapter's second matrix), T time, I in features, O out features, r the rank.
"""

from __future__ import annotations

from .grading import Exercise, Mistake
from .modern import rows

SCALE = 2.0     # s = alpha / r: not 1, so that a forgotten s shows
P_DROP = 0.25   # dropout probability: 1 / (1 - p) = 4/3


def _dropped(x, keep):
    """Inverted dropout with a given mask: x * keep / (1 - p)."""
    return x * keep / (1.0 - P_DROP)


def _lora_dropout(x, A, B, keep):
    return SCALE * (_dropped(x, keep) @ A) @ B


def lora_dropout_backward(x, A, B, keep, dy):
    """Forward u = drop(x) = x * keep / (1 - p), h = u A, dy_lora = s h B. Back through each line:
    dB = s h^T dy, dh = s dy B^T, dA = u^T dh (A multiplied the dropped x, not x), du = dh A^T, and
    dropout passes the gradient where it passed the value, scaled alike: dx = du * keep / (1 - p)."""
    u = _dropped(x, keep)                                   # (N, T, I)
    h = u @ A                                               # (N, T, r)
    dh = SCALE * dy @ B.T                                   # (N, T, r)
    return _dropped(dh @ A.T, keep), rows(u).T @ rows(dh), SCALE * rows(h).T @ rows(dy)


LORA_DROPOUT = Exercise(
    "lora_dropout",
    f"""y = s * (drop(x) @ A) @ B, the adapter path of a LoRA layer with dropout on its input (as PEFT's
lora_dropout): drop(x) = x * keep / (1 - p), keep a fixed boolean mask, p = {P_DROP}, s = {SCALE:g},
x (N, T, I), A (I, r), B (r, O), keep (N, T, I) -> y (N, T, O).
dy (N, T, O) is dL/dy. Return (dx, dA, dB), shaped like x, A and B (keep has no gradient).""",
    forward=_lora_dropout,
    solution=lora_dropout_backward,
    build=lambda rng: (rng.standard_normal((2, 3, 5)), rng.standard_normal((5, 2)), rng.standard_normal((2, 7)),
                       rng.random((2, 3, 5)) >= P_DROP),
    grads=("dx", "dA", "dB"),
    mistakes=(
        Mistake("dx", lambda x, A, B, keep, dy: SCALE * dy @ B.T @ A.T,
                "x reached A through dropout: on the way back the same mask and the same 1 / (1 - p) "
                "apply, dx = (dh A^T) * keep / (1 - p)"),
        Mistake("dA", lambda x, A, B, keep, dy: rows(x).T @ rows(SCALE * dy @ B.T),
                "A multiplied the dropped input, not x: dA = drop(x)^T dh"),
    ),
    factor_hint="a constant factor here comes from s = alpha / r or from inverted dropout's 1 / (1 - p), "
                "which scales what it keeps, forward and backward",
)

ADAPTER_EXERCISES = (LORA_DROPOUT,)
