"""What a decoder needs to be GPT-2 or a LLaMA: grouped-query attention, biases on or off, no sqrt(D)
embedding scale, the norm eps, no output-head bias, positions up to a large max_len.

Each is a config field whose default keeps the models of before bit for bit (checked against
tests/data/before_model_options.npz, written by the code before these fields existed). Each is
checked by float64 central differences, against its plain definition in NumPy, and with the KV
cache; the PyTorch definitions are in tests/test_against_pytorch.py.

Legend: B batch, T time, H query heads, Hkv key/value heads, g = H / Hkv, dk head size, D d_model.
"""

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tinytransformer import (DecoderOnlyTransformer, FeedForward, LayerNorm, Linear, MultiHeadAttention,
                             RMSNorm, RotaryEmbedding, Transformer, TransformerConfig, load_checkpoint,
                             save_checkpoint)
from tinytransformer.gradcheck import directional_gradcheck, padded_ids
from tinytransformer.nn.attention import causal_mask
from tinytransformer.nn.rotary import rotary_angles
from tinytransformer.nn.embedding import sinusoidal_table

DATA = Path(__file__).parent / "data"
B, T, S = 3, 5, 7                      # batch, target (query) length, source (key) length
H, HKV, DK = 8, 2, 6                   # 8 query heads in 2 groups of 4, head size 6
D = H * DK                             # 48
NEW_FIELDS = ("n_kv_heads", "bias", "head_bias", "embed_scale", "norm_eps")


def key_padding(n_real, length):       # (B, 1, 1, length): row b has n_real[b] real keys
    return (np.arange(length) < np.array(n_real)[:, None])[:, None, None, :]


def gpt2_like(**kw):
    """GPT-2's choices: learned positions, tanh GELU, LayerNorm eps 1e-5, tied, no head bias, unscaled."""
    return TransformerConfig(**{**dict(vocab_size=11, d_model=12, n_heads=2, d_ff=20, n_decoder_layers=2,
                                       max_len=9, positional="learned", activation="gelu_tanh",
                                       norm_eps=1e-5, tie_embeddings=True, head_bias=False,
                                       embed_scale=False), **kw})


def llama_like(**kw):
    """LLaMA's choices: RoPE, RMSNorm eps 1e-6, SwiGLU, no biases at all, 6 query heads on 2 kv heads."""
    return TransformerConfig(**{**dict(vocab_size=11, d_model=24, n_heads=6, n_kv_heads=2, d_ff=20,
                                       n_encoder_layers=2, n_decoder_layers=2, max_len=9,
                                       positional="rope", norm="rmsnorm", norm_eps=1e-6,
                                       activation="swiglu", bias=False, head_bias=False,
                                       embed_scale=False), **kw})


def randomise(model, seed=5):
    """Biases away from 0 and norm gains away from 1, so that no term hides; weights as drawn."""
    r = np.random.default_rng(seed)
    for name, p, _ in model.named_parameters():
        if name.endswith("bias"):
            p[...] = 0.3 * r.standard_normal(p.shape)
        elif "norm" in name:
            p[...] = 1.0 + 0.3 * r.standard_normal(p.shape)
    return model


# ---- the config ----------------------------------------------------------------------------

def test_the_defaults_are_todays_model():
    c = TransformerConfig(vocab_size=13)
    assert (c.n_kv_heads, c.bias, c.head_bias, c.embed_scale, c.norm_eps) == (None, True, True, True, 1e-5)
    assert c.kv_heads == c.n_heads


def test_the_new_fields_go_through_json_and_an_old_config_loads_with_their_defaults():
    c = llama_like(tie_embeddings=True)
    assert TransformerConfig.from_json(c.to_json()) == c
    assert json.loads(c.to_json())["n_kv_heads"] == 2 and c.kv_heads == 2
    old = {k: v for k, v in TransformerConfig(vocab_size=13).to_dict().items() if k not in NEW_FIELDS}
    assert TransformerConfig.from_json(json.dumps(old)) == TransformerConfig(vocab_size=13)


def test_numpy_values_are_stored_as_python_values():
    c = TransformerConfig(vocab_size=13, n_kv_heads=np.int64(2), bias=np.bool_(False),
                          norm_eps=np.float32(1e-6))
    assert type(c.n_kv_heads) is int and type(c.bias) is bool and type(c.norm_eps) is float
    c.to_json()


