"""The standard gradient checks: one or more cases per layer, run by the tests and by
``tinytransformer gradcheck``, and the table they print."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .check import ArrayCheck, GradcheckResult, gradcheck


@dataclass
class GradcheckCase:
    """A named check of one layer class: ``build(rng)`` returns (module in float64, inputs)."""
    name: str
    cls: type
    build: Callable[[np.random.Generator], tuple]
    max_elements: int | None = None


def padded_ids(rng, shape, vocab, pad_rows):
    """Token ids >= 3 with trailing padding: row r keeps pad_rows[r] real tokens."""
    ids = rng.integers(3, vocab, shape)
    for row, n_real in enumerate(pad_rows):
        ids[row, n_real:] = 0
    return ids


def standard_cases() -> list[GradcheckCase]:
    """Every layer, on shapes that cannot coincide (T_src != T_tgt, d_model != d_ff, H > 1)."""
    from ..nn import (GELU, ALiBiBias, CrossEntropyLoss, Dropout, Embedding, FeedForward, LayerNorm,
                     LearnedPositionalEmbedding, Linear, LoRALinear, MultiHeadAttention, ReLU, RMSNorm,
                     RotaryEmbedding, ScaledDotProductAttention, SiLU, SinusoidalPositionalEncoding,
                     Softmax)
    from ..nn.attention import causal_mask
    from ..nn.transformer import (PRESETS, Decoder, DecoderLayer, DecoderOnlyTransformer, Encoder, EncoderLayer,
                                 Transformer, TransformerConfig)
    f64 = np.float64
    D, H, F = 8, 2, 12          # d_model, heads, d_ff

    def x(rng, *shape):
        return rng.standard_normal(shape)

    def key_padding(rng, B, T, n_real):      # (B, 1, 1, T), row b has n_real[b] real keys
        return (np.arange(T) < np.array(n_real)[:, None])[:, None, None, :]

    def sdpa(rng):
        mask = causal_mask(4)[None, None] & key_padding(rng, 2, 4, [4, 2])
        mask = np.broadcast_to(mask, (2, 3, 4, 4)).copy()
        mask[1, 2, 3, :] = False                              # one fully masked query row
        return ScaledDotProductAttention(0.2, rng), (x(rng, 2, 3, 4, 5), x(rng, 2, 3, 4, 5), x(rng, 2, 3, 4, 6), mask)

    def loss(rng):
        targets = rng.integers(1, 7, (3, 5))
        targets[0, 3:] = 0                                    # ignored positions
        return CrossEntropyLoss(ignore_index=0, label_smoothing=0.1), (x(rng, 3, 5, 7), targets)

    def rms_norm(rng):                          # a random gain, so a wrong dgamma cannot hide
        norm = RMSNorm(6).astype(f64)
        norm.params["weight"][...] = rng.standard_normal(6)
        return norm, (x(rng, 2, 3, 6),)

    def tiny_config(**kw):
        return TransformerConfig(vocab_size=11, d_model=D, n_heads=H, d_ff=F, n_encoder_layers=2,
                                 n_decoder_layers=2, max_len=9, **kw)

    def gpt2_like(**kw):      # learned positions, tanh GELU, tied, no head bias, no sqrt(D) scale
        return TransformerConfig(vocab_size=11, d_model=12, n_heads=2, d_ff=20, n_decoder_layers=2,
                                 max_len=9, positional="learned", activation="gelu_tanh", norm_eps=1e-5,
                                 tie_embeddings=True, head_bias=False, embed_scale=False, **kw)

    def llama_like(**kw):     # RoPE, RMSNorm eps 1e-6, SwiGLU, no biases, 6 query heads on 2 kv heads
        return TransformerConfig(vocab_size=11, d_model=24, n_heads=6, n_kv_heads=2, d_ff=20,
                                 n_encoder_layers=2, n_decoder_layers=2, max_len=9, positional="rope",
                                 norm="rmsnorm", norm_eps=1e-6, activation="swiglu", bias=False,
                                 head_bias=False, embed_scale=False, **kw)

    def gqa(positional=None, **kw):    # 8 query heads in 2 groups of 4, head size 6
        return MultiHeadAttention(48, 8, rng=kw.pop("rng"), positional=positional, max_len=9,
                                  n_kv_heads=2, **kw).astype(f64)

    def lora(rng):
        layer = LoRALinear(Linear(5, 7, rng=rng), rank=3, alpha=6.0, rng=rng).astype(f64)
        for name in ("bias", "lora_b"):              # nonzero, or their terms would hide in zeros
            layer.params[name][...] = rng.standard_normal(layer.params[name].shape)
        return layer.requires_grad_(True), (x(rng, 2, 4, 5),)   # the base weights checked too

    return [
        GradcheckCase("Linear", Linear, lambda r: (Linear(5, 7, rng=r).astype(f64), (x(r, 2, 3, 5),))),
        GradcheckCase("LoRALinear (rank 3, alpha 6)", LoRALinear, lora),
        GradcheckCase("Embedding", Embedding,
                      lambda r: (Embedding(6, 5, rng=r).astype(f64), (r.integers(0, 6, (3, 4)),))),
        GradcheckCase("SinusoidalPositionalEncoding", SinusoidalPositionalEncoding,
                      lambda r: (SinusoidalPositionalEncoding(6, 9).astype(f64), (x(r, 2, 4, 6),))),
        GradcheckCase("LearnedPositionalEmbedding", LearnedPositionalEmbedding,
                      lambda r: (LearnedPositionalEmbedding(9, 6, rng=r).astype(f64), (x(r, 2, 4, 6),))),
        GradcheckCase("ReLU", ReLU, lambda r: (ReLU(), (x(r, 3, 4),))),
        GradcheckCase("GELU (exact)", GELU, lambda r: (GELU("none"), (x(r, 3, 4),))),
        GradcheckCase("GELU (tanh)", GELU, lambda r: (GELU("tanh"), (x(r, 3, 4),))),
        GradcheckCase("Softmax", Softmax, lambda r: (Softmax(), (x(r, 3, 5),))),
        GradcheckCase("LayerNorm", LayerNorm, lambda r: (LayerNorm(6).astype(f64), (x(r, 2, 3, 6),))),
        GradcheckCase("RMSNorm", RMSNorm, rms_norm),
        GradcheckCase("SiLU", SiLU, lambda r: (SiLU(), (x(r, 3, 4),))),
        GradcheckCase("RotaryEmbedding (offset 3)", RotaryEmbedding,
                      lambda r: (RotaryEmbedding(6, 9).astype(f64), (x(r, 2, 3, 4, 6), 3))),
        GradcheckCase("ALiBiBias (3 queries after 2 cached keys)", ALiBiBias,
                      lambda r: (ALiBiBias(4), (x(r, 2, 4, 3, 5),))),
        GradcheckCase("Dropout (p=0.3)", Dropout, lambda r: (Dropout(0.3, r), (x(r, 3, 4),))),
        GradcheckCase("FeedForward (gelu, dropout)", FeedForward,
                      lambda r: (FeedForward(D, F, "gelu", 0.2, r).astype(f64), (x(r, 2, 3, D),))),
        GradcheckCase("FeedForward (swiglu, dropout)", FeedForward,
                      lambda r: (FeedForward(D, F, "swiglu", 0.2, r).astype(f64), (x(r, 2, 3, D),))),
        GradcheckCase("FeedForward (gelu_tanh, no bias)", FeedForward,
                      lambda r: (FeedForward(D, F, "gelu_tanh", rng=r, bias=False).astype(f64),
                                 (x(r, 2, 3, D),))),
        GradcheckCase("FeedForward (swiglu, no bias)", FeedForward,
                      lambda r: (FeedForward(D, F, "swiglu", rng=r, bias=False).astype(f64),
                                 (x(r, 2, 3, D),))),
        GradcheckCase("CrossEntropyLoss", CrossEntropyLoss, loss),
        GradcheckCase("ScaledDotProductAttention", ScaledDotProductAttention, sdpa),
        GradcheckCase("MultiHeadAttention (self, causal)", MultiHeadAttention,
                      lambda r: (MultiHeadAttention(D, H, rng=r).astype(f64), (x(r, 2, 4, D), None, causal_mask(4)))),
        GradcheckCase("MultiHeadAttention (self, causal, rope)", MultiHeadAttention,
                      lambda r: (MultiHeadAttention(D, H, rng=r, positional="rope", max_len=9).astype(f64),
                                 (x(r, 2, 4, D), None, causal_mask(4)))),
        GradcheckCase("MultiHeadAttention (self, padding, alibi)", MultiHeadAttention,
                      lambda r: (MultiHeadAttention(D, H, rng=r, positional="alibi").astype(f64),
                                 (x(r, 2, 5, D), None, key_padding(r, 2, 5, [5, 3])))),
        GradcheckCase("MultiHeadAttention (cross)", MultiHeadAttention,
                      lambda r: (MultiHeadAttention(D, H, rng=r).astype(f64),
                                 (x(r, 2, 4, D), x(r, 2, 6, D), key_padding(r, 2, 6, [6, 3])))),
        GradcheckCase("MultiHeadAttention (self, causal, rope, 8 heads on 2 kv heads)", MultiHeadAttention,
                      lambda r: (gqa("rope", rng=r), (x(r, 3, 5, 48), None, causal_mask(5))),
                      max_elements=60),
        GradcheckCase("MultiHeadAttention (cross, 8 heads on 2 kv heads, no bias)", MultiHeadAttention,
                      lambda r: (gqa(rng=r, bias=False),
                                 (x(r, 3, 5, 48), x(r, 3, 7, 48), key_padding(r, 3, 7, [7, 4, 2]))),
                      max_elements=60),
        GradcheckCase("EncoderLayer (pre-LN)", EncoderLayer,
                      lambda r: (EncoderLayer(D, H, F, rng=r).astype(f64),
                                 (x(r, 2, 5, D), key_padding(r, 2, 5, [5, 2])))),
        GradcheckCase("EncoderLayer (post-LN)", EncoderLayer,
                      lambda r: (EncoderLayer(D, H, F, norm_first=False, rng=r).astype(f64),
                                 (x(r, 2, 5, D), key_padding(r, 2, 5, [5, 2])))),
        GradcheckCase("DecoderLayer (pre-LN)", DecoderLayer,
                      lambda r: (DecoderLayer(D, H, F, rng=r).astype(f64),
                                 (x(r, 2, 4, D), x(r, 2, 6, D), causal_mask(4), key_padding(r, 2, 6, [6, 3])))),
        GradcheckCase("DecoderLayer (post-LN)", DecoderLayer,
                      lambda r: (DecoderLayer(D, H, F, norm_first=False, rng=r).astype(f64),
                                 (x(r, 2, 4, D), x(r, 2, 6, D), causal_mask(4), key_padding(r, 2, 6, [6, 3])))),
        GradcheckCase("EncoderLayer (pre-LN, rmsnorm, swiglu, rope)", EncoderLayer,
                      lambda r: (EncoderLayer(D, H, F, activation="swiglu", rng=r, norm="rmsnorm",
                                              positional="rope", max_len=9).astype(f64),
                                 (x(r, 2, 5, D), key_padding(r, 2, 5, [5, 2])))),
        GradcheckCase("DecoderLayer (post-LN, rmsnorm, alibi)", DecoderLayer,
                      lambda r: (DecoderLayer(D, H, F, norm_first=False, rng=r, norm="rmsnorm",
                                              positional="alibi").astype(f64),
                                 (x(r, 2, 4, D), x(r, 2, 6, D), causal_mask(4), key_padding(r, 2, 6, [6, 3])))),
        GradcheckCase("Encoder", Encoder,
                      lambda r: (Encoder(2, D, H, F, rng=r).astype(f64), (x(r, 2, 5, D), key_padding(r, 2, 5, [5, 2]))),
                      max_elements=40),
        GradcheckCase("Decoder", Decoder,
                      lambda r: (Decoder(2, D, H, F, rng=r).astype(f64),
                                 (x(r, 2, 4, D), x(r, 2, 6, D), causal_mask(4), key_padding(r, 2, 6, [6, 3]))),
                      max_elements=40),
        GradcheckCase("Transformer", Transformer,
                      lambda r: (Transformer(tiny_config(), r).astype(f64),
                                 (padded_ids(r, (3, 5), 11, [5, 3, 2]), padded_ids(r, (3, 7), 11, [7, 4, 6]))),
                      max_elements=40),
        GradcheckCase("DecoderOnlyTransformer", DecoderOnlyTransformer,
                      lambda r: (DecoderOnlyTransformer(tiny_config(), r).astype(f64),
                                 (padded_ids(r, (3, 7), 11, [7, 4, 6]),)),
                      max_elements=40),
        GradcheckCase("Transformer (modern: rope, rmsnorm, swiglu)", Transformer,
                      lambda r: (Transformer(tiny_config(**PRESETS["modern"]), r).astype(f64),
                                 (padded_ids(r, (3, 5), 11, [5, 3, 2]), padded_ids(r, (3, 7), 11, [7, 4, 6]))),
                      max_elements=12),
        GradcheckCase("DecoderOnlyTransformer (GPT-2-like: learned, gelu_tanh, tied, no head bias or scale)",
                      DecoderOnlyTransformer,
                      lambda r: (DecoderOnlyTransformer(gpt2_like(), r).astype(f64),
                                 (padded_ids(r, (3, 7), 11, [7, 4, 6]),)),
                      max_elements=30),
        GradcheckCase("DecoderOnlyTransformer (LLaMA-like: rope, rmsnorm, swiglu, no bias, GQA, untied)",
                      DecoderOnlyTransformer,
                      lambda r: (DecoderOnlyTransformer(llama_like(), r).astype(f64),
                                 (padded_ids(r, (3, 7), 11, [7, 4, 6]),)),
                      max_elements=30),
        GradcheckCase("DecoderOnlyTransformer (alibi, post-LN)", DecoderOnlyTransformer,
                      lambda r: (DecoderOnlyTransformer(tiny_config(positional="alibi", norm_first=False), r)
                                 .astype(f64), (padded_ids(r, (3, 7), 11, [7, 4, 6]),)),
                      max_elements=40),
    ]


def check_all(cases: list[GradcheckCase] | None = None, seed: int = 0) -> list[GradcheckResult]:
    """Run every standard case (or the ones given) and return their results."""
    results = []
    for case in cases or standard_cases():
        module, inputs = case.build(np.random.default_rng(seed))
        results.append(gradcheck(module, *inputs, name=case.name, max_elements=case.max_elements, seed=seed))
    return results


def format_table(results: list[GradcheckResult]) -> str:
    """One row per case: name, worst input error, worst parameter error, PASS/FAIL."""
    def cell(check: ArrayCheck | None) -> str:
        return f"{check.error:.1e}" if check else "-"
    width = max(len(r.name) for r in results)
    lines = [f"{'layer':<{width}}  {'input err':>9}  {'param err':>9}  result",
             "-" * (width + 30)]
    for r in results:
        lines.append(f"{r.name:<{width}}  {cell(r.worst('input')):>9}  {cell(r.worst('param')):>9}  "
                     f"{'PASS' if r.passed else 'FAIL'}")
    n_failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - n_failed} passed, {n_failed} failed "
                 f"(float64 central differences, tolerance {results[0].tol:.0e})")
    return "\n".join(lines)
