"""The parts of a modern decoder: RMSNorm, SiLU, SwiGLU, RoPE, ALiBi and no positions at all.

Their forward math against their formulas, the models built with them (both
models, pre-LN and post-LN, checked end to end along random directions), the clear errors,
the "modern" preset, and the defaults that still give yesterday's model.

Legend: B batch, H heads, T time, D d_model, F d_ff, dk head size (all distinct).
"""

from pathlib import Path

import numpy as np
import pytest

from tinytransformer import (PRESETS, ALiBiBias, DecoderOnlyTransformer, FeedForward, MultiHeadAttention,
                             RMSNorm, RotaryEmbedding, SiLU, Transformer, TransformerConfig,
                             load_checkpoint)
from tinytransformer.cli import build_parser, train_configs
from tinytransformer.gradcheck import padded_ids, directional_gradcheck
from tinytransformer.nn import LayerNorm

B, T, D, F, V = 2, 5, 8, 12, 11
DATA = Path(__file__).parent / "data"


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---- the layers' forward math --------------------------------------------------------------

def test_rmsnorm_is_x_over_its_root_mean_square_times_the_gain(rng):
    norm = RMSNorm(D, dtype=np.float64)
    norm.params["weight"][...] = rng.standard_normal(D)
    x = 3.0 + rng.standard_normal((B, T, D))            # not centred: RMSNorm must not centre it
    expected = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * norm.params["weight"]
    np.testing.assert_allclose(norm(x), expected, rtol=1e-12)
    assert list(norm.params) == ["weight"]


def test_silu_is_x_times_sigmoid_and_finite_for_huge_inputs(rng):
    x = rng.standard_normal((B, T))
    np.testing.assert_allclose(SiLU()(x), x * sigmoid(x), rtol=1e-12)
    np.testing.assert_array_equal(SiLU()(np.array([-1000.0, 1000.0])), [-0.0, 1000.0])


def test_swiglu_feedforward_is_linear2_of_silu_gate_times_up(rng):
    ff = FeedForward(D, F, "swiglu", rng=rng, dtype=np.float64)
    for _, p, _ in ff.named_parameters():
        p[...] = rng.standard_normal(p.shape)
    P = {name: p for name, p, _ in ff.named_parameters()}
    assert {name: p.shape for name, p in P.items()} == {
        "linear1.weight": (D, F), "linear1.bias": (F,), "linear2.weight": (F, D), "linear2.bias": (D,),
        "linear3.weight": (D, F), "linear3.bias": (F,)}
    x = rng.standard_normal((B, T, D))
    gate = x @ P["linear1.weight"] + P["linear1.bias"]
    up = x @ P["linear3.weight"] + P["linear3.bias"]
    expected = (gate * sigmoid(gate) * up) @ P["linear2.weight"] + P["linear2.bias"]
    np.testing.assert_allclose(ff(x), expected, rtol=1e-11)