@pytest.mark.parametrize("field, value, expected", [
    ("n_kv_heads", 3, r"dividing n_heads \(4\), got 3"), ("n_kv_heads", 0, "dividing n_heads"),
    ("n_kv_heads", 2.0, "positive integer"), ("n_kv_heads", True, "got True"),
    ("bias", 1, "True or False, got 1"), ("head_bias", "no", "True or False"),
    ("embed_scale", None, "True or False, got None"),
    ("norm_eps", 0.0, "number > 0, got 0.0"), ("norm_eps", -1e-5, "> 0"), ("norm_eps", "1e-5", "> 0"),
])
def test_a_bad_value_is_a_clear_error_naming_the_field(field, value, expected):
    with pytest.raises(ValueError, match=f"TransformerConfig.{field}: expected.*{expected}"):
        TransformerConfig(vocab_size=13, **{field: value})


def test_an_attention_refuses_a_key_value_head_count_that_does_not_divide_its_heads(rng):
    with pytest.raises(ValueError, match=r"n_kv_heads: expected None or a positive integer dividing "
                                         r"n_heads \(8\), got 3"):
        MultiHeadAttention(D, H, rng=rng, n_kv_heads=3)


# ---- the defaults, bit for bit -----------------------------------------------------------------

BEFORE = {  # the models of tests/data/before_model_options.npz (see tests/data/README.md)
    "transformer": (Transformer, {}),
    "decoder_only": (DecoderOnlyTransformer, {}),
    "transformer_learned_gelu_tanh_post_ln_tied": (
        Transformer, dict(positional="learned", activation="gelu_tanh", norm_first=False, tie_embeddings=True)),
    "decoder_only_modern_tied": (DecoderOnlyTransformer, dict(positional="rope", norm="rmsnorm",
                                                              activation="swiglu", tie_embeddings=True)),
    "decoder_only_alibi_gelu": (DecoderOnlyTransformer, dict(positional="alibi", activation="gelu")),
}


@pytest.mark.parametrize("case", BEFORE)
def test_default_fields_draw_the_same_parameters_and_give_the_same_logits_as_before(case):
    before = np.load(DATA / "before_model_options.npz")
    cls, options = BEFORE[case]
    config = TransformerConfig(vocab_size=13, d_model=16, n_heads=2, d_ff=24, max_len=12, **options)
    names = [k.split("/", 2)[2] for k in before.files if k.startswith(f"{case}/float32/")]
    params = list(cls(config, np.random.default_rng(0)).named_parameters())
    assert [name for name, _, _ in params] == names                          # same names, same order
    for name, p, _ in params:                                                # same draws, bit for bit
        assert p.dtype == np.float32 and np.array_equal(p, before[f"{case}/float32/{name}"]), name
    ids = before["ids"]
    model = cls(config, np.random.default_rng(0), dtype=np.float64)
    logits = model(ids, ids) if cls is Transformer else model(ids)
    # float64: the same operations agree far below this on any machine (float32 would not)
    np.testing.assert_allclose(logits, before[f"{case}/float64_logits"], rtol=0, atol=1e-12)


# ---- grouped-query attention -----------------------------------------------------------------

