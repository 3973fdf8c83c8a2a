"""The assembled model: end-to-end gradient checks, masks, tying, parameter count, validation."""

import numpy as np
import pytest

import tinytransformer
from tinytransformer.gradcheck import check_all, gradcheck, standard_cases
from tinytransformer.nn import Module
from tinytransformer.nn.transformer import DecoderOnlyTransformer, Transformer, TransformerConfig

V, D, H, F = 11, 8, 2, 12


def config(**kw):
    base = dict(vocab_size=V, d_model=D, n_heads=H, d_ff=F, n_encoder_layers=2, n_decoder_layers=2, max_len=9)
    return TransformerConfig(**{**base, **kw})


def padded_batch(seed=0):
    """3 sources of length 5 and 3 targets of length 7 (S != T), unequal real lengths."""
    rng = np.random.default_rng(seed)
    src = rng.integers(3, V, (3, 5))
    tgt = rng.integers(3, V, (3, 7))
    src[1, 3:] = 0
    src[2, 1:] = 0
    tgt[1, 4:] = 0
    tgt[2, 6:] = 0
    return src, tgt


# ---- gradient checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", standard_cases(), ids=lambda c: c.name)
def test_standard_gradcheck_case_passes(case):
    [result] = check_all([case])
    assert result.passed, str(result)


def test_every_exported_layer_has_a_gradcheck_case():
    exported = {obj for obj in vars(tinytransformer).values()
                if isinstance(obj, type) and issubclass(obj, Module) and obj is not Module}
    covered = {case.cls for case in standard_cases()}
    assert exported, "the package exports no Module subclass?"
    missing = sorted(cls.__name__ for cls in exported - covered)
    assert not missing, f"layers without a gradient-check case in standard_cases(): {missing}"


MODEL_VARIANTS = [
    dict(),                                                          # pre-LN, sinusoidal, untied
    dict(norm_first=False),                                          # the paper's post-LN
    dict(positional="learned"),
    dict(tie_embeddings=True),
    dict(dropout=0.2),
    dict(norm_first=False, positional="learned", tie_embeddings=True, dropout=0.1, activation="gelu"),
]


@pytest.mark.parametrize("variant", MODEL_VARIANTS, ids=lambda v: ",".join(f"{k}={v}" for k, v in v.items()) or "default")
def test_transformer_end_to_end_gradcheck(variant):
    model = Transformer(config(**variant), np.random.default_rng(1)).astype(np.float64)
    src, tgt = padded_batch()
    result = gradcheck(model, src, tgt, max_elements=40)
    assert result.passed, str(result)
    names = {c.name for c in result.checks}
    assert len(names) == len(list(model.named_parameters()))


@pytest.mark.parametrize("variant", [dict(), dict(norm_first=False, positional="learned",
                                                  tie_embeddings=True, dropout=0.2)],
                         ids=["default", "post-LN,learned,tied,dropout"])
def test_decoder_only_end_to_end_gradcheck(variant):
    model = DecoderOnlyTransformer(config(**variant), np.random.default_rng(2)).astype(np.float64)
    _, ids = padded_batch()
    result = gradcheck(model, ids, max_elements=40)
    assert result.passed, str(result)


# ---- masks -------------------------------------------------------------------------------------

def test_decoder_is_causal():
    model = Transformer(config(), np.random.default_rng(0)).astype(np.float64)
    src, tgt = padded_batch()
    tgt[:, :] = np.random.default_rng(5).integers(3, V, tgt.shape)
    before = model(src, tgt)
    for j in range(1, tgt.shape[1]):
        changed = tgt.copy()
        changed[:, j] = 3 + (changed[:, j] - 2) % (V - 3)            # another real token
        after = model(src, changed)
        np.testing.assert_allclose(after[:, :j], before[:, :j], rtol=0, atol=1e-12)
        assert not np.allclose(after[:, j:], before[:, j:])


def test_decoder_only_is_causal():
    model = DecoderOnlyTransformer(config(), np.random.default_rng(0)).astype(np.float64)
    ids = np.random.default_rng(6).integers(3, V, (2, 7))
    before = model(ids)
    changed = ids.copy()
    changed[:, 4] = 3 + (changed[:, 4] - 2) % (V - 3)
    after = model(changed)
    np.testing.assert_allclose(after[:, :4], before[:, :4], rtol=0, atol=1e-12)
    assert not np.allclose(after[:, 4:], before[:, 4:])