def test_rope_rotates_the_two_halves_of_each_head_by_position_times_frequency(rng):
    dk, base = 6, 10000.0
    rope = RotaryEmbedding(dk, max_len=9, base=base, dtype=np.float64)
    x = rng.standard_normal((B, 3, T, dk))                       # (B, H, T, dk)
    theta = np.arange(T)[:, None] * base ** (-2 * np.arange(dk // 2) / dk)      # (T, dk/2)
    a, b = x[..., :3], x[..., 3:]
    expected = np.concatenate([a * np.cos(theta) - b * np.sin(theta),
                               b * np.cos(theta) + a * np.sin(theta)], axis=-1)
    np.testing.assert_allclose(rope(x), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rope(x[:, :, 2:], offset=2), expected[:, :, 2:], rtol=1e-12, atol=1e-15)


def test_rope_dot_products_depend_only_on_the_offset_between_positions(rng):
    rope = RotaryEmbedding(8, max_len=40, dtype=np.float64)
    q, k = rng.standard_normal((1, 1, 1, 8)), rng.standard_normal((1, 1, 1, 8))

    def score(p, p_key):
        return (rope(q, offset=p) * rope(k, offset=p_key)).sum()

    for shift in (1, 3, 17):
        assert score(5 + shift, 2 + shift) == pytest.approx(score(5, 2), rel=1e-12)
    assert score(5, 2) != pytest.approx(score(5, 3), rel=1e-3)
    np.testing.assert_allclose(np.linalg.norm(rope(q, offset=11)), np.linalg.norm(q), rtol=1e-12)


def test_alibi_slopes_and_bias_follow_the_paper():
    np.testing.assert_allclose(ALiBiBias(4).slopes, [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8])
    np.testing.assert_allclose(ALiBiBias(8).slopes, 2.0 ** -np.arange(1, 9))
    alibi = ALiBiBias(2)
    distance = np.abs(np.arange(3)[:, None] - np.arange(3))
    np.testing.assert_allclose(alibi.bias(3, 3), -alibi.slopes[:, None, None] * distance)
    # a decoding step: one new query at position 3 after 3 cached keys
    np.testing.assert_allclose(alibi.bias(1, 4)[:, 0], -alibi.slopes[:, None] * [3, 2, 1, 0])
    scores = np.zeros((B, 2, 3, 3))
    np.testing.assert_allclose(alibi(scores), np.broadcast_to(alibi.bias(3, 3), scores.shape))


def test_alibi_attention_is_softmax_of_scaled_scores_plus_bias(rng):
    mha = MultiHeadAttention(D, 2, rng=rng, dtype=np.float64, positional="alibi")
    x = rng.standard_normal((B, T, D))
    mha(x)
    q = mha.split_heads(x @ mha.w_q.params["weight"] + mha.w_q.params["bias"])
    k = mha.split_heads(x @ mha.w_k.params["weight"] + mha.w_k.params["bias"])
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(D // 2) - mha.attention.alibi.slopes[:, None, None] * \
        np.abs(np.arange(T)[:, None] - np.arange(T))
    expected = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    np.testing.assert_allclose(mha.attn, expected, rtol=1e-10)


# ---- the models --------------------------------------------------------------------------------

def tiny(**kw):
    sizes = dict(vocab_size=V, d_model=D, n_heads=2, d_ff=F, n_encoder_layers=2, n_decoder_layers=2, max_len=9)
    return TransformerConfig(**{**sizes, **kw})


def batch(seed=0):
    r = np.random.default_rng(seed)
    return padded_ids(r, (3, 5), V, [5, 3, 2]), padded_ids(r, (3, 7), V, [7, 4, 6])


VARIANTS = {
    "rope": dict(positional="rope"),
    "alibi, rmsnorm": dict(positional="alibi", norm="rmsnorm"),
    "none, swiglu": dict(positional="none", activation="swiglu"),
    "modern, tied, dropout": dict(**PRESETS["modern"], tie_embeddings=True, dropout=0.2),
}


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-LN", "post-LN"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("cls", [Transformer, DecoderOnlyTransformer])
def test_whole_model_gradient_along_random_directions(cls, variant, norm_first):
    options = {**VARIANTS[variant], "norm_first": norm_first}
    model = cls(tiny(**options), np.random.default_rng(4)).astype(np.float64)
    for name, p, _ in model.named_parameters():          # gains away from 1, so a wrong dgamma shows
        if "norm" in name:
            p[...] = 1.0 + 0.3 * np.random.default_rng(5).standard_normal(p.shape)
    src, tgt = batch()
    inputs = (src, tgt) if cls is Transformer else (tgt,)
    assert directional_gradcheck(model, *inputs, n_directions=2) < 1e-6     # the models' end-to-end tolerance


def test_the_options_reach_every_layer():
    model = Transformer(tiny(**PRESETS["modern"]), np.random.default_rng(0))
    assert model.pos is None                              # nothing added to the embeddings
    norms = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1].startswith("norm")]
    assert len(norms) == 2 * 2 + 2 * 3 + 2 and all(type(m) is RMSNorm for m in norms)
    for layer in model.encoder.layers + model.decoder.layers:
        assert layer.self_attn.rotary is not None and hasattr(layer.ff, "linear3")
    for layer in model.decoder.layers:
        assert layer.cross_attn.rotary is None and layer.cross_attn.attention.alibi is None
    lm = DecoderOnlyTransformer(tiny(positional="alibi", norm_first=False), np.random.default_rng(0))
    assert all(layer.self_attn.attention.alibi is not None for layer in lm.layers)
    assert not hasattr(lm, "norm") and type(lm.layers[0].norm1) is LayerNorm


@pytest.mark.parametrize("positional", ["rope", "alibi", "none"])
def test_a_model_without_layers_adds_nothing_to_the_scaled_embedding(positional):
    config = tiny(positional=positional, n_encoder_layers=0, n_decoder_layers=0, norm_first=False)
    model = Transformer(config, np.random.default_rng(0), dtype=np.float64)
    src, tgt = batch()
    x = model.tgt_embed.params["weight"][tgt] * np.sqrt(D)
    expected = x @ model.out_proj.params["weight"] + model.out_proj.params["bias"]
    np.testing.assert_allclose(model(src, tgt), expected, rtol=1e-12)


@pytest.mark.parametrize("positional, blind", [("none", True), ("rope", False), ("alibi", False)])
def test_an_encoder_without_positions_cannot_tell_order(positional, blind):
    """With no positions, permuting the source only permutes the encoder's output."""
    model = Transformer(tiny(positional=positional), np.random.default_rng(0), dtype=np.float64)
    src = np.array([[3, 4, 5, 6, 7]])
    order = [4, 2, 0, 3, 1]
    memory, _ = model.encode(src)
    permuted, _ = model.encode(src[:, order])
    assert np.allclose(permuted, memory[:, order], atol=1e-12) == blind


@pytest.mark.parametrize("positional, blind", [("alibi", True), ("rope", False), ("sinusoidal", False)])
def test_an_alibi_encoder_cannot_tell_left_from_right(positional, blind):
    """The encoder's bias -m |i - j| is symmetric: reversing the source only reverses the encoder's
    output, and cross-attention has no positions, so the decoder cannot tell a source from its
    reverse (an encoder-decoder with ALiBi cannot learn to reverse or copy)."""
    model = Transformer(tiny(positional=positional), np.random.default_rng(0), dtype=np.float64)
    src = np.array([[3, 4, 5, 6, 7]])
    memory, _ = model.encode(src)
    mirrored, _ = model.encode(src[:, ::-1])
    assert np.allclose(mirrored, memory[:, ::-1], atol=1e-12) == blind


def test_a_causal_decoder_without_positions_still_tells_order():
    """No positions, yet the same token gets different outputs at different places: position t
    sees t + 1 tokens, so the share of its attention the first token (BOS) can get is 1 / (t + 1).
    (Without a distinct token to count from, all positions would be alike.)"""
    model = DecoderOnlyTransformer(tiny(positional="none"), np.random.default_rng(0), dtype=np.float64)
    logits = model(np.array([[1, 5, 5, 5]]))
    assert not np.allclose(logits[0, 1], logits[0, 3])
    same = model(np.array([[5, 5, 5, 5]]))
    np.testing.assert_allclose(same[0, 1], same[0, 3], rtol=1e-12)


# ---- clear errors ------------------------------------------------------------------------------

def test_alibi_with_a_head_count_that_is_not_a_power_of_two_is_a_clear_error():
    with pytest.raises(ValueError, match=r"ALiBi: n_heads must be a power of two .* got n_heads=6"):
        ALiBiBias(6)
    with pytest.raises(ValueError, match=r"TransformerConfig.n_heads: positional='alibi' needs a power "
                                         r"of two .* got 6"):
        TransformerConfig(vocab_size=V, d_model=48, n_heads=6, positional="alibi")
    TransformerConfig(vocab_size=V, d_model=48, n_heads=6, positional="rope")      # fine with RoPE


def test_rope_with_an_odd_head_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"RotaryEmbedding: d_head must be even .* got d_head=5"):
        RotaryEmbedding(5, max_len=8)
    with pytest.raises(ValueError, match=r"positional='rope' needs an even head size d_model / n_heads "
                                         r".* got 15 \(d_model 30, n_heads 2\)"):
        TransformerConfig(vocab_size=V, d_model=30, n_heads=2, positional="rope")
    TransformerConfig(vocab_size=V, d_model=30, n_heads=2, positional="alibi")     # fine with ALiBi


