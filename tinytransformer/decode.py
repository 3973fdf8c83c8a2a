"""Generation: greedy decoding.

Legend: B batch, S source length, t tokens generated so far, V vocabulary size.
"""

from __future__ import annotations

import numpy as np

from .nn.transformer import Transformer
from .tasks import BOS, EOS, PAD


def greedy_decode(model: Transformer, src_ids: np.ndarray, max_len: int, use_cache: bool = True,
                  stop_at_eos: bool = True) -> np.ndarray:
    """Pick the most likely next token, one step at a time, from BOS.

    Returns (B, <= max_len) generated token ids without the BOS: each row ends
    at its EOS and is PAD after it. The encoder runs once; the decoder reruns
    on the whole prefix at each step.
    """
    if max_len < 1 or max_len > model.config.max_len:
        raise ValueError(f"max_len: expected 1..{model.config.max_len} (the model's max_len), got {max_len}")
    was_training = model.training
    model.eval()
    try:
        memory, src_keys = model.encode(src_ids)                    # (B, S, D)
        B = src_ids.shape[0]
        tokens = np.full((B, 1), BOS, dtype=np.int64)               # (B, 1 + t)
        finished = np.zeros(B, dtype=bool)
        for _ in range(max_len):
            logits = model.decode(tokens, memory, src_keys)          # (B, 1 + t, V)
            next_token = logits[:, -1].argmax(axis=-1)               # (B,)
            next_token[finished] = PAD
            tokens = np.concatenate([tokens, next_token[:, None]], axis=1)
            finished |= next_token == EOS
            if stop_at_eos and finished.all():
                break
    finally:
        model.train(was_training)
    return tokens[:, 1:]
