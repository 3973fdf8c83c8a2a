"""The reference Transformer written with torch.nn building blocks, for side-by-side timing.

Only the benchmark imports this file (PyTorch is never a dependency of the
package). It is the same architecture as ``tinytransformer.Transformer`` with
the default ``TransformerConfig``:

- token embeddings N(0, 1/D), scaled by sqrt(D), plus the fixed sinusoidal table
  (shared by source and target);
- pre-LN encoder layers  x + attn(norm1(x)),  x + ff(norm2(x));
  pre-LN decoder layers  y + self_attn(norm1(y)),  y + cross_attn(norm2(y), memory),
  y + ff(norm3(y)); a final LayerNorm after each stack;
- multi-head attention with four Linear projections (Xavier uniform, zero
  bias), heads as contiguous blocks of features, boolean masks True = may attend;
- ReLU feed-forward, D -> d_ff -> D; an output Linear D -> V;
- cross-entropy ignoring PAD; Adam with the reference run's betas and eps.

It is written the way a PyTorch user would write it in eager mode: nn.Linear,
nn.LayerNorm, nn.Embedding, ``F.scaled_dot_product_attention`` (PyTorch's fused
CPU attention kernel) and ``torch.optim.Adam(fused=True)``, its fastest on the CPU.
No nn.Transformer, no torch.compile. ``load_numpy_weights`` copies the weights
of a NumPy model, so both can be checked to compute the same logits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PAD = 0


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/D)), PE[pos, 2i+1] = cos(...), as the NumPy model."""
    position = torch.arange(max_len, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angle = position * freq
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.float()


def xavier_linear(in_features: int, out_features: int) -> nn.Linear:
    linear = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.w_q, self.w_k = xavier_linear(d_model, d_model), xavier_linear(d_model, d_model)
        self.w_v, self.w_o = xavier_linear(d_model, d_model), xavier_linear(d_model, d_model)

    def split(self, x: torch.Tensor) -> torch.Tensor:          # (B, T, D) -> (B, H, T, dk)
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_head).transpose(1, 2)

    def forward(self, x, context, mask):
        q, k, v = self.split(self.w_q(x)), self.split(self.w_k(context)), self.split(self.w_v(context))
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)   # (B, H, Tq, dk)
        B, H, T, dk = heads.shape
        return self.w_o(heads.transpose(1, 2).reshape(B, T, H * dk))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.linear1, self.linear2 = xavier_linear(d_model, d_ff), xavier_linear(d_ff, d_model)

    def forward(self, x):
        return self.linear2(F.relu(self.linear1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads)
        self.ff = FeedForward(d_model, d_ff)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    def forward(self, x, mask):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, mask)
        return x + self.ff(self.norm2(x))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads)
        self.cross_attn = MultiHeadAttention(d_model, n_heads)
        self.ff = FeedForward(d_model, d_ff)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))

    def forward(self, y, memory, self_mask, memory_mask):
        h = self.norm1(y)
        y = y + self.self_attn(h, h, self_mask)
        y = y + self.cross_attn(self.norm2(y), memory, memory_mask)
        return y + self.ff(self.norm3(y))