def test_other_bad_choices_are_clear_errors(rng):
    with pytest.raises(ValueError, match="positional: expected one of 'sinusoidal', 'learned', 'rope', "
                                         "'alibi', 'none', got 'rotary'"):
        tiny(positional="rotary")
    with pytest.raises(ValueError, match="norm: expected 'layernorm' or 'rmsnorm', got 'batchnorm'"):
        tiny(norm="batchnorm")
    with pytest.raises(ValueError, match="rope_base: expected a number > 1, got 0"):
        tiny(rope_base=0)
    mha = MultiHeadAttention(D, 2, rng=rng, positional="rope", max_len=9)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    with pytest.raises(ValueError, match="is for self-attention: got a context"):
        mha(x, context=x)
    with pytest.raises(ValueError, match="positions 7..11 do not fit max_len 9"):
        mha.rotary(rng.standard_normal((B, 2, T, 4)).astype(np.float32), offset=7)


# ---- the preset, the CLI, and yesterday's checkpoints ------------------------------------------

def test_the_modern_preset_in_one_flag_and_what_overrides_it(tmp_path):
    def model_config(*flags):
        args = build_parser().parse_args(["train", "--out", str(tmp_path / "run"), *flags])
        return train_configs(args)[1]
    modern = model_config("--preset", "modern")
    assert (modern.positional, modern.norm, modern.activation, modern.norm_first) == \
        ("rope", "rmsnorm", "swiglu", True)
    assert model_config("--preset", "modern", "--positional", "alibi").positional == "alibi"
    flags = model_config("--positional", "none", "--norm", "rmsnorm", "--activation", "swiglu",
                         "--rope-base", "500", "--post-ln")
    assert (flags.positional, flags.norm, flags.activation, flags.rope_base, flags.norm_first) == \
        ("none", "rmsnorm", "swiglu", 500.0, False)
    assert model_config("--preset", "reference") == model_config()


