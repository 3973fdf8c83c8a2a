"""The two models: the encoder-decoder Transformer and a decoder-only (GPT-style) model.

Legend: B batch, S source length, T target length, D d_model, V vocabulary size.

Masks come from ``config.pad_id`` (a key is masked where its id is padding; none
is when the vocabulary has no padding, ``pad_id`` None) unless given. A model's
``backward`` differentiates its last forward, once: it uses up what that forward kept,
and a second backward without a new forward raises. Each model's public methods hold
NumPy's BLAS threads themselves (``threads.py``), so a
learner's own loop runs as fast as ``train()``; a large training call splits its batch over
the cores (``batch_split.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..threads import holds_threads, products_shared
from . import inference
from .attention import MultiHeadAttention
from .batch_split import BatchSplit, joins_gradients, splits_batch
from .config import TransformerConfig, check_model_ids
from .embedding import (Embedding, LearnedPositionalEmbedding, SinusoidalPositionalEncoding,
                        embed_backward, embed_forward)
from .kv_cache import KVCache
from .layers import EncoderLayer
from .linear import Linear
from .masks import causal_mask, key_mask
from .module import InvalidatedByInference, Module, UsedByBackward, check_upstream, default_rng
from .normalization import make_norm
from .overlap import overlap_param_grads
from .stacks import Decoder, Encoder


class ModelCache(NamedTuple):
    logits_shape: tuple     # (B, T, V): what backward's dlogits must be


def make_positional(config: TransformerConfig, rng, dtype) -> Module | None:
    """The module that adds positions to the embeddings, or None when nothing is added
    ("rope" and "alibi" act inside self-attention; "none" has no positions)."""
    if config.positional == "learned":
        return LearnedPositionalEmbedding(config.max_len, config.d_model, rng=rng, dtype=dtype)
    if config.positional == "sinusoidal":
        return SinusoidalPositionalEncoding(config.d_model, config.max_len, dtype=dtype)
    return None


def shared_if_large(model: Module, tokens: int):
    """The products of ``tokens`` tokens through ``model`` on every thread, when they are large
    enough to gain from it (``threads.products_shared``; the model's weights in its products
    are its multiply-adds per token)."""
    per_token = model.multiply_adds_per_token
    return products_shared(tokens * per_token, weights=per_token)


def layer_options(config: TransformerConfig) -> dict:
    """The keyword arguments every layer of a model gets beyond its sizes."""
    return dict(norm=config.norm, norm_eps=config.norm_eps, positional=config.attention_positional,
                max_len=config.max_len, rope_base=config.rope_base, n_kv_heads=config.n_kv_heads,
                bias=config.bias)


def output_projection(config: TransformerConfig, embed: Embedding, rng, dtype) -> Linear:
    """The Linear D -> V that gives the logits; with ``tie_embeddings`` it computes h @ E^T + b
    with the embedding matrix E (V, D).

    Tied, its weight and gradient are transposed views of E and of E's gradient, so
    Linear's own backward adds its contribution straight into the embedding's gradient
    buffer; nothing is drawn for it (a GPT-2-sized head would be 38 million numbers).
    """
    if not config.tie_embeddings:
        return Linear(config.d_model, config.vocab_size, config.head_bias, rng=rng, dtype=dtype)
    bias = np.zeros(config.vocab_size, dtype=dtype) if config.head_bias else None
    out_proj = Linear.from_arrays(embed.params["weight"].T, bias)                # (D, V) view
    out_proj.grads["weight"] = embed.grads["weight"].T
    return out_proj


def attention_maps(model: Module) -> dict[str, np.ndarray]:
    """Attention weights (B, H, Tq, Tk) of every MultiHeadAttention after the last forward,
    keyed by dotted module name, e.g. ``decoder.layers.1.cross_attn``; copies, for plotting."""
    split = model.cache if isinstance(model.cache, BatchSplit) else getattr(model.cache, "split", None)
    # a split forward: the model ran the first part of the batch, replicas the others (batch_split.py)
    parts = [model] if split is None else [model, *split.replicas]
    maps = [{name: m.attn for name, m in part.named_modules()
             if isinstance(m, MultiHeadAttention) and m.attn is not None} for part in parts]
    return maps[0] if split is None else {name: np.concatenate([m[name] for m in maps]) for name in maps[0]}


class Transformer(Module):
    """The encoder-decoder Transformer of "Attention Is All You Need".

        memory = encoder(pos(src_embed(src) * sqrt(D)), src padding mask)
        logits = out_proj(decoder(pos(tgt_embed(tgt) * sqrt(D)), memory,
                                  causal & tgt padding mask, src padding mask))

    ``pos`` (shared by source and target) is None when the positions are not added to the
    embeddings (``config.positional`` "rope", "alibi", "none"); the sqrt(D) scale is left out
    with ``config.embed_scale`` False, and out_proj's bias b with ``config.head_bias`` False.
    ``src_mask``/``tgt_mask`` are (B, S)/(B, T) booleans, True = real token;
    by default ``ids != config.pad_id`` (all True when ``pad_id`` is None). With
    ``tie_embeddings`` one (V, D) matrix is the source embedding, the target
    embedding and the output projection (logits = h @ E^T + b); it is listed once,
    as ``tgt_embed.weight``, and its gradient is the sum of all three contributions.
    """

    def __init__(self, config: TransformerConfig, rng: np.random.Generator | None = None,
                 dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        c = self.config = config
        layer_args = (c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first, c.activation, rng, dtype)
        # tgt_embed comes first so that a tied matrix is named after it (first name wins)
        self.tgt_embed = Embedding(c.vocab_size, c.d_model, rng=rng, dtype=dtype)
        self.src_embed = Embedding(c.vocab_size, c.d_model, rng=rng, dtype=dtype)
        self.pos = make_positional(c, rng, dtype)
        self.encoder = Encoder(c.n_encoder_layers, *layer_args, **layer_options(c))
        self.decoder = Decoder(c.n_decoder_layers, *layer_args, **layer_options(c))
        self.out_proj = output_projection(c, self.tgt_embed, rng, dtype)
        if c.tie_embeddings:      # Module.astype and load_state_dict keep these ties
            self.src_embed.params["weight"] = self.tgt_embed.params["weight"]
            self.src_embed.grads["weight"] = self.tgt_embed.grads["weight"]

    @property
    def multiply_adds_per_token(self) -> int:
        """Of the weight products, encoder and decoder together (``TransformerConfig.multiply_adds_per_token``)."""
        return self.config.multiply_adds_per_token(self.config.n_encoder_layers + self.config.n_decoder_layers)

    @holds_threads
    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray | None = None):
        """The encoder's memory (B, S, D) and the source key mask (B, 1, 1, S)."""
        self.cache = InvalidatedByInference("encode")   # until forward ends: no backward
        check_model_ids("src_ids", src_ids, self.config)
        src_keys = key_mask("src_mask", src_mask, src_ids, self.config.pad_id)
        with shared_if_large(self, src_ids.size):
            x = embed_forward(self.src_embed, self.pos, src_ids, scale=self.config.embed_scale)  # (B, S, D)
            return self.encoder(x, src_keys), src_keys

    @holds_threads
    def decode(self, tgt_ids: np.ndarray, memory: np.ndarray, src_keys: np.ndarray,
               tgt_mask: np.ndarray | None = None) -> np.ndarray:
        """Logits (B, T, V) of the target, given the memory and the source key mask."""
        self.cache = InvalidatedByInference("decode")
        check_model_ids("tgt_ids", tgt_ids, self.config)
        if tgt_ids.shape[0] != memory.shape[0]:
            raise ValueError(f"tgt_ids: batch size {tgt_ids.shape[0]} differs from the source's "
                             f"{memory.shape[0]}")
        tgt_keys = key_mask("tgt_mask", tgt_mask, tgt_ids, self.config.pad_id)       # (B, 1, 1, T)
        self_mask = causal_mask(tgt_ids.shape[1]) & tgt_keys                          # (B, 1, T, T)
        with shared_if_large(self, tgt_ids.size):
            y = embed_forward(self.tgt_embed, self.pos, tgt_ids, scale=self.config.embed_scale)  # (B, T, D)
            y = self.decoder(y, memory, self_mask, src_keys)
            return self.out_proj(y)                                                   # (B, T, V)

    @holds_threads
    @splits_batch
    def forward(self, src_ids: np.ndarray, tgt_ids: np.ndarray, src_mask: np.ndarray | None = None,
                tgt_mask: np.ndarray | None = None) -> np.ndarray:
        memory, src_keys = self.encode(src_ids, src_mask)                    # (B, S, D)
        logits = self.decode(tgt_ids, memory, src_keys, tgt_mask)            # (B, T, V)
        self.cache = ModelCache(logits.shape)
        return logits

    @holds_threads
    @joins_gradients
    def backward(self, dlogits: np.ndarray) -> None:
        check_upstream("dlogits", dlogits, self._saved().logits_shape)
        self.cache = UsedByBackward()        # one backward per forward: a second would add it all again
        # parameter gradients on the second core meanwhile; complete on return (nn/overlap.py)
        with shared_if_large(self, np.prod(dlogits.shape[:-1])), overlap_param_grads():
            dy, dmemory = self.decoder.backward(self.out_proj.backward(dlogits))
            embed_backward(self.tgt_embed, self.pos, dy, self.config.embed_scale)
            # dmemory only leads to the encoder's and the source embedding's parameters:
            # when all of them are frozen, nothing below needs a gradient
            if any(m is not None and m.has_trainable_parameters()
                   for m in (self.encoder, self.src_embed, self.pos)):
                embed_backward(self.src_embed, self.pos, self.encoder.backward(dmemory),
                               self.config.embed_scale)
        return None

    def init_cache(self, memory: np.ndarray, src_keys: np.ndarray,
                   capacity: int | None = None) -> KVCache:
        """An empty KVCache for up to ``capacity`` target positions (default max_len); the
        cross-attention keys and values of ``memory`` (B, S, D) are computed here, once."""
        return inference.seq2seq_cache(self, memory, src_keys, capacity)

    @holds_threads
    def decode_step(self, tgt_ids: np.ndarray, cache: KVCache) -> np.ndarray:
        """Inference only: logits (B, Tn, V) of Tn new target tokens, the earlier ones read from
        ``cache`` (which this updates); equal to the last Tn rows of ``decode`` on the whole prefix."""
        self.cache = InvalidatedByInference("decode_step")
        with shared_if_large(self, np.size(tgt_ids)):
            return inference.seq2seq_step(self, tgt_ids, cache)

    def attention_maps(self) -> dict[str, np.ndarray]:
        return attention_maps(self)


