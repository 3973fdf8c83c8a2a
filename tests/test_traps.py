"""API traps a learner falls into: each test fails on the code before.

(The attention map exposed for plotting is in test_attention.py; the "caches invalidated by
inference" messages in test_transformer.py and test_decode.py.)
"""

import io
import json

import numpy as np
import pytest

from tinytransformer import (BOS, EOS, PAD, DecoderOnlyTransformer, FeedForward, Linear, Module,
                             MultiHeadAttention, Transformer, TransformerConfig, beam_search,
                             generate, greedy_decode)
from tinytransformer.train import TrainConfig, build_schedule, default_model_config, train

V = 13


def small(cls, **kw):
    config = TransformerConfig(vocab_size=V, d_model=8, n_heads=2, d_ff=12, n_encoder_layers=1,
                               n_decoder_layers=1, max_len=10, **kw)
    return cls(config, np.random.default_rng(0))


# ---- one generator per tree ----------------------------------------------------------------

def test_a_composite_built_without_rng_gets_distinct_weights_in_every_child():
    mha = MultiHeadAttention(8, 2)
    weights = [mha.w_q, mha.w_k, mha.w_v, mha.w_o]
    for i, a in enumerate(weights):
        for b in weights[i + 1:]:
            assert not np.array_equal(a.params["weight"], b.params["weight"])
    ff = FeedForward(8, 8)
    assert not np.array_equal(ff.linear1.params["weight"], ff.linear2.params["weight"])
    # reproducible from a Generator (no global state); two built without one differ
    seeded = [MultiHeadAttention(8, 2, rng=np.random.default_rng(5)).w_k.params["weight"] for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])
    assert not np.array_equal(MultiHeadAttention(8, 2).w_k.params["weight"], mha.w_k.params["weight"])


# ---- the schedule's horizon belongs to the run ----------------------------------------------

def test_the_cosine_horizon_is_not_the_step_budget_and_the_last_update_learns():
    short, long = TrainConfig(steps=10), TrainConfig(steps=2000)
    lr_short, lr_long = build_schedule(short), build_schedule(long)
    assert [lr_short(s) for s in range(1, 11)] == [lr_long(s) for s in range(1, 11)]
    assert lr_long(2000) == long.min_lr > 0          # past decay_steps the lr rests at min_lr


def test_resuming_with_another_schedule_horizon_is_refused(tmp_path):
    config = TrainConfig(max_len=4, steps=4, eval_every=4, eval_size=8, batch_size=4, warmup=2,
                         decay_steps=10, seed=0)
    model_config = default_model_config(config, d_model=8, n_heads=2, d_ff=12, n_encoder_layers=1,
                                        n_decoder_layers=1, max_len=8)
    train(config, model_config, out_dir=tmp_path / "run", stream=io.StringIO())
    longer = TrainConfig(**{**config.to_dict(), "steps": 6, "decay_steps": 20})
    with pytest.raises(ValueError, match=r"decay_steps 20 \(the run has 10\)"):
        train(longer, model_config, out_dir=tmp_path / "run", resume=True, stream=io.StringIO())


# ---- the config stores Python ints --------------------------------------------------------

def test_a_numpy_integer_in_the_config_is_stored_as_a_python_int_and_saves():
    ids = np.array([[3, 12]])
    config = TransformerConfig(vocab_size=ids.max() + 1, d_model=np.int32(8), n_heads=np.int64(2))
    assert type(config.vocab_size) is int and type(config.d_model) is int and type(config.n_heads) is int
    assert json.loads(config.to_json())["vocab_size"] == 13
    assert TransformerConfig.from_json(config.to_json()) == config


def test_pad_id_is_checked_and_saved():
    assert TransformerConfig(vocab_size=V).pad_id == 0
    with pytest.raises(ValueError, match="pad_id: expected a token id below vocab_size"):
        TransformerConfig(vocab_size=V, pad_id=V)


def test_the_models_mask_keys_with_the_configs_pad_id():
    # with pad_id 12, a 12 at the end of the source changes nothing, a 0 there does
    model = small(Transformer, pad_id=12).eval()
    tgt = np.array([[BOS, 5, 6]])
    base = model(np.array([[3, 4, 5]]), tgt)
    padded = model(np.array([[3, 4, 5, 12]]), tgt)
    np.testing.assert_allclose(padded, base, rtol=1e-5, atol=1e-6)
    assert not np.allclose(model(np.array([[3, 4, 5, 0]]), tgt), base, atol=1e-4)


# ---- decoding never emits PAD or BOS ------------------------------------------------------

def favouring_pad_and_bos(cls, pad_id=PAD):
    """A model whose output bias makes PAD the most likely token everywhere, then BOS."""
    model = small(cls, **({} if pad_id == PAD else {"pad_id": pad_id}))
    model.out_proj.params["bias"][pad_id] = 100.0
    model.out_proj.params["bias"][BOS] = 50.0
    model.out_proj.params["bias"][EOS] = -100.0         # so that decoding runs its full length
    return model


def assert_no_pad_or_bos_before_eos(tokens, pad_id=PAD):
    for row in tokens:
        ended = np.flatnonzero(row == EOS)
        generated = row[:ended[0]] if len(ended) else row
        assert len(generated) and not np.isin(generated, [pad_id, BOS]).any(), row


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_decoding_and_beam_search_never_emit_pad_or_bos(use_cache):
    model = favouring_pad_and_bos(Transformer)
    src = np.array([[3, 4, 5], [6, 7, PAD]])
    assert_no_pad_or_bos_before_eos(greedy_decode(model, src, 6, use_cache=use_cache))
    tokens, log_probs = beam_search(model, src, 6, beam_size=3, use_cache=use_cache)
    assert_no_pad_or_bos_before_eos(tokens)
    assert np.isfinite(log_probs).all()


def test_generation_never_emits_pad_or_bos_greedy_or_sampled():
    model = favouring_pad_and_bos(DecoderOnlyTransformer)
    prompt = np.array([[3, 4], [5, 6]])
    assert_no_pad_or_bos_before_eos(generate(model, prompt, 5))
    assert_no_pad_or_bos_before_eos(generate(model, prompt, 5, temperature=1.0,
                                             rng=np.random.default_rng(0)))


def test_the_padding_decoding_avoids_is_the_configs():
    model = favouring_pad_and_bos(Transformer, pad_id=11)
    assert_no_pad_or_bos_before_eos(greedy_decode(model, np.array([[3, 4, 5]]), 6), pad_id=11)


# ---- a dict of modules as a child --------------------------------------------------------

class Heads(Module):
    def __init__(self, children):
        super().__init__()
        self.heads = children


def test_a_dict_of_modules_is_a_child_and_is_trained():
    rng = np.random.default_rng(0)
    model = Heads({"left": Linear(3, 2, rng=rng), "right": Linear(3, 2, rng=rng)})
    names = [name for name, _, _ in model.named_parameters()]
    assert names == ["heads.left.weight", "heads.left.bias", "heads.right.weight", "heads.right.bias"]
    assert set(model.state_dict()) == set(names)
    model.astype(np.float64)
    assert model.heads["left"].params["weight"].dtype == np.float64


def test_a_container_mixing_modules_with_other_values_is_refused():
    with pytest.raises(TypeError, match=r"Heads.heads: a dict that mixes Modules with other values"):
        list(Heads({"left": Linear(3, 2, rng=np.random.default_rng(0)), "scale": 2.0}).named_parameters())
    with pytest.raises(TypeError, match="must not contain a dot"):
        list(Heads({"a.b": Linear(3, 2, rng=np.random.default_rng(0))}).named_parameters())
