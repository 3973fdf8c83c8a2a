"""The Transformer: encoder and decoder layers, the encoder-decoder model and a decoder-only model.

Legend: B batch, S source length, T target length, D d_model, V vocabulary size.

Every sublayer (attention or feed-forward) sits in a residual branch with a
LayerNorm, in one of two arrangements:
    pre-LN  (norm_first=True):   out = x + dropout(f(norm(x)))      a final norm ends the stack
    post-LN (norm_first=False):  out = norm(x + dropout(f(x)))      the paper's arrangement
Backward of the residual: the identity branch passes the gradient through
unchanged and the sublayer branch adds its own, so dx = dout + (branch) for
pre-LN, and dx = dsum + (branch) with dsum = norm.backward(dout) for post-LN.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np

from ..tasks import PAD    # the padding id: masks are derived from it when not given
from .attention import MultiHeadAttention, causal_mask
from .dropout import Dropout
from .embedding import Embedding, LearnedPositionalEmbedding, SinusoidalPositionalEncoding, check_ids
from .feedforward import FeedForward, make_activation
from .kv_cache import AttentionCache, KVCache
from .linear import Linear
from .module import Module, check_upstream, default_rng
from .normalization import LayerNorm
from .overlap import overlap_param_grads
from ..threads import holds_threads



def config_from_dict(cls, data: dict):
    """``cls(**data)`` for a config dataclass, with a clear error for a field it does not have."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