class TorchTransformer(nn.Module):
    """Pre-LN encoder-decoder Transformer; ``forward(src, tgt_in)`` -> logits (B, T, V)."""

    def __init__(self, vocab_size: int, d_model: int = 64, n_heads: int = 4, d_ff: int = 256,
                 n_encoder_layers: int = 2, n_decoder_layers: int = 2, max_len: int = 64):
        super().__init__()
        self.d_model = d_model
        self.src_embed, self.tgt_embed = nn.Embedding(vocab_size, d_model), nn.Embedding(vocab_size, d_model)
        for embed in (self.src_embed, self.tgt_embed):
            nn.init.normal_(embed.weight, std=1.0 / math.sqrt(d_model))
        self.register_buffer("pe", sinusoidal_table(max_len, d_model))
        self.encoder_layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff)
                                            for _ in range(n_encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff)
                                            for _ in range(n_decoder_layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.out_proj = xavier_linear(d_model, vocab_size)

    def embed(self, embed: nn.Embedding, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return embed(ids) * math.sqrt(self.d_model) + self.pe[offset: offset + ids.shape[1]]

    def encode(self, src: torch.Tensor):
        """(memory (B, S, D), source key mask (B, 1, 1, S))"""
        src_keys = (src != PAD)[:, None, None, :]
        x = self.embed(self.src_embed, src)
        for layer in self.encoder_layers:
            x = layer(x, src_keys)
        return self.encoder_norm(x), src_keys

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, src_keys: torch.Tensor) -> torch.Tensor:
        T = tgt.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        tgt_keys = causal & (tgt != PAD)[:, None, None, :]                         # (B, 1, T, T)
        y = self.embed(self.tgt_embed, tgt)
        for layer in self.decoder_layers:
            y = layer(y, memory, tgt_keys, src_keys)
        return self.out_proj(self.decoder_norm(y))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        memory, src_keys = self.encode(src)
        return self.decode(tgt, memory, src_keys)


BOS, EOS = 1, 2


@torch.no_grad()
def greedy_decode(model: TorchTransformer, src: torch.Tensor, max_len: int, use_cache: bool = True,
                  stop_at_eos: bool = True) -> torch.Tensor:
    """Greedy decoding as ``tinytransformer.greedy_decode``: (B, <= max_len), PAD after EOS.

    Without the cache the decoder reruns on the whole prefix at every step; with
    it, each step computes only the new position: every decoder layer keeps the
    keys and values of its self-attention (appended to buffers) and the
    cross-attention keys and values of the memory (computed once).
    """
    was_training = model.training
    model.eval()
    memory, src_keys = model.encode(src)
    B = src.shape[0]
    tokens = torch.full((B, 1 + max_len), PAD, dtype=torch.long)
    tokens[:, 0] = BOS
    finished = torch.zeros(B, dtype=torch.bool)
    if use_cache:
        layers = model.decoder_layers
        H, dk = layers[0].self_attn.n_heads, layers[0].self_attn.d_head
        self_k = [memory.new_zeros(B, H, max_len, dk) for _ in layers]
        self_v = [memory.new_zeros(B, H, max_len, dk) for _ in layers]
        cross = [(l.cross_attn.split(l.cross_attn.w_k(memory)), l.cross_attn.split(l.cross_attn.w_v(memory)))
                 for l in layers]
    for t in range(max_len):
        if use_cache:
            new = tokens[:, t:t + 1]                                              # (B, 1)
            keys = (tokens[:, :t + 1] != PAD)[:, None, None, :]                   # (B, 1, 1, t+1)
            y = model.embed(model.tgt_embed, new, offset=t)
            for i, layer in enumerate(layers):
                attn = layer.self_attn
                h = layer.norm1(y)
                self_k[i][:, :, t:t + 1] = attn.split(attn.w_k(h))
                self_v[i][:, :, t:t + 1] = attn.split(attn.w_v(h))
                heads = F.scaled_dot_product_attention(attn.split(attn.w_q(h)), self_k[i][:, :, :t + 1],
                                                       self_v[i][:, :, :t + 1], attn_mask=keys)
                y = y + attn.w_o(heads.transpose(1, 2).reshape(B, 1, -1))
                attn = layer.cross_attn
                heads = F.scaled_dot_product_attention(attn.split(attn.w_q(layer.norm2(y))), *cross[i],
                                                       attn_mask=src_keys)
                y = y + attn.w_o(heads.transpose(1, 2).reshape(B, 1, -1))
                y = y + layer.ff(layer.norm3(y))
            logits = model.out_proj(model.decoder_norm(y))[:, -1]
        else:
            logits = model.decode(tokens[:, :t + 1], memory, src_keys)[:, -1]    # (B, V)
        next_token = torch.where(finished, torch.full_like(tokens[:, 0], PAD), logits.argmax(-1))
        tokens[:, t + 1] = next_token
        finished |= next_token == EOS
        if stop_at_eos and bool(finished.all()):
            break
    model.train(was_training)
    return tokens[:, 1:t + 2]


def build(vocab_size: int, d_model: int = 64, n_heads: int = 4, d_ff: int = 256,
          n_layers: int = 2, max_len: int = 64, seed: int = 0, lr: float = 1e-3,
          betas: tuple = (0.9, 0.98), eps: float = 1e-9, label_smoothing: float = 0.0):
    """(model, optimizer, loss function) for a training step on PAD-padded batches."""
    torch.manual_seed(seed)
    model = TorchTransformer(vocab_size, d_model, n_heads, d_ff, n_layers, n_layers, max_len)
    # fused: one kernel for every parameter's update, PyTorch's fastest Adam on the CPU
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps, fused=True)

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=PAD, label_smoothing=label_smoothing)

    return model, opt, loss_fn