class DecoderOnlyTransformer(Module):
    """A GPT-style language model: causal self-attention blocks over one sequence.

        logits = out_proj(norm(blocks(pos(embed(ids) * sqrt(D)), causal & padding mask)))

    The blocks are EncoderLayers run under a causal mask; there are
    ``config.n_decoder_layers`` of them. ``tie_embeddings`` makes out_proj use
    the embedding matrix (logits = h @ E^T + b), listed once as ``embed.weight``.
    GPT-2 is learned positions, gelu_tanh, tied, ``embed_scale`` and ``head_bias`` False;
    LLaMA is rope, rmsnorm, swiglu, ``bias``, ``embed_scale`` and ``head_bias`` False, untied,
    often with fewer key/value heads (``n_kv_heads``).
    """

    def __init__(self, config: TransformerConfig, rng: np.random.Generator | None = None,
                 dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        c = self.config = config
        self.embed = Embedding(c.vocab_size, c.d_model, rng=rng, dtype=dtype)
        self.pos = make_positional(c, rng, dtype)
        self.layers = [EncoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first,
                                    c.activation, rng, dtype, **layer_options(c))
                       for _ in range(c.n_decoder_layers)]
        if c.norm_first:
            self.norm = make_norm(c.norm, c.d_model, dtype, c.norm_eps)
        self.out_proj = output_projection(c, self.embed, rng, dtype)

    @property
    def multiply_adds_per_token(self) -> int:
        """Of the weight products of its blocks and head (``TransformerConfig.multiply_adds_per_token``)."""
        return self.config.multiply_adds_per_token(self.config.n_decoder_layers)

    @holds_threads
    @splits_batch
    def forward(self, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        check_model_ids("ids", ids, self.config)
        keys = key_mask("mask", mask, ids, self.config.pad_id)                # (B, 1, 1, T)
        self_mask = causal_mask(ids.shape[1]) & keys                          # (B, 1, T, T)
        with shared_if_large(self, ids.size):
            x = embed_forward(self.embed, self.pos, ids, scale=self.config.embed_scale)   # (B, T, D)
            for layer in self.layers:
                x = layer(x, self_mask)
            if hasattr(self, "norm"):
                x = self.norm(x)
            logits = self.out_proj(x)                                         # (B, T, V)
        self.cache = ModelCache(logits.shape)
        return logits

    @holds_threads
    @joins_gradients
    def backward(self, dlogits: np.ndarray) -> None:
        check_upstream("dlogits", dlogits, self._saved().logits_shape)
        self.cache = UsedByBackward()        # one backward per forward: a second would add it all again
        # parameter gradients on the second core meanwhile; complete on return (nn/overlap.py)
        with shared_if_large(self, np.prod(dlogits.shape[:-1])), overlap_param_grads():
            dx = self.out_proj.backward(dlogits)
            if hasattr(self, "norm"):
                dx = self.norm.backward(dx)
            for layer in reversed(self.layers):
                dx = layer.backward(dx)
            embed_backward(self.embed, self.pos, dx, self.config.embed_scale)
        return None

    def init_cache(self, batch_size: int, capacity: int | None = None) -> KVCache:
        """An empty KVCache for ``batch_size`` sequences of up to ``capacity`` positions (default max_len)."""
        return inference.lm_cache(self, batch_size, capacity)

    @holds_threads
    def decode_step(self, ids: np.ndarray, cache: KVCache) -> np.ndarray:
        """Inference only: logits (B, Tn, V) of Tn new tokens, the earlier ones read from ``cache``
        (which this updates); equal to the last Tn rows of ``forward`` on the whole sequence."""
        self.cache = InvalidatedByInference("decode_step")
        with shared_if_large(self, np.size(ids)):
            return inference.lm_step(self, ids, cache)

    def attention_maps(self) -> dict[str, np.ndarray]:
        return attention_maps(self)
