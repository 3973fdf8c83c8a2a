"""The reference text model written with torch.nn building blocks: the PyTorch peer of
``benchmarks/text_reference.py``.

Only benchmarks import this file (PyTorch is never a dependency of the package). It is
``tinytransformer.DecoderOnlyTransformer`` with the text run's config (pre-LN, learned
positions, GELU (exact or tanh), biases everywhere, an untied output head):

    logits = out_proj(norm(blocks(embed(ids) * sqrt(D) + P[:T])))
    block:   x = x + attn(norm1(x), causal);   x = x + linear2(gelu(linear1(norm2(x))))

written as a PyTorch user would in eager mode: nn.Linear, nn.LayerNorm, nn.Embedding,
``F.scaled_dot_product_attention(is_causal=True)`` (PyTorch's fused CPU attention) and
``torch.optim.AdamW(fused=True)``. Its attribute names are the NumPy model's, so
``load_numpy_weights`` copies every parameter by name (Linear weights transposed: NumPy
keeps (in, out), torch (out, in)).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GELUS = {"gelu": "none", "gelu_tanh": "tanh"}      # the config's activation -> F.gelu's approximate


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.w_q, self.w_k = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.w_v, self.w_o = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def forward(self, x):                                            # x: (B, T, D)
        B, T, D = x.shape
        q, k, v = (w(x).view(B, T, self.n_heads, -1).transpose(1, 2)   # (B, H, T, dk)
                   for w in (self.w_q, self.w_k, self.w_v))
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.w_o(heads.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.approximate = GELUS[activation]

    def forward(self, x):
        return self.linear2(F.gelu(self.linear1(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, eps: float, activation: str):
        super().__init__()
        self.self_attn, self.ff = SelfAttention(d_model, n_heads), FeedForward(d_model, d_ff, activation)
        self.norm1, self.norm2 = nn.LayerNorm(d_model, eps=eps), nn.LayerNorm(d_model, eps=eps)

    def forward(self, x):
        x = x + self.self_attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class Positions(nn.Module):
    """The learned table P (max_len, D), named ``weight`` as the NumPy module's."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_len, d_model))


class TorchDecoderOnly(nn.Module):
    """``forward(ids)`` -> logits (B, T, V), the NumPy DecoderOnlyTransformer's math."""

    def __init__(self, config):
        super().__init__()
        c = config
        supported = (c.positional == "learned" and c.activation in GELUS and c.norm == "layernorm"
                     and c.norm_first and c.bias and c.head_bias and not c.tie_embeddings
                     and c.n_kv_heads in (None, c.n_heads) and c.dropout == 0.0)
        if not supported:
            raise ValueError(f"config: the peer is written for the text run's model only "
                             f"(learned positions, gelu or gelu_tanh, pre-LN layernorm, biases, untied), got {c}")
        self.scale = math.sqrt(c.d_model) if c.embed_scale else 1.0
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = Positions(c.max_len, c.d_model)
        self.layers = nn.ModuleList(Block(c.d_model, c.n_heads, c.d_ff, c.norm_eps, c.activation)
                                    for _ in range(c.n_decoder_layers))
        self.norm = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.out_proj = nn.Linear(c.d_model, c.vocab_size)

    def forward(self, ids):                                          # ids: (B, T)
        x = self.embed(ids) * self.scale + self.pos.weight[:ids.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.out_proj(self.norm(x))                           # (B, T, V)


def load_numpy_weights(torch_model: TorchDecoderOnly, np_model) -> None:
    """Copy every parameter of a NumPy DecoderOnlyTransformer into ``torch_model``, by name."""
    ours = dict(torch_model.named_parameters())
    theirs = {name: param for name, param, _ in np_model.named_parameters()}
    if set(ours) != set(theirs):
        raise ValueError(f"np_model: parameter names differ from the peer's: "
                         f"{sorted(set(ours) ^ set(theirs))}")
    with torch.no_grad():
        for name, dst in ours.items():
            src = theirs[name]
            linear_weight = name.endswith(".weight") and src.ndim == 2 and name.split(".")[0] not in \
                ("embed", "pos")
            dst.copy_(torch.from_numpy(np.ascontiguousarray(src.T if linear_weight else src)))
