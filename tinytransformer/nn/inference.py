"""Step-by-step inference: the layers and models run on new positions only, the past read from a KVCache.

Legend: B batch, Tn new positions, t positions fed so far, S source length, D d_model,
V vocabulary size.

Training never comes here. ``model.decode_step(ids, cache)`` (which calls the
functions below) gives the same logits as the last Tn rows of a full forward
over the whole prefix; ``decode.py`` builds greedy decoding, sampling and beam
search on it. Nothing is kept for backward: after a step, a model's ``backward``
says its caches were invalidated by inference.
"""

from __future__ import annotations

import numpy as np

from .config import check_model_ids
from .embedding import Embedding, embed_forward
from .kv_cache import AttentionCache, KVCache
from .layers import DecoderLayer, EncoderLayer, residual_forward
from .masks import real_tokens
from .module import Module


def encoder_layer_step(layer: EncoderLayer, x: np.ndarray, kv: AttentionCache,
                       mask: np.ndarray | None = None) -> np.ndarray:
    """``layer.forward`` for new positions x (B, Tn, D), the earlier keys and values read from ``kv``."""
    h = residual_forward(x, layer.norm1, lambda z: layer.self_attn.step(z, kv, mask),
                         layer.dropout1, layer.norm_first)
    return residual_forward(h, layer.norm2, layer.ff, layer.dropout2, layer.norm_first)


def decoder_layer_step(layer: DecoderLayer, y: np.ndarray, self_kv: AttentionCache,
                       cross_kv: AttentionCache, self_mask: np.ndarray | None = None,
                       memory_mask: np.ndarray | None = None) -> np.ndarray:
    """``layer.forward`` for new target positions y (B, Tn, D): ``self_kv`` holds the earlier
    positions' keys and values (y's own are appended), ``cross_kv`` the memory's."""
    h1 = residual_forward(y, layer.norm1, lambda z: layer.self_attn.step(z, self_kv, self_mask),
                          layer.dropout1, layer.norm_first)
    h2 = residual_forward(h1, layer.norm2,
                          lambda z: layer.cross_attn.step(z, cross_kv, memory_mask, append=False),
                          layer.dropout2, layer.norm_first)
    return residual_forward(h2, layer.norm3, layer.ff, layer.dropout3, layer.norm_first)


def step_inputs(model: Module, embed: Embedding, name: str, ids: np.ndarray, cache: KVCache):
    """The start of every decoding step: the Tn new tokens embedded at their true positions
    cache.length .. cache.length + Tn - 1 (B, Tn, D), and their self-attention mask
    (B, 1, Tn, cache.length + Tn): causal among the new tokens, padding keys hidden."""
    if model.training:
        raise RuntimeError(f"{type(model).__name__}.decode_step is inference only: call model.eval() "
                           f"first (dropout would make it differ from forward)")
    check_model_ids(name, ids, model.config)
    if ids.shape[0] != cache.token_mask.shape[0]:
        raise ValueError(f"{name}: batch size {ids.shape[0]} differs from the cache's "
                         f"{cache.token_mask.shape[0]}")
    start, end = cache.length, cache.length + ids.shape[1]
    if end > cache.capacity:
        raise ValueError(f"{name}: positions {start}..{end - 1} do not fit the cache's capacity "
                         f"{cache.capacity}")
    x = embed_forward(embed, model.pos, ids, offset=start, scale=model.config.embed_scale)   # (B, Tn, D)
    cache.token_mask[:, start:end] = real_tokens(ids, model.config.pad_id)
    cache.length = end
    # new token i sits at position start + i: it sees keys 0 .. start + i
    self_mask = np.tri(ids.shape[1], end, start, dtype=bool) & cache.token_mask[:, None, None, :end]
    return x, self_mask


def seq2seq_cache(model, memory: np.ndarray, src_keys: np.ndarray, capacity: int | None) -> KVCache:
    """An empty KVCache for a Transformer's decoder, with the cross-attention keys and values of
    ``memory`` (B, S, D) computed once."""
    c = model.config
    capacity = c.max_len if capacity is None else capacity
    cache = KVCache.empty(len(model.decoder.layers), memory.shape[0], c.kv_heads, capacity,
                          c.d_model // c.n_heads, memory.dtype)
    cache.cross_attn = [AttentionCache.filled(*layer.cross_attn.project_kv(memory))
                        for layer in model.decoder.layers]
    cache.src_keys = src_keys
    return cache


def seq2seq_step(model, tgt_ids: np.ndarray, cache: KVCache) -> np.ndarray:
    """Logits (B, Tn, V) of Tn new target tokens of a Transformer, the earlier ones in ``cache``."""
    y, self_mask = step_inputs(model, model.tgt_embed, "tgt_ids", tgt_ids, cache)
    for layer, self_kv, cross_kv in zip(model.decoder.layers, cache.self_attn, cache.cross_attn):
        y = decoder_layer_step(layer, y, self_kv, cross_kv, self_mask, cache.src_keys)
    if hasattr(model.decoder, "norm"):
        y = model.decoder.norm(y)
    return model.out_proj(y)                                                 # (B, Tn, V)


def lm_cache(model, batch_size: int, capacity: int | None) -> KVCache:
    """An empty KVCache for a DecoderOnlyTransformer's blocks."""
    c = model.config
    capacity = c.max_len if capacity is None else capacity
    return KVCache.empty(len(model.layers), batch_size, c.kv_heads, capacity, c.d_model // c.n_heads,
                         model.dtype)


def lm_step(model, ids: np.ndarray, cache: KVCache) -> np.ndarray:
    """Logits (B, Tn, V) of Tn new tokens of a DecoderOnlyTransformer, the earlier ones in ``cache``."""
    x, self_mask = step_inputs(model, model.embed, "ids", ids, cache)
    for layer, kv in zip(model.layers, cache.self_attn):
        x = encoder_layer_step(layer, x, kv, self_mask)
    if hasattr(model, "norm"):
        x = model.norm(x)
    return model.out_proj(x)                                                 # (B, Tn, V)