@dataclass
class TransformerConfig:
    """Sizes and choices of a model; serialisable to JSON (``to_json`` / ``from_json``)."""
    vocab_size: int
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    dropout: float = 0.0
    max_len: int = 64
    norm_first: bool = True
    activation: str = "relu"
    positional: str = "sinusoidal"
    tie_embeddings: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TransformerConfig.{name}: expected a positive integer, got {value!r}")
        for name in ("n_encoder_layers", "n_decoder_layers"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"TransformerConfig.{name}: expected an integer >= 0, got {value!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"TransformerConfig: d_model ({self.d_model}) must be divisible by "
                             f"n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TransformerConfig.dropout: expected a value in [0, 1), got {self.dropout}")
        make_activation(self.activation)          # raises for an unknown name
        if self.positional not in ("sinusoidal", "learned"):
            raise ValueError(f"TransformerConfig.positional: expected 'sinusoidal' or 'learned', "
                             f"got {self.positional!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TransformerConfig":
        return config_from_dict(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TransformerConfig":
        return cls.from_dict(json.loads(text))


# ---- residual sublayers, shared by every layer and both arrangements --------------------

def residual_forward(x: np.ndarray, norm: LayerNorm, sublayer: Callable, dropout: Dropout,
                     norm_first: bool) -> np.ndarray:
    """pre-LN: x + dropout(sublayer(norm(x)));   post-LN: norm(x + dropout(sublayer(x)))."""
    if norm_first:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


def residual_backward(dout: np.ndarray, norm: LayerNorm, sublayer_backward: Callable,
                      dropout: Dropout, norm_first: bool):
    """The gradient of ``residual_forward`` with respect to x, and the sublayer's other input
    gradient if it has one (the memory, for cross-attention): returns (dx, dother or None)."""
    if norm_first:
        # forward was out = x + dropout(f(norm(x))): dout reaches x through the identity too
        dsub = sublayer_backward(dropout.backward(dout))
        dsub, dother = dsub if isinstance(dsub, tuple) else (dsub, None)
        return dout + norm.backward(dsub), dother
    # forward was out = norm(s), s = x + dropout(f(x))
    dsum = norm.backward(dout)
    dsub = sublayer_backward(dropout.backward(dsum))
    dsub, dother = dsub if isinstance(dsub, tuple) else (dsub, None)
    return dsum + dsub, dother


class EncoderLayer(Module):
    """Self-attention then feed-forward, each in a residual branch with its LayerNorm.

    norm1 goes with self-attention, norm2 with the feed-forward network.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu",
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, rng=rng, dtype=dtype)
        self.ff = FeedForward(d_model, d_ff, activation, dropout, rng=rng, dtype=dtype)
        self.norm1 = LayerNorm(d_model, dtype=dtype)
        self.norm2 = LayerNorm(d_model, dtype=dtype)
        self.dropout1 = Dropout(dropout, rng=rng)     # on the self-attention output
        self.dropout2 = Dropout(dropout, rng=rng)     # on the feed-forward output

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:   # x: (B, S, D)
        h = residual_forward(x, self.norm1, lambda z: self.self_attn(z, mask=mask),
                             self.dropout1, self.norm_first)
        self.cache = True
        return residual_forward(h, self.norm2, self.ff, self.dropout2, self.norm_first)

    def step(self, x: np.ndarray, kv: AttentionCache, mask: np.ndarray | None = None) -> np.ndarray:
        """Inference only: ``forward`` for new positions x (B, Tn, D), the keys and values of the
        earlier ones read from ``kv`` (x's own are appended to it)."""
        h = residual_forward(x, self.norm1, lambda z: self.self_attn.step(z, kv, mask),
                             self.dropout1, self.norm_first)
        self.cache = None
        return residual_forward(h, self.norm2, self.ff, self.dropout2, self.norm_first)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self._saved()
        dh, _ = residual_backward(dout, self.norm2, self.ff.backward, self.dropout2, self.norm_first)
        dx, _ = residual_backward(dh, self.norm1, self.self_attn.backward, self.dropout1, self.norm_first)
        return dx


class DecoderLayer(Module):
    """Masked self-attention, cross-attention over the encoder memory, then feed-forward.

    norm1 goes with self-attention, norm2 with cross-attention, norm3 with the
    feed-forward network. Backward returns (dy, dmemory).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu",
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, rng=rng, dtype=dtype)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout, rng=rng, dtype=dtype)
        self.ff = FeedForward(d_model, d_ff, activation, dropout, rng=rng, dtype=dtype)
        self.norm1 = LayerNorm(d_model, dtype=dtype)
        self.norm2 = LayerNorm(d_model, dtype=dtype)
        self.norm3 = LayerNorm(d_model, dtype=dtype)
        self.dropout1 = Dropout(dropout, rng=rng)
        self.dropout2 = Dropout(dropout, rng=rng)
        self.dropout3 = Dropout(dropout, rng=rng)

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"

    def forward(self, y: np.ndarray, memory: np.ndarray, self_mask: np.ndarray | None = None,
                memory_mask: np.ndarray | None = None) -> np.ndarray:   # y: (B, T, D), memory: (B, S, D)
        h1 = residual_forward(y, self.norm1, lambda z: self.self_attn(z, mask=self_mask),
                              self.dropout1, self.norm_first)
        h2 = residual_forward(h1, self.norm2,
                              lambda z: self.cross_attn(z, context=memory, mask=memory_mask),
                              self.dropout2, self.norm_first)
        self.cache = True
        return residual_forward(h2, self.norm3, self.ff, self.dropout3, self.norm_first)

    def step(self, y: np.ndarray, self_kv: AttentionCache, cross_kv: AttentionCache,
             self_mask: np.ndarray | None = None, memory_mask: np.ndarray | None = None) -> np.ndarray:
        """Inference only: ``forward`` for new target positions y (B, Tn, D). ``self_kv`` holds the
        earlier positions' keys and values (y's own are appended), ``cross_kv`` the memory's."""
        h1 = residual_forward(y, self.norm1, lambda z: self.self_attn.step(z, self_kv, self_mask),
                              self.dropout1, self.norm_first)
        h2 = residual_forward(h1, self.norm2,
                              lambda z: self.cross_attn.step(z, cross_kv, memory_mask, append=False),
                              self.dropout2, self.norm_first)
        self.cache = None
        return residual_forward(h2, self.norm3, self.ff, self.dropout3, self.norm_first)

    def backward(self, dout: np.ndarray):
        self._saved()
        dh2, _ = residual_backward(dout, self.norm3, self.ff.backward, self.dropout3, self.norm_first)
        dh1, dmemory = residual_backward(dh2, self.norm2, self.cross_attn.backward,
                                         self.dropout2, self.norm_first)
        dy, _ = residual_backward(dh1, self.norm1, self.self_attn.backward, self.dropout1, self.norm_first)
        return dy, dmemory


class Encoder(Module):
    """A stack of EncoderLayers; pre-LN stacks end with a LayerNorm (``norm``)."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu",
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        self.layers = [EncoderLayer(d_model, n_heads, d_ff, dropout, norm_first, activation, rng, dtype)
                       for _ in range(n_layers)]
        if norm_first:
            self.norm = LayerNorm(d_model, dtype=dtype)

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        for layer in self.layers:
            x = layer(x, mask)
        self.cache = True
        return self.norm(x) if hasattr(self, "norm") else x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self._saved()
        if hasattr(self, "norm"):
            dout = self.norm.backward(dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout


class Decoder(Module):
    """A stack of DecoderLayers; pre-LN stacks end with a LayerNorm (``norm``).

    Every layer attends to the same memory, so dmemory is the sum over layers.
    """

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu",
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        self.layers = [DecoderLayer(d_model, n_heads, d_ff, dropout, norm_first, activation, rng, dtype)
                       for _ in range(n_layers)]
        if norm_first:
            self.norm = LayerNorm(d_model, dtype=dtype)

    def forward(self, y: np.ndarray, memory: np.ndarray, self_mask: np.ndarray | None = None,
                memory_mask: np.ndarray | None = None) -> np.ndarray:
        for layer in self.layers:
            y = layer(y, memory, self_mask, memory_mask)
        self.cache = memory.shape
        return self.norm(y) if hasattr(self, "norm") else y

    def backward(self, dout: np.ndarray):
        memory_shape = self._saved()
        if hasattr(self, "norm"):
            dout = self.norm.backward(dout)
        dmemory = np.zeros(memory_shape, dtype=dout.dtype)
        for layer in reversed(self.layers):
            dout, dmem = layer.backward(dout)
            dmemory += dmem
        return dout, dmemory


# ---- the models ---------------------------------------------------------------------------

def check_model_ids(name: str, ids, config: TransformerConfig) -> None:
    """Token ids entering a model: a non-empty (B, T) integer array, T <= max_len, ids < vocab_size."""
    check_ids(name, ids, config.vocab_size)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (batch, time) array of token ids, "
                         f"got shape {ids.shape}")
    if ids.shape[1] > config.max_len:
        raise ValueError(f"{name}: sequence length {ids.shape[1]} exceeds max_len {config.max_len}")


def key_mask(name: str, token_mask, ids: np.ndarray) -> np.ndarray:
    """(B, T) 'True = real token' -> (B, 1, 1, T) key mask; derived from PAD when None."""
    if token_mask is None:
        token_mask = ids != PAD
    elif not isinstance(token_mask, np.ndarray) or token_mask.dtype != bool or token_mask.shape != ids.shape:
        got = (f"{token_mask.dtype.name} array of shape {token_mask.shape}"
               if isinstance(token_mask, np.ndarray) else type(token_mask).__name__)
        raise ValueError(f"{name}: expected a boolean array of shape {ids.shape} "
                         f"(True = real token), got {got}")
    return token_mask[:, None, None, :]


def make_positional(config: TransformerConfig, rng, dtype) -> Module:
    if config.positional == "learned":
        return LearnedPositionalEmbedding(config.max_len, config.d_model, rng=rng, dtype=dtype)
    return SinusoidalPositionalEncoding(config.d_model, config.max_len, dtype=dtype)


def embed_forward(embed: Embedding, pos: Module, ids: np.ndarray, offset: int = 0) -> np.ndarray:
    """x = pos(embed(ids) * sqrt(D)): scaled token embeddings plus positions.   (B, T, D)"""
    scaled = embed(ids) * embed.params["weight"].dtype.type(np.sqrt(embed.d_model))
    return pos(scaled, offset)


def embed_backward(embed: Embedding, pos: Module, dx: np.ndarray) -> None:
    # forward was x = pos(e * sqrt(D)), e = embed(ids)
    embed.backward(pos.backward(dx) * dx.dtype.type(np.sqrt(embed.d_model)))


def tie_output_to_embedding(out_proj: Linear, embed: Embedding) -> None:
    """Make out_proj compute h @ E^T + b with the embedding matrix E (V, D).

    out_proj's weight and gradient become transposed views of E and of E's
    gradient, so Linear's own backward adds its contribution straight into
    the embedding's gradient buffer.
    """
    out_proj.params["weight"] = embed.params["weight"].T        # (D, V) view
    out_proj.grads["weight"] = embed.grads["weight"].T


def attention_maps(model: Module) -> dict[str, np.ndarray]:
    """Attention weights (B, H, Tq, Tk) of every MultiHeadAttention after the last forward,
    keyed by dotted module name, e.g. ``decoder.layers.1.cross_attn``."""
    return {name: m.attn for name, m in model.named_modules()
            if isinstance(m, MultiHeadAttention) and m.attn is not None}


def step_inputs(model: Module, embed: Embedding, name: str, ids: np.ndarray, cache: KVCache):
    """The start of ``decode_step``, shared by both models: the Tn new tokens embedded at their
    true positions cache.length .. cache.length + Tn - 1 (B, Tn, D), and their self-attention
    mask (B, 1, Tn, cache.length + Tn): causal among the new tokens, PAD keys hidden."""
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
    x = embed_forward(embed, model.pos, ids, offset=start)                     # (B, Tn, D)
    cache.token_mask[:, start:end] = ids != PAD
    cache.length = end
    # new token i sits at position start + i: it sees keys 0 .. start + i
    self_mask = np.tri(ids.shape[1], end, start, dtype=bool) & cache.token_mask[:, None, None, :end]
    return x, self_mask


class Transformer(Module):
    """The encoder-decoder Transformer of "Attention Is All You Need".

        memory = encoder(pos(src_embed(src) * sqrt(D)), src padding mask)
        logits = out_proj(decoder(pos(tgt_embed(tgt) * sqrt(D)), memory,
                                  causal & tgt padding mask, src padding mask))

    ``src_mask``/``tgt_mask`` are (B, S)/(B, T) booleans, True = real token;
    by default ``ids != PAD``. With ``tie_embeddings`` one (V, D) matrix is the
    source embedding, the target embedding and the output projection
    (logits = h @ E^T + b); it is listed once, as ``tgt_embed.weight``, and its
    gradient is the sum of all three contributions.
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
        self.encoder = Encoder(c.n_encoder_layers, *layer_args)
        self.decoder = Decoder(c.n_decoder_layers, *layer_args)
        self.out_proj = Linear(c.d_model, c.vocab_size, rng=rng, dtype=dtype)
        if c.tie_embeddings:      # Module.astype and load_state_dict keep these ties
            self.src_embed.params["weight"] = self.tgt_embed.params["weight"]
            self.src_embed.grads["weight"] = self.tgt_embed.grads["weight"]
            tie_output_to_embedding(self.out_proj, self.tgt_embed)

    @holds_threads
    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray | None = None):
        """The encoder's memory (B, S, D) and the source key mask (B, 1, 1, S)."""
        self.cache = None          # the layers' caches no longer belong to one forward: no backward
        check_model_ids("src_ids", src_ids, self.config)
        src_keys = key_mask("src_mask", src_mask, src_ids)
        return self.encoder(embed_forward(self.src_embed, self.pos, src_ids), src_keys), src_keys

    @holds_threads
    def decode(self, tgt_ids: np.ndarray, memory: np.ndarray, src_keys: np.ndarray,
               tgt_mask: np.ndarray | None = None) -> np.ndarray:
        """Logits (B, T, V) of the target, given the memory and the source key mask."""
        self.cache = None
        check_model_ids("tgt_ids", tgt_ids, self.config)
        if tgt_ids.shape[0] != memory.shape[0]:
            raise ValueError(f"tgt_ids: batch size {tgt_ids.shape[0]} differs from the source's "
                             f"{memory.shape[0]}")
        self_mask = causal_mask(tgt_ids.shape[1]) & key_mask("tgt_mask", tgt_mask, tgt_ids)  # (B, 1, T, T)
        y = self.decoder(embed_forward(self.tgt_embed, self.pos, tgt_ids), memory, self_mask, src_keys)
        return self.out_proj(y)                                              # (B, T, V)

    def init_cache(self, memory: np.ndarray, src_keys: np.ndarray,
                   capacity: int | None = None) -> KVCache:
        """An empty KVCache for up to ``capacity`` target positions (default max_len); the
        cross-attention keys and values of ``memory`` (B, S, D) are computed here, once."""
        capacity = self.config.max_len if capacity is None else capacity
        cache = KVCache.empty(len(self.decoder.layers), memory.shape[0], self.config.n_heads,
                              capacity, self.config.d_model // self.config.n_heads, memory.dtype)
        cache.cross_attn = [AttentionCache.filled(*layer.cross_attn.project_kv(memory))
                            for layer in self.decoder.layers]
        cache.src_keys = src_keys
        return cache

    @holds_threads
    def decode_step(self, tgt_ids: np.ndarray, cache: KVCache) -> np.ndarray:
        """Inference only: logits (B, Tn, V) of Tn new target tokens, the earlier ones read from
        ``cache`` (which this updates); equal to the last Tn rows of ``decode`` on the whole prefix."""
        y, self_mask = step_inputs(self, self.tgt_embed, "tgt_ids", tgt_ids, cache)
        for layer, self_kv, cross_kv in zip(self.decoder.layers, cache.self_attn, cache.cross_attn):
            y = layer.step(y, self_kv, cross_kv, self_mask, cache.src_keys)
        if hasattr(self.decoder, "norm"):
            y = self.decoder.norm(y)
        self.cache = None
        return self.out_proj(y)                                              # (B, Tn, V)

    @holds_threads
    def forward(self, src_ids: np.ndarray, tgt_ids: np.ndarray, src_mask: np.ndarray | None = None,
                tgt_mask: np.ndarray | None = None) -> np.ndarray:
        memory, src_keys = self.encode(src_ids, src_mask)                    # (B, S, D)
        logits = self.decode(tgt_ids, memory, src_keys, tgt_mask)            # (B, T, V)
        self.cache = logits.shape
        return logits

    @holds_threads
    def backward(self, dlogits: np.ndarray) -> None:
        check_upstream("dlogits", dlogits, self._saved())
        # parameter gradients on the second core meanwhile; complete on return (nn/overlap.py)
        with overlap_param_grads():
            dy, dmemory = self.decoder.backward(self.out_proj.backward(dlogits))
            embed_backward(self.tgt_embed, self.pos, dy)
            embed_backward(self.src_embed, self.pos, self.encoder.backward(dmemory))
        return None

    def attention_maps(self) -> dict[str, np.ndarray]:
        return attention_maps(self)


class DecoderOnlyTransformer(Module):
    """A GPT-style language model: causal self-attention blocks over one sequence.

        logits = out_proj(norm(blocks(pos(embed(ids) * sqrt(D)), causal & padding mask)))

    The blocks are EncoderLayers run under a causal mask; there are
    ``config.n_decoder_layers`` of them. ``tie_embeddings`` makes out_proj use
    the embedding matrix (logits = h @ E^T + b), listed once as ``embed.weight``.
    """

    def __init__(self, config: TransformerConfig, rng: np.random.Generator | None = None,
                 dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        c = self.config = config
        self.embed = Embedding(c.vocab_size, c.d_model, rng=rng, dtype=dtype)
        self.pos = make_positional(c, rng, dtype)
        self.layers = [EncoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first,
                                    c.activation, rng, dtype) for _ in range(c.n_decoder_layers)]
        if c.norm_first:
            self.norm = LayerNorm(c.d_model, dtype=dtype)
        self.out_proj = Linear(c.d_model, c.vocab_size, rng=rng, dtype=dtype)
        if c.tie_embeddings:
            tie_output_to_embedding(self.out_proj, self.embed)

    @holds_threads
    def forward(self, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        check_model_ids("ids", ids, self.config)
        self_mask = causal_mask(ids.shape[1]) & key_mask("mask", mask, ids)   # (B, 1, T, T)
        x = embed_forward(self.embed, self.pos, ids)                          # (B, T, D)
        for layer in self.layers:
            x = layer(x, self_mask)
        if hasattr(self, "norm"):
            x = self.norm(x)
        logits = self.out_proj(x)                                             # (B, T, V)
        self.cache = logits.shape
        return logits

    def init_cache(self, batch_size: int, capacity: int | None = None) -> KVCache:
        """An empty KVCache for ``batch_size`` sequences of up to ``capacity`` positions (default max_len)."""
        capacity = self.config.max_len if capacity is None else capacity
        return KVCache.empty(len(self.layers), batch_size, self.config.n_heads, capacity,
                             self.config.d_model // self.config.n_heads, self.dtype)

    @holds_threads
    def decode_step(self, ids: np.ndarray, cache: KVCache) -> np.ndarray:
        """Inference only: logits (B, Tn, V) of Tn new tokens, the earlier ones read from ``cache``
        (which this updates); equal to the last Tn rows of ``forward`` on the whole sequence."""
        x, self_mask = step_inputs(self, self.embed, "ids", ids, cache)
        for layer, kv in zip(self.layers, cache.self_attn):
            x = layer.step(x, kv, self_mask)
        if hasattr(self, "norm"):
            x = self.norm(x)
        self.cache = None
        return self.out_proj(x)                                               # (B, Tn, V)

    @holds_threads
    def backward(self, dlogits: np.ndarray) -> None:
        check_upstream("dlogits", dlogits, self._saved())
        # parameter gradients on the second core meanwhile; complete on return (nn/overlap.py)
        with overlap_param_grads():
            dx = self.out_proj.backward(dlogits)
            if hasattr(self, "norm"):
                dx = self.norm.backward(dx)
            for layer in reversed(self.layers):
                dx = layer.backward(dx)
            embed_backward(self.embed, self.pos, dx)
        return None

    def attention_maps(self) -> dict[str, np.ndarray]:
        return attention_maps(self)
