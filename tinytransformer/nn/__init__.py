"""The layers: one file per kind, every backward written by hand."""

from .activation import GELU, ReLU, SiLU, Softmax
from .alibi import ALiBiBias
from .attention import MultiHeadAttention, ScaledDotProductAttention
from .dropout import Dropout
from .embedding import Embedding, LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from .feedforward import FeedForward
from .linear import Linear
from .lora import LoRALinear, add_lora, merge_lora
from .loss import CrossEntropyLoss
from .masks import causal_mask, causal_padding_mask, padding_mask, real_tokens
from .module import Module
from .normalization import LayerNorm, RMSNorm
from .rotary import RotaryEmbedding

__all__ = [
    "Module", "Linear", "LoRALinear", "add_lora", "merge_lora", "Embedding",
    "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding",
    "ReLU", "GELU", "SiLU", "Softmax", "LayerNorm", "RMSNorm", "Dropout", "FeedForward",
    "CrossEntropyLoss", "ScaledDotProductAttention", "MultiHeadAttention", "RotaryEmbedding", "ALiBiBias",
    "causal_mask", "padding_mask", "causal_padding_mask", "real_tokens",
]