@pytest.mark.parametrize("positional", [None, "rope", "alibi"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
def test_grouped_query_self_attention_gradcheck(positional, bias, rng, assert_gradcheck):
    mha = MultiHeadAttention(D, H, rng=rng, positional=positional, max_len=9, n_kv_heads=HKV,
                             bias=bias).astype(np.float64)
    randomise(mha)
    mask = causal_mask(T) & key_padding([5, 3, 4], T)                      # (B, 1, T, T)
    result = assert_gradcheck(mha, rng.standard_normal((B, T, D)), None, mask, max_elements=60)
    checked = {c.name for c in result.checks}
    assert {"param w_k.weight", "param w_v.weight"} <= checked
    assert ("param w_o.bias" in checked) == bias


def test_grouped_query_cross_attention_gradcheck(rng, assert_gradcheck):
    mha = randomise(MultiHeadAttention(D, H, rng=rng, n_kv_heads=HKV).astype(np.float64))
    assert_gradcheck(mha, rng.standard_normal((B, T, D)), rng.standard_normal((B, S, D)),
                     key_padding([7, 4, 2], S), max_elements=60)


def test_key_and_value_projections_map_to_the_key_value_heads_only(rng):
    mha = MultiHeadAttention(D, H, rng=rng, n_kv_heads=HKV, bias=False)
    shapes = {name: p.shape for name, p, _ in mha.named_parameters()}
    assert shapes == {"w_q.weight": (D, D), "w_k.weight": (D, HKV * DK), "w_v.weight": (D, HKV * DK),
                      "w_o.weight": (D, D)}
    assert "n_kv_heads=2" in repr(mha)


def test_query_head_h_attends_with_key_value_head_h_over_g(rng):
    """The plain definition: head h = softmax(q_h k_j^T / sqrt(dk)) v_j with j = h // g, one head at a time."""
    mha = randomise(MultiHeadAttention(D, H, rng=rng, dtype=np.float64, n_kv_heads=HKV))
    x = rng.standard_normal((B, T, D))
    P = {name: p for name, p, _ in mha.named_parameters()}
    q = x @ P["w_q.weight"] + P["w_q.bias"]                                 # (B, T, H * dk)
    k = x @ P["w_k.weight"] + P["w_k.bias"]                                 # (B, T, Hkv * dk)
    v = x @ P["w_v.weight"] + P["w_v.bias"]
    heads = []
    for h in range(H):
        j = h // (H // HKV)
        qh, kj, vj = q[..., h * DK:(h + 1) * DK], k[..., j * DK:(j + 1) * DK], v[..., j * DK:(j + 1) * DK]
        scores = qh @ kj.swapaxes(-1, -2) / np.sqrt(DK) + np.where(causal_mask(T), 0, -np.inf)
        a = np.exp(scores - scores.max(-1, keepdims=True))
        heads.append(a / a.sum(-1, keepdims=True) @ vj)                     # (B, T, dk)
    expected = np.concatenate(heads, axis=-1) @ P["w_o.weight"] + P["w_o.bias"]
    np.testing.assert_allclose(mha(x, mask=causal_mask(T)), expected, rtol=1e-12, atol=1e-13)


def test_a_shared_head_gets_the_sum_of_its_query_groups_gradients(rng):
    """The same attention with every key/value head copied out to its g query heads (a full
    attention of H kv heads) gives the same output; its key/value weight gradients, summed over
    each group's copies, are the grouped attention's."""
    gqa = randomise(MultiHeadAttention(D, H, rng=rng, dtype=np.float64, n_kv_heads=HKV, positional="rope",
                                       max_len=9))
    full = MultiHeadAttention(D, H, rng=rng, dtype=np.float64, positional="rope", max_len=9)
    g = H // HKV

    def copied(a):                     # (D, Hkv * dk) or (Hkv * dk,) -> (D, H * dk): head j to heads j*g..
        return np.repeat(a.reshape(a.shape[:-1] + (HKV, DK)), g, axis=-2).reshape(a.shape[:-1] + (H * DK,))

    full_params = {name: p for name, p, _ in full.named_parameters()}
    for name, p, _ in gqa.named_parameters():
        full_params[name][...] = copied(p) if name.startswith(("w_k", "w_v")) else p
    x, dout = rng.standard_normal((B, T, D)), rng.standard_normal((B, T, D))
    np.testing.assert_allclose(gqa(x, mask=causal_mask(T)), full(x, mask=causal_mask(T)), rtol=1e-12)
    np.testing.assert_allclose(gqa.backward(dout), full.backward(dout), rtol=1e-11, atol=1e-13)
    full_grads = {name: grad for name, _, grad in full.named_parameters()}
    for name, _, grad in gqa.named_parameters():
        if name.startswith(("w_k", "w_v")):      # (..., H * dk) -> (..., Hkv, g, dk), summed over g
            summed = full_grads[name].reshape(grad.shape[:-1] + (HKV, g, DK)).sum(-2).reshape(grad.shape)
            np.testing.assert_allclose(grad, summed, rtol=1e-11, atol=1e-13)
        else:
            np.testing.assert_allclose(grad, full_grads[name], rtol=1e-11, atol=1e-13)


# ---- biases, the embedding scale, the output head, the norms' eps -------------------------------------

@pytest.mark.parametrize("activation", ["gelu_tanh", "swiglu"])
def test_feedforward_without_bias_gradcheck_and_definition(activation, rng, assert_gradcheck):
    ff = FeedForward(12, 20, activation, rng=rng, bias=False).astype(np.float64)
    assert all(not name.endswith("bias") for name, _, _ in ff.named_parameters())
    x = rng.standard_normal((B, T, 12))
    P = {name: p for name, p, _ in ff.named_parameters()}
    h = x @ P["linear1.weight"]
    if activation == "swiglu":
        hidden = h / (1 + np.exp(-h)) * (x @ P["linear3.weight"])
    else:                                # GPT-2's GELU: 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))
        hidden = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))
    np.testing.assert_allclose(ff(x), hidden @ P["linear2.weight"], rtol=1e-12, atol=1e-14)
    assert_gradcheck(ff, x)