def test_padded_positions_change_no_real_logit():
    model = Transformer(config(), np.random.default_rng(0)).astype(np.float64)
    src, tgt = padded_batch()
    src_mask, tgt_mask = src != 0, tgt != 0
    before = model(src, tgt, src_mask, tgt_mask)
    noisy_src, noisy_tgt = src.copy(), tgt.copy()
    rng = np.random.default_rng(9)
    noisy_src[~src_mask] = rng.integers(3, V, (~src_mask).sum())     # real-looking tokens under padding
    noisy_tgt[~tgt_mask] = rng.integers(3, V, (~tgt_mask).sum())
    after = model(noisy_src, noisy_tgt, src_mask, tgt_mask)
    np.testing.assert_allclose(after[tgt_mask], before[tgt_mask], rtol=0, atol=1e-12)


def test_masks_default_to_non_pad_tokens():
    model = Transformer(config(), np.random.default_rng(0)).astype(np.float64)
    src, tgt = padded_batch()
    np.testing.assert_array_equal(model(src, tgt), model(src, tgt, src != 0, tgt != 0))


# ---- structure ---------------------------------------------------------------------------------

def closed_form_count(c: TransformerConfig) -> int:
    Dm, Ff, Vv = c.d_model, c.d_ff, c.vocab_size
    mha = 4 * (Dm * Dm + Dm)
    ff = Dm * Ff + Ff + Ff * Dm + Dm
    ln = 2 * Dm
    encoder = c.n_encoder_layers * (mha + ff + 2 * ln) + (ln if c.norm_first else 0)
    decoder = c.n_decoder_layers * (2 * mha + ff + 3 * ln) + (ln if c.norm_first else 0)
    embeddings = (1 if c.tie_embeddings else 2) * Vv * Dm
    positions = c.max_len * Dm if c.positional == "learned" else 0
    out = Vv + (0 if c.tie_embeddings else Dm * Vv)
    return encoder + decoder + embeddings + positions + out


@pytest.mark.parametrize("variant", MODEL_VARIANTS + [dict(n_encoder_layers=3, n_decoder_layers=1)])
def test_parameter_count_matches_closed_form(variant):
    c = config(**variant)
    assert Transformer(c, np.random.default_rng(0)).num_parameters() == closed_form_count(c)


def test_reference_config_parameter_count():
    c = TransformerConfig(vocab_size=13)
    assert Transformer(c, np.random.default_rng(0)).num_parameters() == closed_form_count(c) == 236_237


def test_dotted_parameter_names_are_the_attribute_paths():
    names = [n for n, _, _ in Transformer(config(), np.random.default_rng(0)).named_parameters()]
    for expected in ["src_embed.weight", "tgt_embed.weight", "encoder.layers.0.self_attn.w_q.weight",
                     "decoder.layers.1.cross_attn.w_v.bias", "decoder.layers.0.norm3.weight",
                     "encoder.norm.bias", "out_proj.weight"]:
        assert expected in names
    post = [n for n, _, _ in Transformer(config(norm_first=False), np.random.default_rng(0)).named_parameters()]
    assert "encoder.norm.weight" not in post and "decoder.norm.weight" not in post


def test_attention_maps_cover_every_layer_and_kind():
    model = Transformer(config(), np.random.default_rng(0))
    src, tgt = padded_batch()
    model(src, tgt)
    maps = model.attention_maps()
    assert sorted(maps) == sorted(
        [f"encoder.layers.{i}.self_attn" for i in range(2)]
        + [f"decoder.layers.{i}.{k}" for i in range(2) for k in ("self_attn", "cross_attn")])
    assert maps["encoder.layers.0.self_attn"].shape == (3, H, 5, 5)
    assert maps["decoder.layers.1.self_attn"].shape == (3, H, 7, 7)
    assert maps["decoder.layers.1.cross_attn"].shape == (3, H, 7, 5)
    assert np.all(maps["decoder.layers.0.cross_attn"][1, :, :, 3:] == 0)   # padded source keys


# ---- tied embeddings ---------------------------------------------------------------------------

def test_tied_matrix_is_listed_once_as_tgt_embed_and_shared_three_ways():
    model = Transformer(config(tie_embeddings=True), np.random.default_rng(0))
    names = [n for n, _, _ in model.named_parameters()]
    assert "tgt_embed.weight" in names
    assert "src_embed.weight" not in names and "out_proj.weight" not in names
    assert "out_proj.bias" in names
    E = model.tgt_embed.params["weight"]
    assert model.src_embed.params["weight"] is E
    assert np.shares_memory(model.out_proj.params["weight"], E)


def test_tied_gradient_is_the_sum_of_the_three_uses():
    tied = Transformer(config(tie_embeddings=True), np.random.default_rng(0)).astype(np.float64)
    untied = Transformer(config(), np.random.default_rng(0)).astype(np.float64)
    state = tied.state_dict()
    E = state["tgt_embed.weight"]
    untied.load_state_dict({**state, "src_embed.weight": E, "out_proj.weight": E.T.copy()})
    src, tgt = padded_batch()
    upstream = np.random.default_rng(3).standard_normal((3, 7, V))
    for model in (tied, untied):
        model.zero_grad()
        model(src, tgt)
        model.backward(upstream)
    expected = (untied.src_embed.grads["weight"] + untied.tgt_embed.grads["weight"]
                + untied.out_proj.grads["weight"].T)
    np.testing.assert_allclose(tied.tgt_embed.grads["weight"], expected, rtol=1e-12, atol=1e-14)


