"""Special token ids (pad, bos, eos) come from the model's config, and only from there.

Masks, the training loss, decoding and checkpoints read ``model.config``; the toy tasks keep
their own vocabulary (PAD 0, BOS 1, EOS 2), and a model whose config disagrees with it is refused.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from test_decode import markov_model
from tinytransformer.checkpoint import load_checkpoint, save_checkpoint
from tinytransformer.decode import beam_search, generate, greedy_decode, sequence_log_prob
from tinytransformer.gradcheck import gradcheck
from tinytransformer.nn.transformer import DecoderOnlyTransformer, Transformer, TransformerConfig
from tinytransformer.tasks import eval_set
from tinytransformer.train import TrainConfig, check_resume, default_model_config, evaluate, train

DATA = Path(__file__).parent / "data"
V = 13

# special ids a config may have (the first: the toy tasks', the defaults), and the id that then
# fills a row after its eos: the pad id, or eos where there is no pad
LAYOUTS = {
    "toy: pad 0, bos 1, eos 2": (dict(), 0),
    "pad 2, eos 0": (dict(pad_id=2, bos_id=1, eos_id=0), 2),
    "pad 1, bos 0": (dict(pad_id=1, bos_id=0, eos_id=2), 1),
    "pad last, bos 4, eos 3": (dict(pad_id=7, bos_id=4, eos_id=3), 7),
    "GPT-2-like: no pad, bos = eos = last": (dict(pad_id=None, bos_id=7, eos_id=7), 7),
}


def small(cls, seed=0, **overrides):
    config = TransformerConfig(vocab_size=V, d_model=16, n_heads=2, d_ff=24, n_encoder_layers=2,
                               n_decoder_layers=2, max_len=12, **overrides)
    return cls(config, np.random.default_rng(seed)).astype(np.float64)


def chain(pad_id=0, bos_id=1, eos_id=2, V=8):
    """(P, path): a Markov matrix over V tokens (see ``markov_model``) whose likeliest path
    from bos (if there is one) that decoding may take is path = s0 s1 s2 eos, the first three
    other ids; at every step the ids decoding must never emit (pad, and bos unless it is eos)
    are likelier still, so a decoder that emitted them would leave the path."""
    s0, s1, s2 = [i for i in range(V) if i not in (pad_id, bos_id, eos_id)][:3]
    banned = [i for i in (pad_id, bos_id) if i is not None and i != eos_id]
    steps = [(s0, s1), (s1, s2), (s2, eos_id)] + ([(bos_id, s0)] if bos_id is not None else [])
    P = np.full((V, V), 0.001)
    for prev, nxt in steps:
        P[prev, nxt] = 0.5
        P[prev, banned] = 0.6
    return P / P.sum(axis=1, keepdims=True), [s0, s1, s2, eos_id]


# ---- the failures of a second source of truth, reproduced -------------------------------------


def test_pad_id_2_greedy_decoding_stops_at_eos():
    """Decoding took eos from the tasks (2), which this config's pad is: it banned 2 and never
    stopped. Here eos is 0, and decoding stops there."""
    ids = dict(pad_id=2, bos_id=1, eos_id=0)
    P, path = chain(**ids)
    model = markov_model(Transformer, P, **ids)
    np.testing.assert_array_equal(greedy_decode(model, np.array([[3, 4], [5, 2]]), 6), [path, path])


@pytest.mark.parametrize("use_cache", [False, True])
def test_pad_id_1_every_attention_row_sums_to_1(use_cache):
    """Decoding fed the tasks' bos (1), which was this config's pad: the first key was masked
    and a decoder self-attention row summed to 0. Here bos is 0, fed and attended to."""
    model = small(Transformer, pad_id=1, bos_id=0)
    src = np.array([[3, 4, 5, 6], [7, 8, 1, 1]])                 # the second source padded with 1
    greedy_decode(model, src, 5, use_cache=use_cache, stop_at_eos=False)
    for layer in model.decoder.layers:
        for attn in (layer.self_attn.attn, layer.cross_attn.attn):
            np.testing.assert_allclose(attn.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
        assert (layer.cross_attn.attn[1, :, :, 2:] == 0).all()   # the padded source keys
        assert (layer.cross_attn.attn[0] > 0).all()


def test_train_refuses_a_config_that_disagrees_with_its_batches():
    config = TrainConfig(task="copy", n_symbols=4, max_len=3, batch_size=4, steps=1, eval_every=1,
                         eval_size=4)
    model_config = TransformerConfig(vocab_size=7, d_model=8, n_heads=2, d_ff=8, pad_id=3)
    with pytest.raises(ValueError, match=r"pad_id: the toy tasks' batches use 0 .* config has pad_id=3"):
        train(config, model_config)
    for field, value in (("bos_id", 4), ("eos_id", 5), ("pad_id", None)):
        with pytest.raises(ValueError, match=f"{field}: the toy tasks' batches use"):
            default_model_config(config, **{field: value})
    with pytest.raises(ValueError, match="eos_id: the toy tasks' batches use 2"):
        evaluate(small(Transformer, eos_id=5), eval_set("copy", 10, n=4, min_len=1, max_len=3))


# ---- decoding with any valid config ------------------------------------------------------------


@pytest.mark.parametrize("ids, fill", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_greedy_and_beam_follow_the_path_and_fill_finished_rows(ids, fill):
    P, path = chain(**ids)
    model = markov_model(Transformer, P, **ids)
    src = np.array([[3, 4, 5], [4, 5, 6]])
    np.testing.assert_array_equal(greedy_decode(model, src, 6), [path, path])
    everything = greedy_decode(model, src, 6, stop_at_eos=False)       # 6 steps: 2 after eos
    np.testing.assert_array_equal(everything, [path + [fill] * 2] * 2)
    tokens, log_probs = beam_search(model, src, 6, beam_size=3)
    np.testing.assert_array_equal(tokens, [path, path])
    want = sum(np.log(P[prev, nxt]) for prev, nxt in zip([model.config.bos_id] + path, path))
    np.testing.assert_allclose(log_probs, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sequence_log_prob(model, src, everything), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("ids, fill", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_generate_emits_eos_stops_and_fills_finished_rows(ids, fill):
    P, [s0, s1, s2, eos] = chain(**ids)
    model = markov_model(DecoderOnlyTransformer, P, **ids)
    bos = model.config.bos_id
    prompts = np.array([[bos, s0], [bos, s1]])           # the second row is one step further on
    np.testing.assert_array_equal(generate(model, prompts, 5), [[s1, s2, eos], [s2, eos, fill]])


def test_a_gpt2_like_vocabulary_masks_no_token_and_its_cache_agrees():
    """pad_id None: no id is padding, so 0 is a token like any other, in the full forward and
    in the cache; bos = eos = the last id."""
    model = small(DecoderOnlyTransformer, pad_id=None, bos_id=V - 1, eos_id=V - 1)
    ids = np.array([[V - 1, 5, 0, 0, 7], [V - 1, 0, 9, 3, 0]])
    np.testing.assert_array_equal(model(ids), model(ids, np.ones(ids.shape, dtype=bool)))
    for layer in model.layers:          # every key, the 0s too, has weight from some query
        assert (layer.self_attn.attn.sum(axis=(1, 2)) > 0).all()
    model.out_proj.params["bias"][V - 1] = 2.0         # eos likely enough that some rows end
    cached = generate(model, ids, 7, return_logits=True)
    recomputed = generate(model, ids, 7, use_cache=False, return_logits=True)
    np.testing.assert_array_equal(cached.tokens, recomputed.tokens)
    np.testing.assert_allclose(cached.logits, recomputed.logits, rtol=0, atol=1e-10)
    ends = np.argmax(cached.tokens == V - 1, axis=1)          # each row's eos
    assert (cached.tokens == V - 1).any(axis=1).all() and len(set(ends)) == 2, cached.tokens
    for row, end in zip(cached.tokens, ends):                # the row that ended first: eos, then eos
        assert (row[end:] == V - 1).all() and (row[:end] != V - 1).all(), row


def test_without_a_bos_the_encoder_decoder_cannot_start_but_a_prompt_can():
    with pytest.raises(ValueError, match="greedy_decode: .*bos_id"):
        greedy_decode(small(Transformer, bos_id=None), np.array([[3, 4]]), 3)
    with pytest.raises(ValueError, match="beam_search: .*bos_id"):
        beam_search(small(Transformer, bos_id=None), np.array([[3, 4]]), 3)
    P, [s0, s1, s2, eos] = chain(bos_id=None)
    model = markov_model(DecoderOnlyTransformer, P, bos_id=None)
    np.testing.assert_array_equal(generate(model, np.array([[s0]]), 4), [[s1, s2, eos]])


def test_a_vocabulary_without_special_ids_generates_every_row_to_its_length():
    """A character model of a text has no pad, bos or eos: nothing is masked, no id is banned,
    and no row ends early, even when it emits the id the toy tasks call eos."""
    model = small(DecoderOnlyTransformer, pad_id=None, bos_id=None, eos_id=None)
    model.out_proj.params["bias"][2] = 5.0                   # id 2 wins every step
    tokens = generate(model, np.array([[0, 5, 0], [7, 0, 9]]), 6)
    np.testing.assert_array_equal(tokens, np.full((2, 6), 2))


# ---- the config: checks, JSON, what was saved before these fields ------------------------------


@pytest.mark.parametrize("ids, match", [
    (dict(pad_id=1), r"pad_id: padding must differ from bos_id .* both are 1"),
    (dict(pad_id=2), r"pad_id: padding must differ from eos_id .* both are 2"),
    (dict(eos_id=V), r"eos_id: expected a token id below vocab_size \(0..12\), or None .*got 13"),
    (dict(bos_id=-1), r"bos_id: expected a token id below vocab_size \(0..12\), or None"),
    (dict(pad_id=True), r"pad_id: expected a token id .* got True"),
    (dict(bos_id=1.0), r"bos_id: expected a token id .* got 1.0"),
])
def test_config_refuses_bad_special_ids(ids, match):
    with pytest.raises(ValueError, match=match):
        TransformerConfig(vocab_size=V, **ids)


def test_special_ids_round_trip_through_json_and_checkpoints(tmp_path):
    config = TransformerConfig(vocab_size=V, d_model=8, n_heads=2, d_ff=8, pad_id=None,
                               bos_id=np.int64(V - 1), eos_id=np.int32(V - 1))
    assert type(config.bos_id) is int and type(config.eos_id) is int      # JSON takes them
    assert TransformerConfig.from_json(config.to_json()) == config
    model = DecoderOnlyTransformer(config, np.random.default_rng(0))
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "m.npz", model))
    assert (loaded.config.pad_id, loaded.config.bos_id, loaded.config.eos_id) == (None, V - 1, V - 1)


def test_a_config_saved_before_these_fields_loads_with_the_ids_decoding_used():
    before = {"vocab_size": 13, "d_model": 16, "n_heads": 2, "d_ff": 24, "n_encoder_layers": 2,
              "n_decoder_layers": 2, "dropout": 0.0, "max_len": 12, "norm_first": True,
              "activation": "relu", "positional": "sinusoidal", "tie_embeddings": False, "pad_id": 0}
    config = TransformerConfig.from_json(json.dumps(before))
    assert (config.pad_id, config.bos_id, config.eos_id) == (0, 1, 2)
    assert config == TransformerConfig(vocab_size=13, d_model=16, n_heads=2, d_ff=24, max_len=12)
    # a checkpoint written then (tests/data/README.md) loads with those ids
    _, info = load_checkpoint(DATA / "pre_modern_transformer.npz")
    assert (info["config"].pad_id, info["config"].bos_id, info["config"].eos_id) == (0, 1, 2)


def test_a_run_saved_before_these_fields_resumes(tmp_path):
    config = TrainConfig()
    model = default_model_config(config).to_dict()
    del model["bos_id"], model["eos_id"]
    (tmp_path / "config.json").write_text(json.dumps({"train": config.to_dict(), "model": model}))
    check_resume(tmp_path, config, default_model_config(config))                  # no difference


# ---- gradients through masks built from other ids ------------------------------------------------


@pytest.mark.parametrize("cls", [Transformer, DecoderOnlyTransformer])
@pytest.mark.parametrize("ids", [dict(pad_id=None, bos_id=V - 1, eos_id=V - 1),
                                 dict(pad_id=5, bos_id=6, eos_id=7)], ids=["no pad", "pad 5"])
def test_models_with_other_special_ids_pass_the_gradient_check(cls, ids):
    config = TransformerConfig(vocab_size=V, d_model=8, n_heads=2, d_ff=12, n_encoder_layers=1,
                               n_decoder_layers=1, max_len=9, **ids)
    model = cls(config, np.random.default_rng(3)).astype(np.float64)
    rng = np.random.default_rng(4)
    src, tgt = rng.integers(0, V, (3, 5)), rng.integers(0, V, (3, 7))     # 0 is a token here
    src[1, 3:], tgt[2, 4:] = 5, 5                                         # padding, if 5 is pad
    inputs = (src, tgt) if cls is Transformer else (tgt,)
    result = gradcheck(model, *inputs, max_elements=30)
    assert result.passed, str(result)