@pytest.mark.parametrize("cls", [Transformer, DecoderOnlyTransformer])
def test_bias_false_removes_every_attention_and_feedforward_bias_and_keeps_the_norms(cls):
    model = cls(TransformerConfig(vocab_size=11, d_model=12, n_heads=2, d_ff=20, bias=False),
                np.random.default_rng(0))
    linears = [name for name, m in model.named_modules() if isinstance(m, Linear) and name != "out_proj"]
    # two layers of (self-attention, [cross-attention,] feed-forward): 4 + [4 +] 2 Linears each
    assert len(linears) == (2 * (4 + 2) + 2 * (4 + 4 + 2) if cls is Transformer else 2 * (4 + 2))
    biases = [name for name, _, _ in model.named_parameters() if name.endswith(".bias")]
    assert biases and all("norm" in name or name == "out_proj.bias" for name in biases)


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("cls", [Transformer, DecoderOnlyTransformer])
def test_no_head_bias_leaves_the_logits_h_at_w_tied_or_not(cls, tie):
    config = TransformerConfig(vocab_size=11, d_model=12, n_heads=2, d_ff=20, n_encoder_layers=0,
                               n_decoder_layers=0, norm_first=False, positional="none", head_bias=False,
                               tie_embeddings=tie)
    model = cls(config, np.random.default_rng(0), dtype=np.float64)
    assert "bias" not in model.out_proj.params
    names = [name for name, _, _ in model.named_parameters()]
    embed = "tgt_embed.weight" if cls is Transformer else "embed.weight"
    assert ("out_proj.weight" in names) != tie and embed in names
    ids = padded_ids(np.random.default_rng(1), (B, T), 11, [5, 3, 4])
    logits = model(ids, ids) if cls is Transformer else model(ids)
    E = {name: p for name, p, _ in model.named_parameters()}[embed]
    W = E.T if tie else model.out_proj.params["weight"]
    np.testing.assert_allclose(logits, E[ids] * np.sqrt(12) @ W, rtol=1e-12)


@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("cls", [Transformer, DecoderOnlyTransformer])
def test_embed_scale_false_adds_the_positions_to_the_unscaled_embedding(cls, scale, assert_gradcheck):
    config = TransformerConfig(vocab_size=11, d_model=12, n_heads=2, d_ff=20, n_encoder_layers=0,
                               n_decoder_layers=0, norm_first=False, max_len=9, positional="learned",
                               embed_scale=scale)
    model = cls(config, np.random.default_rng(0), dtype=np.float64)
    P = {name: p for name, p, _ in model.named_parameters()}
    E = P["tgt_embed.weight" if cls is Transformer else "embed.weight"]
    ids = padded_ids(np.random.default_rng(1), (B, T), 11, [5, 3, 4])
    inputs = (ids, ids) if cls is Transformer else (ids,)
    x = E[ids] * (np.sqrt(12) if scale else 1.0) + P["pos.weight"][:T]                  # (B, T, D)
    np.testing.assert_allclose(model(*inputs), x @ P["out_proj.weight"] + P["out_proj.bias"], rtol=1e-12)
    assert_gradcheck(model, *inputs)          # the embedding's gradient carries the same factor


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("cls", [Transformer, DecoderOnlyTransformer])
def test_norm_eps_reaches_every_norm_and_is_the_one_computed_with(cls, norm):
    config = TransformerConfig(vocab_size=11, d_model=12, n_heads=2, d_ff=20, norm=norm, norm_eps=1e-2)
    model = cls(config, np.random.default_rng(0), dtype=np.float64)
    norms = [m for _, m in model.named_modules() if isinstance(m, (LayerNorm, RMSNorm))]
    assert len(norms) == (2 * 2 + 2 * 3 + 2 if cls is Transformer else 2 * 2 + 1)     # the final ones too
    assert all(m.eps == 1e-2 for m in norms)
    x = 0.1 * np.random.default_rng(2).standard_normal((B, 12))     # small, so that eps shows
    mean = x.mean(-1, keepdims=True) if norm == "layernorm" else 0.0
    expected = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-2)
    np.testing.assert_allclose(norms[-1](x), expected, rtol=1e-12)


