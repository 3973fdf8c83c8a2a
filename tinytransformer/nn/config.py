"""TransformerConfig: the sizes and choices of a model, serialisable to JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import numpy as np

from .embedding import check_ids
from .feedforward import make_activation
from .normalization import NORMS

POSITIONALS = ("sinusoidal", "learned", "rope", "alibi", "none")

# one name for a set of choices: `TransformerConfig(vocab_size=13, **PRESETS["modern"])`,
# `tinytransformer train --preset modern`; "reference" is the paper's model, the defaults
PRESETS = {
    "reference": dict(positional="sinusoidal", norm="layernorm", activation="relu", norm_first=True),
    "modern": dict(positional="rope", norm="rmsnorm", activation="swiglu", norm_first=True),
}


def config_from_dict(cls, data: dict):
    """``cls(**data)`` for a config dataclass, with a clear error for a field it does not have."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


@dataclass
class TransformerConfig:
    """Sizes and choices of a model; serialisable to JSON (``to_json`` / ``from_json``).

    Special token ids live here, and only here: everything that runs a model reads them from
    ``model.config`` (masks, the training loss, decoding, checkpoints).
    ``pad_id``: padding. The models derive their key masks from it (a key is masked where its
    id is ``pad_id``), the training loss ignores it, decoding never emits it and fills a
    finished row with it. None means the vocabulary has no padding (GPT-2): no token id is
    masked, and a finished row is filled with ``eos_id`` instead.
    ``bos_id``: what the encoder-decoder's decoder is fed first; decoding never emits it
    unless it is also ``eos_id``. None: the vocabulary has none (a decoder-only model is
    given its prompts).
    ``eos_id``: the end of an output; decoding stops a row when it emits it. None: the
    vocabulary has none (a character model of a text): decoding runs every row to its length.
    Each is a token id below ``vocab_size``; pad differs from both others, while bos may
    equal eos (GPT-2's one ``<|endoftext|>``). The defaults 0, 1, 2 are the toy tasks'.
    Integer fields are stored as Python ints, whatever integer type was passed in.

    ``positional``: "sinusoidal" or "learned" add a vector to the scaled token embeddings;
    "rope" rotates q and k in every self-attention (an even head size d_model / n_heads;
    ``rope_base`` sets the wavelengths); "alibi" biases every self-attention's scores by
    distance (n_heads a power of two); "none" gives no positions at all.
    ``norm``: "layernorm" or "rmsnorm", for every norm of the model.
    ``activation``: "relu", "gelu" (exact), "gelu_tanh", or "swiglu" (a gated feed-forward
    with a third projection). A config saved before ``norm`` and ``rope_base`` existed loads
    with their defaults: the same model as then; so does one saved before ``bos_id`` and
    ``eos_id``, with 0, 1, 2 for pad, bos, eos, the ids decoding then took from the tasks.

    What a pre-trained decoder (GPT-2, LLaMA) needs; each default keeps the model as it was:
    ``n_kv_heads``: key/value heads of every attention (None: n_heads; fewer, dividing n_heads,
    is grouped-query attention: query head h reads key/value head h // (n_heads / n_kv_heads)).
    ``bias``: biases in every attention projection and feed-forward Linear (LLaMA has none).
    ``head_bias``: a bias on the output projection (GPT-2's and LLaMA's heads have none).
    ``embed_scale``: token embeddings multiplied by sqrt(d_model) (GPT-2 and LLaMA do not).
    ``norm_eps``: the eps of every LayerNorm or RMSNorm.
    """
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
    norm: str = "layernorm"
    rope_base: float = 10000.0
    n_kv_heads: int | None = None
    bias: bool = True
    head_bias: bool = True
    embed_scale: bool = True
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    pad_id: int | None = 0
    bos_id: int | None = 1
    eos_id: int | None = 2

    def __post_init__(self):
        minimum = {"vocab_size": 1, "d_model": 1, "n_heads": 1, "d_ff": 1, "max_len": 1,
                   "n_encoder_layers": 0, "n_decoder_layers": 0}
        for name, low in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                what = "a positive integer" if low == 1 else "an integer >= 0"
                raise ValueError(f"TransformerConfig.{name}: expected {what}, got {value!r}")
            setattr(self, name, int(value))      # a NumPy integer would not go to JSON
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"TransformerConfig: d_model ({self.d_model}) must be divisible by "
                             f"n_heads ({self.n_heads})")
        self._check_special_ids()
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TransformerConfig.dropout: expected a value in [0, 1), got {self.dropout}")
        self.dropout = float(self.dropout)
        make_activation(self.activation)          # raises for an unknown name
        if self.positional not in POSITIONALS:
            raise ValueError(f"TransformerConfig.positional: expected one of "
                             f"{', '.join(map(repr, POSITIONALS))}, got {self.positional!r}")
        if self.norm not in NORMS:
            raise ValueError(f"TransformerConfig.norm: expected 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if isinstance(self.rope_base, bool) or not isinstance(self.rope_base, (int, float, np.number)) \
                or not self.rope_base > 1:
            raise ValueError(f"TransformerConfig.rope_base: expected a number > 1, got {self.rope_base!r}")
        self.rope_base = float(self.rope_base)
        d_head = self.d_model // self.n_heads
        if self.positional == "rope" and d_head % 2:
            raise ValueError(f"TransformerConfig: positional='rope' needs an even head size "
                             f"d_model / n_heads (rotate-half pairs its two halves), got "
                             f"{d_head} (d_model {self.d_model}, n_heads {self.n_heads})")
        if self.positional == "alibi" and self.n_heads & (self.n_heads - 1):
            raise ValueError(f"TransformerConfig.n_heads: positional='alibi' needs a power of two "
                             f"(1, 2, 4, 8, ...: the slopes 2 ** (-8 (h+1) / n_heads) are defined "
                             f"for those), got {self.n_heads}")
        self._check_pretrained_fields()

    def _check_pretrained_fields(self) -> None:
        """n_kv_heads, bias, head_bias, embed_scale, norm_eps: what GPT-2 and LLaMA differ in."""
        if self.n_kv_heads is not None:
            value = self.n_kv_heads
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1 \
                    or self.n_heads % value:
                raise ValueError(f"TransformerConfig.n_kv_heads: expected None or a positive integer "
                                 f"dividing n_heads ({self.n_heads}), got {value!r}")
            self.n_kv_heads = int(value)
        for name in ("bias", "head_bias", "embed_scale"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"TransformerConfig.{name}: expected True or False, "
                                 f"got {getattr(self, name)!r}")
            setattr(self, name, bool(getattr(self, name)))
        if isinstance(self.norm_eps, bool) or not isinstance(self.norm_eps, (int, float, np.number)) \
                or not self.norm_eps > 0:
            raise ValueError(f"TransformerConfig.norm_eps: expected a number > 0, got {self.norm_eps!r}")
        self.norm_eps = float(self.norm_eps)

    @property
    def kv_heads(self) -> int:
        """The number of key/value heads of every attention: ``n_kv_heads``, or n_heads when None."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    def _check_special_ids(self) -> None:
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                    or not 0 <= value < self.vocab_size:
                raise ValueError(f"TransformerConfig.{name}: expected a token id below vocab_size "
                                 f"(0..{self.vocab_size - 1}), or None (the vocabulary has none), "
                                 f"got {value!r}")
            setattr(self, name, int(value))
        for other in ("bos_id", "eos_id"):
            if self.pad_id is not None and self.pad_id == getattr(self, other):
                raise ValueError(f"TransformerConfig.pad_id: padding must differ from {other} (a padded "
                                 f"key is masked, a finished row is padded), both are {self.pad_id}")

    def multiply_adds_per_token(self, layers: int) -> int:
        """The multiply-adds of the weight products one token's forward passes through, in a
        model of ``layers`` blocks: per block q, k, v, o (D x D each, k and v narrower with
        fewer key/value heads) and the feed-forward (two D x d_ff, three for swiglu); then the
        output head (D x V). The decoder's cross-attention and the attention scores are left
        out: a measure of size (``threads.split_count`` and ``threads.products_shared`` decide by
        it), not an exact count."""
        D = self.d_model
        attention = 2 * D * D + 2 * D * (D // self.n_heads * self.kv_heads)
        feed_forward = (3 if self.activation == "swiglu" else 2) * D * self.d_ff
        return layers * (attention + feed_forward) + D * self.vocab_size

    @property
    def attention_positional(self) -> str | None:
        """What the self-attentions do about positions: "rope", "alibi", or None (added to x, or none)."""
        return self.positional if self.positional in ("rope", "alibi") else None

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


def check_model_ids(name: str, ids, config: TransformerConfig) -> None:
    """Token ids entering a model: a non-empty (B, T) integer array, T <= max_len, ids < vocab_size."""
    check_ids(name, ids, config.vocab_size)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (batch, time) array of token ids, "
                         f"got shape {ids.shape}")
    if ids.shape[1] > config.max_len:
        raise ValueError(f"{name}: sequence length {ids.shape[1]} exceeds max_len {config.max_len}")