def load_numpy_weights(torch_model: TorchTransformer, np_model) -> None:
    """Copy the weights of a ``tinytransformer.Transformer`` (same sizes) into ``torch_model``.

    NumPy's Linear weight is (in, out), torch's is (out, in): transposed on copy.
    """
    def copy(dst: torch.Tensor, src: np.ndarray, transpose: bool = False) -> None:
        with torch.no_grad():
            dst.copy_(torch.from_numpy(np.ascontiguousarray(src.T if transpose else src)))

    def linear(dst: nn.Linear, src) -> None:
        copy(dst.weight, src.params["weight"], transpose=True)
        copy(dst.bias, src.params["bias"])

    def norm(dst: nn.LayerNorm, src) -> None:
        copy(dst.weight, src.params["weight"])
        copy(dst.bias, src.params["bias"])

    def attention(dst: MultiHeadAttention, src) -> None:
        for name in ("w_q", "w_k", "w_v", "w_o"):
            linear(getattr(dst, name), getattr(src, name))

    copy(torch_model.src_embed.weight, np_model.src_embed.params["weight"])
    copy(torch_model.tgt_embed.weight, np_model.tgt_embed.params["weight"])
    for dst, src in zip(torch_model.encoder_layers, np_model.encoder.layers):
        attention(dst.self_attn, src.self_attn)
        linear(dst.ff.linear1, src.ff.linear1)
        linear(dst.ff.linear2, src.ff.linear2)
        norm(dst.norm1, src.norm1)
        norm(dst.norm2, src.norm2)
    for dst, src in zip(torch_model.decoder_layers, np_model.decoder.layers):
        attention(dst.self_attn, src.self_attn)
        attention(dst.cross_attn, src.cross_attn)
        linear(dst.ff.linear1, src.ff.linear1)
        linear(dst.ff.linear2, src.ff.linear2)
        for i in (1, 2, 3):
            norm(getattr(dst, f"norm{i}"), getattr(src, f"norm{i}"))
    norm(torch_model.encoder_norm, np_model.encoder.norm)
    norm(torch_model.decoder_norm, np_model.decoder.norm)
    linear(torch_model.out_proj, np_model.out_proj)


# ---- a GPT-2-shaped language model, for the large-shape step --------------------------------


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * (x @ A) @ B with base frozen, A (I, r) Xavier, B (r, O) zero,
    as tinytransformer's LoRALinear (alpha = r)."""

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_a = nn.Parameter(nn.init.xavier_uniform_(torch.empty(base.in_features, rank)))
        self.lora_b = nn.Parameter(torch.zeros(rank, base.out_features))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_a) @ self.lora_b


class LMBlock(nn.Module):
    """Pre-LN: x + attn(ln1(x)) under the causal mask, then x + mlp(ln2(x)), tanh GELU (GPT-2)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(d_model, d_model) for _ in range(4))
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def forward(self, x):
        B, T, D = x.shape
        h = self.ln1(x)
        q, k, v = (w(h).view(B, T, self.n_heads, -1).transpose(1, 2) for w in (self.w_q, self.w_k, self.w_v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.w_o(a.transpose(1, 2).reshape(B, T, D))
        return x + self.linear2(F.gelu(self.linear1(self.ln2(x)), approximate="tanh"))


class TorchLM(nn.Module):
    """GPT-2's layout: learned positions, pre-LN blocks, a final LayerNorm, the head tied to the
    token embedding (no head bias); the NumPy side is DecoderOnlyTransformer with those options."""

    def __init__(self, vocab_size: int, d_model: int, n_heads: int, d_ff: int, n_layers: int, max_len: int):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab_size, d_model), nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(LMBlock(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, ids):
        x = self.embed(ids) + self.pos(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.embed.weight.T                   # (B, T, V), the tied head


def build_lm(vocab_size: int, d_model: int, n_heads: int, d_ff: int, n_layers: int, max_len: int,
             seed: int = 0, lora_rank: int | None = None, **adamw):
    """(model, AdamW (fused, given ``adamw``: lr, betas, ...), loss function); with ``lora_rank``,
    adapters on w_q and w_v and everything else frozen, as tinytransformer's add_lora."""
    torch.manual_seed(seed)
    model = TorchLM(vocab_size, d_model, n_heads, d_ff, n_layers, max_len)
    if lora_rank is not None:
        model.requires_grad_(False)
        for block in model.blocks:
            block.w_q, block.w_v = LoRALinear(block.w_q, lora_rank), LoRALinear(block.w_v, lora_rank)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], fused=True, **adamw)

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    return model, opt, loss_fn