# ---- the two models with every option ---------------------------------------------------------------

@pytest.mark.parametrize("config", [gpt2_like(), llama_like(), llama_like(tie_embeddings=True, bias=True)],
                         ids=["GPT-2-like", "LLaMA-like", "LLaMA-like, tied, biases"])
@pytest.mark.parametrize("cls", [Transformer, DecoderOnlyTransformer])
def test_whole_model_with_every_option_gradient_along_random_directions(cls, config):
    model = randomise(cls(config, np.random.default_rng(4)).astype(np.float64))
    src, tgt = padded_ids(np.random.default_rng(0), (3, 5), 11, [5, 3, 2]), \
        padded_ids(np.random.default_rng(1), (3, 7), 11, [7, 4, 6])
    inputs = (src, tgt) if cls is Transformer else (tgt,)
    assert directional_gradcheck(model, *inputs, n_directions=2) < 1e-6


def test_the_llama_like_model_is_built_as_configured():
    model = DecoderOnlyTransformer(llama_like(), np.random.default_rng(0))
    assert model.pos is None and "bias" not in model.out_proj.params
    assert not np.shares_memory(model.out_proj.params["weight"], model.embed.params["weight"])  # untied
    for layer in model.layers:
        attn = layer.self_attn
        assert (attn.n_heads, attn.n_kv_heads, attn.positional) == (6, 2, "rope")
        assert attn.w_k.params["weight"].shape == (24, 2 * 4) and layer.ff.gated
        assert isinstance(layer.norm1, RMSNorm) and layer.norm1.eps == 1e-6


# ---- the KV cache ---------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [dict(), dict(positional="alibi", n_heads=8, d_model=48),
                                     dict(positional="none", n_kv_heads=1)],
                         ids=["rope", "alibi", "none, one kv head"])
def test_the_cache_keeps_the_key_value_heads_only_and_gives_the_logits_of_recomputation(options):
    model = randomise(DecoderOnlyTransformer(llama_like(**options), np.random.default_rng(0))
                      .astype(np.float64)).eval()
    ids = padded_ids(np.random.default_rng(3), (B, 8), 11, [8, 8, 6])
    full = model(ids)                                                       # (B, 8, V)
    cache = model.init_cache(B)
    steps = [model.decode_step(ids[:, :3], cache)] + [model.decode_step(ids[:, t:t + 1], cache)
                                                      for t in range(3, 8)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-10, atol=1e-12)
    c = model.config
    assert cache.self_attn[0].k.shape == (B, c.kv_heads, 8, c.d_model // c.n_heads)


def test_the_encoder_decoder_cache_with_grouped_cross_attention():
    model = randomise(Transformer(llama_like(), np.random.default_rng(0)).astype(np.float64)).eval()
    src = padded_ids(np.random.default_rng(1), (B, 6), 11, [6, 4, 2])
    tgt = padded_ids(np.random.default_rng(2), (B, 5), 11, [5, 5, 3])
    memory, src_keys = model.encode(src)
    cache = model.init_cache(memory, src_keys)
    steps = [model.decode_step(tgt[:, t:t + 1], cache) for t in range(5)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), model(src, tgt), rtol=1e-10, atol=1e-12)
    assert cache.cross_attn[0].k.shape == (B, 2, 6, 4) and cache.self_attn[0].k.shape[1] == 2


# ---- positions up to the model's maximum ------------------------------------------------------------

def test_rope_tables_grow_with_the_positions_used_and_equal_the_whole_table():
    rope = RotaryEmbedding(8, max_len=100)
    assert rope.buffers["cos"].shape == (0, 4)                 # nothing before it is used
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 8)).astype(np.float32)
    rope(x)
    assert rope.buffers["cos"].shape == (8, 4)                 # the next power of two
    rope(x, offset=95)
    assert rope.buffers["cos"].shape == (100, 4)               # never beyond max_len
    angle = rotary_angles(100, 8)                              # the whole table at once, as before
    assert np.array_equal(rope.buffers["cos"], np.cos(angle).astype(np.float32))
    assert np.array_equal(rope.buffers["sin"], np.sin(angle).astype(np.float32))
    with pytest.raises(ValueError, match=r"positions 96..100 do not fit max_len 100"):
        rope(x, offset=96)