def test_tie_survives_astype_and_load_state_dict():
    model = Transformer(config(tie_embeddings=True), np.random.default_rng(0)).astype(np.float64)
    E = model.tgt_embed.params["weight"]
    assert E.dtype == np.float64
    assert model.src_embed.params["weight"] is E and np.shares_memory(model.out_proj.params["weight"], E)
    assert np.shares_memory(model.out_proj.grads["weight"], model.tgt_embed.grads["weight"])
    other = Transformer(config(tie_embeddings=True), np.random.default_rng(7)).astype(np.float64)
    model.load_state_dict(other.state_dict())
    np.testing.assert_array_equal(model.out_proj.params["weight"], other.tgt_embed.params["weight"].T)
    np.testing.assert_array_equal(model.src_embed.params["weight"], other.tgt_embed.params["weight"])


# ---- config and input validation ---------------------------------------------------------------

def test_config_json_round_trip():
    c = config(norm_first=False, positional="learned", tie_embeddings=True, dropout=0.1)
    assert TransformerConfig.from_json(c.to_json()) == c


@pytest.mark.parametrize("bad, match", [
    (dict(d_model=10, n_heads=4), "divisible"),
    (dict(d_ff=0), "d_ff"),
    (dict(dropout=1.0), "dropout"),
    (dict(activation="tanh"), "activation"),
    (dict(positional="rotary"), "positional"),
    (dict(n_encoder_layers=-1), "n_encoder_layers"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        config(**bad)


def test_config_from_dict_rejects_unknown_field():
    with pytest.raises(ValueError, match="d_modle"):
        TransformerConfig.from_dict({"vocab_size": 5, "d_modle": 8})


def test_model_inputs_are_validated_with_clear_errors():
    model = Transformer(config(), np.random.default_rng(0))
    src, tgt = padded_batch()
    bad = src.copy()
    bad[1, 2] = V
    with pytest.raises(ValueError, match=rf"token id {V} out of range for vocab_size {V} \(src_ids\[1, 2\]\)"):
        model(bad, tgt)
    with pytest.raises(ValueError, match="tgt_ids: sequence length 10 exceeds max_len 9"):
        model(src, np.ones((3, 10), dtype=np.int64))
    with pytest.raises(TypeError, match="src_ids: expected an integer array"):
        model(src.astype(np.float32), tgt)
    with pytest.raises(ValueError, match="src_ids: expected a non-empty"):
        model(src[:0], tgt[:0])
    with pytest.raises(ValueError, match="batch size"):
        model(src, tgt[:2])
    with pytest.raises(ValueError, match="src_mask: expected a boolean array of shape"):
        model(src, tgt, src_mask=(src != 0).astype(int))
    with pytest.raises(RuntimeError, match="before forward"):
        Transformer(config(), np.random.default_rng(0)).backward(np.zeros((3, 7, V)))


def test_float32_model_computes_in_float32():
    model = Transformer(config(), np.random.default_rng(0))
    src, tgt = padded_batch()
    logits = model(src, tgt)
    assert logits.dtype == np.float32
    model.backward(np.ones_like(logits))
    assert all(g.dtype == np.float32 for _, _, g in model.named_parameters())


def test_backward_refuses_dlogits_of_another_shape():
    model = Transformer(config(), np.random.default_rng(0))
    src, tgt = padded_batch()
    logits = model(src, tgt)                                             # (3, 7, V)
    with pytest.raises(ValueError, match=r"dlogits: expected the shape of the forward's output \(3, 7, 11\)"):
        model.backward(np.ones((7, 3, V), np.float32))
    lm = DecoderOnlyTransformer(config(), np.random.default_rng(0))
    lm(tgt)
    with pytest.raises(ValueError, match="dlogits"):
        lm.backward(logits[:, :3])


def test_encode_or_decode_alone_forbids_a_backward_through_mixed_caches():
    model = Transformer(config(), np.random.default_rng(0))
    src, tgt = padded_batch()
    model(src, tgt)
    memory, src_keys = model.encode(src[:2])                   # overwrites the encoder's caches
    with pytest.raises(RuntimeError, match=r"caches were invalidated by inference \(encode\)"):
        model.backward(np.ones((3, 7, V), np.float32))
    model(src, tgt)
    model.decode(tgt[:2], memory, src_keys)
    with pytest.raises(RuntimeError, match=r"caches were invalidated by inference \(decode\)"):
        model.backward(np.ones((3, 7, V), np.float32))