@pytest.mark.parametrize("name, cls", [("transformer", Transformer), ("decoder_only", DecoderOnlyTransformer)])
def test_a_checkpoint_from_before_these_fields_loads_as_before(name, cls):
    """Written by the code before this change (tests/data/README.md), with the logits it gave."""
    model, info = load_checkpoint(DATA / f"pre_modern_{name}.npz")
    config = info["config"]
    assert type(model) is cls and (config.norm, config.rope_base, config.positional) == \
        ("layernorm", 10000.0, "sinusoidal")
    ids, logits = info["extra"]["ids"], info["extra"]["logits"]
    # the old code's logits were computed in float64 from the saved float32 weights: float64
    # rounding, not float32's (~1e-6 here, and machine-dependent), is all that may differ
    assert logits.dtype == np.float64
    wide = cls(config, np.random.default_rng(0), dtype=np.float64)
    load_checkpoint(DATA / f"pre_modern_{name}.npz", model=wide)
    ours = wide(ids, ids) if cls is Transformer else wide(ids)
    np.testing.assert_allclose(ours, logits, rtol=0, atol=1e-12)
    # today's defaults draw the very same weights, and load into a model built from today's config
    fresh = cls(TransformerConfig(vocab_size=13, d_model=16, n_heads=2, d_ff=24, max_len=12),
                np.random.default_rng(0))
    for (n1, p1, _), (n2, p2, _) in zip(fresh.named_parameters(), model.named_parameters()):
        assert n1 == n2 and np.array_equal(p1, p2), n1
    load_checkpoint(DATA / f"pre_modern_{name}.npz", model=fresh)


def test_a_run_from_before_these_fields_resumes_with_their_defaults(tmp_path):
    """A run directory's config.json written before `norm` and `rope_base` existed."""
    import json
    from tinytransformer.train import TrainConfig, check_resume, default_model_config
    config = TrainConfig()
    model = default_model_config(config).to_dict()
    del model["norm"], model["rope_base"]
    (tmp_path / "config.json").write_text(json.dumps({"train": config.to_dict(), "model": model}))
    check_resume(tmp_path, config, default_model_config(config))                  # no difference
    with pytest.raises(ValueError, match="norm 'rmsnorm' \\(the run has 'layernorm'\\)"):
        check_resume(tmp_path, config, default_model_config(config, norm="rmsnorm"))