def test_astype_float64_recomputes_the_rope_tables_in_float64():
    model = DecoderOnlyTransformer(llama_like(), np.random.default_rng(0))
    ids = padded_ids(np.random.default_rng(1), (B, 7), 11, [7, 4, 6])
    model(ids)                                                   # float32 tables of 8 rows
    model.astype(np.float64)
    model(ids)
    rope = model.layers[0].self_attn.rotary
    assert rope.buffers["cos"].dtype == np.float64
    np.testing.assert_array_equal(rope.buffers["cos"], np.cos(rotary_angles(8, 4)))    # not widened
    exact = DecoderOnlyTransformer(llama_like(), np.random.default_rng(0), dtype=np.float64)
    for (_, p, _), (_, q, _) in zip(model.named_parameters(), exact.named_parameters()):
        p[...] = q
    np.testing.assert_array_equal(model(ids), exact(ids))


def test_astype_float64_recomputes_the_sinusoidal_table_in_float64():
    """Widening the float32 table would leave it ~3e-8 off the float64 one."""
    config = TransformerConfig(vocab_size=11, d_model=12, n_heads=2, d_ff=20, max_len=9)
    model = DecoderOnlyTransformer(config, np.random.default_rng(0)).astype(np.float64)
    ids = np.random.default_rng(1).integers(3, 11, size=(2, 5))
    exact = DecoderOnlyTransformer(config, np.random.default_rng(0), dtype=np.float64)
    for (_, p, _), (_, q, _) in zip(model.named_parameters(), exact.named_parameters()):
        p[...] = q
    np.testing.assert_array_equal(model(ids), exact(ids))
    np.testing.assert_array_equal(model.pos.buffers["pe"], sinusoidal_table(9, 12))


def test_a_llama_shaped_model_of_131072_positions_builds_no_table_of_its_positions():
    """32 layers of (131072, 64) float32 cos and sin tables would be 2 GB; nothing of max_len is built."""
    config = TransformerConfig(vocab_size=64, d_model=512, n_heads=4, n_kv_heads=1, d_ff=64,
                               n_decoder_layers=3, max_len=131072, positional="rope", norm="rmsnorm",
                               activation="swiglu", bias=False, head_bias=False, embed_scale=False)
    tracemalloc.start()
    model = DecoderOnlyTransformer(config, np.random.default_rng(0))
    model(np.arange(1, 11)[None])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    parameters = 4 * model.num_parameters()                     # bytes, float32
    # the parameters and their gradients, and a little: one layer's full cos and sin tables
    # (131072, 64) in float32 would be 64 MiB
    assert peak < 2 * parameters + 4 * 2 ** 20, (peak, parameters)
    assert model.layers[0].self_attn.rotary.buffers["cos"].shape == (16, 64)


def test_a_gpt2_sized_context_of_1024_learned_positions_decodes_at_its_last_position():
    config = gpt2_like(max_len=1024, d_model=8, n_heads=2, d_ff=8, n_decoder_layers=1)
    model = randomise(DecoderOnlyTransformer(config, np.random.default_rng(0)).astype(np.float64)).eval()
    ids = np.random.default_rng(1).integers(1, 11, (1, 1024))
    full = model(ids)
    cache = model.init_cache(1)
    model.decode_step(ids[:, :1023], cache)
    np.testing.assert_allclose(model.decode_step(ids[:, 1023:], cache), full[:, 1023:], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="sequence length 1025 exceeds max_len 1024"):
        model(np.ones((1, 1025), dtype=int))


# ---- checkpoints -----------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [gpt2_like(), llama_like()], ids=["GPT-2-like", "LLaMA-like"])
def test_a_checkpoint_with_the_new_fields_loads_the_same_model(config, tmp_path):
    model = randomise(DecoderOnlyTransformer(config, np.random.default_rng(0)))
    ids = padded_ids(np.random.default_rng(1), (B, 7), 11, [7, 4, 6])
    save_checkpoint(tmp_path / "ckpt.npz", model, step=3)
    loaded, info = load_checkpoint(tmp_path / "ckpt.npz")
    assert info["config"] == config
    np.testing.assert_array_equal(loaded(ids), model(ids))
