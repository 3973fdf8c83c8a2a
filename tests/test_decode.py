"""Decoding: the KV cache changes nothing, beam search against greedy and a model with known answers,
sampling, and a trained model that reverses held-out inputs."""

import doctest

import numpy as np
import pytest

import tinytransformer.decode as decode_module
from tinytransformer.decode import Decoded, beam_search, generate, greedy_decode, sequence_log_prob
from tinytransformer.nn.loss import CrossEntropyLoss
from tinytransformer.nn.transformer import PRESETS, DecoderOnlyTransformer, Transformer, TransformerConfig
from tinytransformer.optim import Adam
from tinytransformer.tasks import BOS, EOS, PAD, eval_set, make_batch

V = 13          # PAD, BOS, EOS and 10 symbols
CONFIGS = {
    "pre-LN sinusoidal": dict(),
    "post-LN learned": dict(norm_first=False, positional="learned"),
    "pre-LN learned tied gelu": dict(positional="learned", tie_embeddings=True, activation="gelu"),
    "post-LN sinusoidal, dropout": dict(norm_first=False, dropout=0.3),   # eval mode: no dropout
}
# positions inside attention: RoPE rotates the cached keys at their absolute positions, ALiBi
# biases by absolute offsets; "none" has nothing to get wrong but must not break either
POSITIONAL_CONFIGS = {
    "pre-LN modern (rope, rmsnorm, swiglu)": dict(PRESETS["modern"]),
    "post-LN alibi, rmsnorm": dict(norm_first=False, positional="alibi", norm="rmsnorm"),
    "pre-LN none, swiglu": dict(positional="none", activation="swiglu"),
    "post-LN rope, dropout": dict(norm_first=False, positional="rope", dropout=0.3),
}
CONFIGS.update(POSITIONAL_CONFIGS)


def small_model(cls, seed, dtype=np.float64, **overrides):
    config = TransformerConfig(vocab_size=V, d_model=16, n_heads=2, d_ff=24, n_encoder_layers=2,
                               n_decoder_layers=2, max_len=24, **overrides)
    return cls(config, np.random.default_rng(seed)).astype(dtype)


def sources(seed, B=12, S=7):
    """Random symbols, with rows of different lengths (PAD after)."""
    r = np.random.default_rng(seed + 100)
    src = r.integers(3, V, size=(B, S))
    for row, length in enumerate(r.integers(2, S + 1, size=B)):
        src[row, length:] = PAD
    return src


def first_eos(tokens):
    """Step at which each row produced EOS (-1 if it never did)."""
    return np.where((tokens == EOS).any(1), (tokens == EOS).argmax(1), -1)


def finish_unevenly(model, run):
    """Raise the EOS bias until the rows of ``run()`` end at different steps (never ending counts
    as a step): finished rows are then fed PAD while others go on. Untrained models rarely say
    EOS; this makes per-row stopping happen. Prefers 3 or more different steps, settles for 2."""
    bias = model.out_proj.params["bias"]
    fallback = None
    for c in np.arange(0.0, 8.0, 0.25):
        bias[EOS] = c
        steps = first_eos(run())
        distinct = len(set(steps.tolist())) if (steps >= 0).any() else 0
        if distinct >= 3:
            return steps
        if distinct == 2 and fallback is None:
            fallback = c, steps
    if fallback is None:
        pytest.fail("could not make the rows finish at different steps")
    bias[EOS] = fallback[0]
    return fallback[1]


def assert_ends_at_eos(tokens):
    """Each row: no EOS, or one EOS followed only by PAD."""
    for row in tokens:
        if (row == EOS).any():
            assert (row[(row == EOS).argmax() + 1:] == PAD).all(), row


# ---- the cache changes nothing ------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_greedy_cache_equals_recompute(name, seed, dtype, tol):
    model = small_model(Transformer, seed, dtype, **CONFIGS[name]).train()
    src = sources(seed, S=5 + 3 * seed)
    steps = finish_unevenly(model, lambda: greedy_decode(model, src, 20))
    cached = greedy_decode(model, src, 20, return_logits=True, return_attention=True)
    recomputed = greedy_decode(model, src, 20, use_cache=False, return_logits=True, return_attention=True)
    assert model.training                                      # the mode it was in is restored
    np.testing.assert_array_equal(cached.tokens, recomputed.tokens)
    width = steps.max() + 1 if (steps >= 0).all() else 20     # stops when the last row has its EOS
    assert cached.tokens.shape == (12, width)
    assert_ends_at_eos(cached.tokens)
    np.testing.assert_allclose(cached.logits, recomputed.logits, rtol=0, atol=tol)
    np.testing.assert_allclose(cached.attention, recomputed.attention, rtol=0, atol=tol)
    assert cached.logits.dtype == dtype


def test_cross_attention_collected_per_step():
    model = small_model(Transformer, 3)
    src = sources(3)
    out = greedy_decode(model, src, 6, stop_at_eos=False, return_attention=True)
    assert isinstance(out, Decoded) and out.logits is None
    assert out.attention.shape == (2, 12, 2, 6, 7)              # (layers, B, H, steps, S)
    np.testing.assert_allclose(out.attention.sum(-1), 1.0)
    padded = np.broadcast_to((src == PAD)[None, :, None, None, :], out.attention.shape)
    assert (out.attention[padded] == 0).all()                   # no weight on padded source keys


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("seed", [5, 6])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_generate_cache_equals_recompute(name, seed, dtype, tol):
    model = small_model(DecoderOnlyTransformer, seed, dtype, **CONFIGS[name])
    prompt = sources(seed, S=4 + 3 * (seed - 5))   # right-padded prompts of different lengths
    finish_unevenly(model, lambda: generate(model, prompt, 12))
    cached = generate(model, prompt, 12, return_logits=True)
    recomputed = generate(model, prompt, 12, use_cache=False, return_logits=True)
    np.testing.assert_array_equal(cached.tokens, recomputed.tokens)
    np.testing.assert_allclose(cached.logits, recomputed.logits, rtol=0, atol=tol)
    # a row of the batch is what its prompt gives alone: same tokens, same first logits
    lengths = (prompt != PAD).sum(1)
    for row in (lengths.argmin(), lengths.argmax()):
        alone = generate(model, prompt[row:row + 1, :lengths[row]], 12, return_logits=True)
        n = alone.tokens.shape[1]
        np.testing.assert_array_equal(cached.tokens[row, :n], alone.tokens[0])
        assert (cached.tokens[row, n:] == PAD).all()
        np.testing.assert_allclose(cached.logits[row, :n], alone.logits[0], rtol=0, atol=tol)


@pytest.mark.parametrize("name", ["pre-LN sinusoidal", *POSITIONAL_CONFIGS])
def test_sampling_cache_equals_recompute_and_is_seeded(name):
    model = small_model(DecoderOnlyTransformer, 6, **CONFIGS[name])
    prompt = sources(6)
    draw = lambda cache, seed: generate(model, prompt, 10, use_cache=cache, temperature=0.8, top_k=5,
                                        rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(draw(True, 1), draw(False, 1))
    np.testing.assert_array_equal(draw(True, 1), draw(True, 1))
    assert not np.array_equal(draw(True, 1), draw(True, 2))
    greedy = generate(model, prompt, 10)
    np.testing.assert_array_equal(generate(model, prompt, 10, temperature=2.0, top_k=1,
                                           rng=np.random.default_rng(0)), greedy)


@pytest.mark.parametrize("positional", ["learned", "rope", "alibi"])
@pytest.mark.parametrize("cls", [Transformer, DecoderOnlyTransformer])
def test_decode_step_in_chunks_equals_forward(cls, positional):
    """Feeding a sequence in chunks (3, then 1, 1, then 4) through the cache gives forward's logits;
    a wrong positional offset or a wrong mask inside a chunk would show here."""
    model = small_model(cls, 7, positional=positional).eval()
    ids = np.random.default_rng(7).integers(1, V, size=(3, 9))
    ids[1, 6:] = PAD
    if cls is Transformer:
        memory, src_keys = model.encode(sources(7, B=3))
        full = model.decode(ids, memory, src_keys)
        cache = model.init_cache(memory, src_keys, capacity=12)
    else:
        full = model(ids)
        cache = model.init_cache(3, capacity=12)
    parts = [model.decode_step(ids[:, a:b], cache) for a, b in [(0, 3), (3, 4), (4, 5), (5, 9)]]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=0, atol=1e-12)
    assert cache.length == 9
    for kv in cache.self_attn:
        assert kv.k.shape == kv.v.shape == (3, 2, 9, 8) and kv.capacity == 12   # (B, H, t, dk)
    for kv in cache.cross_attn:
        assert kv.k.shape == (3, 2, 7, 8)                                        # (B, H, S, dk)
    assert "self_attn[1]" in repr(cache)
    with pytest.raises(ValueError, match="capacity"):
        model.decode_step(ids[:, :4], cache)
    with pytest.raises(ValueError, match="batch size 1"):
        model.decode_step(ids[:1, :1], cache)
    with pytest.raises(RuntimeError, match=r"caches were invalidated by inference \(decode_step\)"):
        model.backward(np.ones_like(full))                       # a step keeps nothing to differentiate
    with pytest.raises(RuntimeError, match="eval"):
        model.train().decode_step(ids[:, :1], cache)


# ---- beam search --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_of_one_is_greedy(seed):
    model = small_model(Transformer, seed, **CONFIGS["post-LN learned"])
    src = sources(seed)
    finish_unevenly(model, lambda: greedy_decode(model, src, 20))
    greedy = greedy_decode(model, src, 20)
    for use_cache in (True, False):
        tokens, log_probs = beam_search(model, src, 20, beam_size=1, use_cache=use_cache)
        np.testing.assert_array_equal(tokens, greedy)
        np.testing.assert_allclose(log_probs, sequence_log_prob(model, src, greedy), atol=1e-10)


def test_beam_against_greedy_and_cache_changes_nothing():
    """Beam search is not guaranteed to beat greedy (the greedy prefix can fall out of the beam),
    but on random models it does on nearly every row, and it never reports a wrong log-probability."""
    at_least_greedy, better, rows = 0, 0, 0
    for seed in range(4):
        model = small_model(Transformer, seed)
        src = sources(seed)
        finish_unevenly(model, lambda: greedy_decode(model, src, 20))
        greedy_log_prob = sequence_log_prob(model, src, greedy_decode(model, src, 20))
        tokens, log_probs = beam_search(model, src, 20, beam_size=4)
        at_least_greedy += (log_probs >= greedy_log_prob - 1e-12).sum()
        better += (log_probs > greedy_log_prob + 1e-3).sum()
        rows += len(src)
        np.testing.assert_allclose(log_probs, sequence_log_prob(model, src, tokens), atol=1e-10)
        assert_ends_at_eos(tokens)
        tokens_recomputed, log_probs_recomputed = beam_search(model, src, 20, beam_size=4, use_cache=False)
        np.testing.assert_array_equal(tokens, tokens_recomputed)
        np.testing.assert_allclose(log_probs, log_probs_recomputed, atol=1e-10)
    assert at_least_greedy >= 0.9 * rows and better >= 0.1 * rows, (at_least_greedy, better, rows)


@pytest.mark.parametrize("name", POSITIONAL_CONFIGS)
def test_beam_search_cache_equals_recompute_with_every_positional_choice(name):
    model = small_model(Transformer, 2, **CONFIGS[name])
    src = sources(2)
    finish_unevenly(model, lambda: greedy_decode(model, src, 16))
    tokens, log_probs = beam_search(model, src, 16, beam_size=3)
    tokens_recomputed, log_probs_recomputed = beam_search(model, src, 16, beam_size=3, use_cache=False)
    np.testing.assert_array_equal(tokens, tokens_recomputed)
    np.testing.assert_allclose(log_probs, log_probs_recomputed, rtol=0, atol=1e-10)
    np.testing.assert_allclose(log_probs, sequence_log_prob(model, src, tokens), rtol=0, atol=1e-10)


A, B_, C, D, E = 3, 4, 5, 6, 7      # symbols of the hand-made models


def markov_model(cls, P, **special_ids):
    """A model whose next-token distribution is row P[previous token] of a known matrix:
    no layers, one-hot embeddings (E = I / sqrt(V), scaled by sqrt(D) = sqrt(V)), zero
    positions, out_proj weight log P. Then logits = log P[prev] and softmax(logits) = P[prev].
    ``special_ids``: the config's pad_id, bos_id, eos_id, if not the default 0, 1, 2."""
    V = len(P)
    config = TransformerConfig(vocab_size=V, d_model=V, n_heads=1, d_ff=4, n_encoder_layers=0,
                               n_decoder_layers=0, norm_first=False, positional="learned", max_len=8,
                               **special_ids)
    model = cls(config, np.random.default_rng(0)).astype(np.float64)
    embed = model.tgt_embed if cls is Transformer else model.embed
    embed.params["weight"][...] = np.eye(V) / np.sqrt(V)
    model.pos.params["weight"][...] = 0.0
    model.out_proj.params["weight"][...] = np.log(P)
    model.out_proj.params["bias"][...] = 0.0
    return model


def transition(rows, V=5):
    """A (V, V) row-stochastic matrix over PAD BOS EOS A B ...; each given row is {token: prob},
    the rest of its mass shared by PAD and BOS (every logit stays finite); other rows uniform."""
    P = np.full((V, V), 1.0 / V)
    for prev, probs in rows.items():
        P[prev] = 0.0
        P[prev, list(probs)] = list(probs.values())
        P[prev, [PAD, BOS]] = (1.0 - sum(probs.values())) / 2
    return P


def test_hand_made_model_beam_finds_what_greedy_misses():
    # greedy takes A (0.5) and then EOS: 0.5 * 0.38 = 0.19; B then EOS is 0.4 * 0.9 = 0.36
    P = transition({BOS: {EOS: 0.08, A: 0.5, B_: 0.4},
                    A: {EOS: 0.38, A: 0.3, B_: 0.3},
                    B_: {EOS: 0.9, A: 0.04, B_: 0.04}})
    model = markov_model(Transformer, P)
    src = np.array([[A, B_, A], [B_, B_, PAD]])      # the source does not matter to this model
    np.testing.assert_array_equal(greedy_decode(model, src, 5), [[A, EOS], [A, EOS]])
    tokens, log_probs = beam_search(model, src, 5, beam_size=2)
    np.testing.assert_array_equal(tokens, [[B_, EOS], [B_, EOS]])
    np.testing.assert_allclose(log_probs, np.log(0.36), atol=1e-12)
    np.testing.assert_allclose(sequence_log_prob(model, src, greedy_decode(model, src, 5)),
                               np.log(0.19), atol=1e-12)


def test_finished_hypothesis_pushed_out_of_the_beam_is_not_lost():
    # step 1: the beam is [B E] 0.558 and the finished [A EOS] 0.2; step 2: [B E C] 0.279 and
    # [B E D] 0.251 push [A EOS] out, and every ending of theirs is below 0.2 (C and D are flat)
    flat = {EOS: 0.3, A: 0.13, B_: 0.13, C: 0.13, D: 0.13, E: 0.13}
    P = transition({BOS: {EOS: 0.01, A: 0.25, B_: 0.6, C: 0.04, D: 0.04, E: 0.04},
                    A: {EOS: 0.8, A: 0.04, B_: 0.04, C: 0.04, D: 0.04, E: 0.02},
                    B_: {EOS: 0.01, A: 0.01, B_: 0.01, C: 0.01, D: 0.01, E: 0.93},
                    E: {EOS: 0.01, A: 0.01, B_: 0.01, C: 0.5, D: 0.45, E: 0.01},
                    C: flat, D: flat}, V=8)
    model = markov_model(Transformer, P)
    src = np.array([[A, B_]])
    tokens, log_probs = beam_search(model, src, 6, beam_size=2)
    np.testing.assert_array_equal(tokens, [[A, EOS]])
    np.testing.assert_allclose(log_probs, np.log(0.2), atol=1e-12)
    np.testing.assert_array_equal(greedy_decode(model, src, 6), [[B_, E, C, EOS]])   # 0.084


def test_length_penalty_prefers_longer_hypotheses():
    # EOS at once: 0.5.  A then EOS: 0.48 * 0.9 = 0.432, more likely per token (mean log 0.42 vs 0.69)
    P = transition({BOS: {EOS: 0.5, A: 0.48, B_: 0.01},
                    A: {EOS: 0.9, A: 0.04, B_: 0.04}})
    model = markov_model(Transformer, P)
    src = np.array([[A, A]])
    tokens, log_probs = beam_search(model, src, 5, beam_size=2, length_penalty=0.0)
    np.testing.assert_array_equal(tokens, [[EOS]])
    np.testing.assert_allclose(log_probs, np.log(0.5), atol=1e-12)
    tokens, log_probs = beam_search(model, src, 5, beam_size=2, length_penalty=1.0)
    np.testing.assert_array_equal(tokens, [[A, EOS]])
    np.testing.assert_allclose(log_probs, np.log(0.432), atol=1e-12)   # the true log-probability


def test_sampling_follows_temperature_and_top_k():
    P = transition({BOS: {EOS: 0.1, A: 0.5, B_: 0.3}})        # PAD, BOS 0.05 each
    model = markov_model(DecoderOnlyTransformer, P)
    prompt = np.full((4000, 1), BOS)
    rng = np.random.default_rng(0)
    for temperature, top_k in [(1.0, None), (0.5, None), (1.0, 2)]:
        first = generate(model, prompt, 1, temperature=temperature, top_k=top_k, rng=rng)[:, 0]
        want = P[BOS] ** (1 / temperature)
        want[[PAD, BOS]] = 0.0                                  # never emitted
        if top_k is not None:
            want[np.argsort(want)[:-top_k]] = 0.0
        want /= want.sum()
        seen = np.bincount(first, minlength=5) / len(first)
        assert np.abs(seen - want).max() < 4 * np.sqrt(0.25 / len(first)), (temperature, top_k, seen, want)


def test_decode_module_doctests_pass():
    result = doctest.testmod(decode_module)
    assert result.attempted > 0 and result.failed == 0


# ---- arguments ----------------------------------------------------------------------------


def test_clear_errors():
    seq2seq, lm = small_model(Transformer, 0), small_model(DecoderOnlyTransformer, 0)
    src = sources(0)
    with pytest.raises(TypeError, match="generate"):
        greedy_decode(lm, src, 5)
    with pytest.raises(TypeError, match="greedy_decode"):
        generate(seq2seq, src, 5)
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(seq2seq, src, 25)
    with pytest.raises(ValueError, match="right padding"):
        generate(lm, np.array([[PAD, 5, 6]]), 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(lm, src, 20)                              # 7 + 20 - 1 positions > max_len 24
    with pytest.raises(TypeError, match="rng"):
        generate(lm, src, 3, temperature=1.0)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(seq2seq, src, 5, beam_size=V + 1)


# ---- a trained model ----------------------------------------------------------------------


def train_reverse(steps=600, batch=32, lr=5e-3, max_len=5, n_symbols=6, seed=2):
    """A small reverse model in a few seconds, with the package's training step."""
    config = TransformerConfig(vocab_size=3 + n_symbols, d_model=32, n_heads=2, d_ff=64,
                               n_encoder_layers=1, n_decoder_layers=1, max_len=12)
    model = Transformer(config, np.random.default_rng(seed))
    opt, crit = Adam(model, lr=lr), CrossEntropyLoss(ignore_index=PAD)
    rng = np.random.default_rng(seed + 1)
    for step in range(1, steps + 1):
        opt.lr = lr * min(step / 50, np.sqrt(50 / step))
        b = make_batch("reverse", n_symbols, batch, 1, max_len, rng)
        model.zero_grad()
        logits = model(b.src, b.tgt_in)
        crit(logits, b.labels)
        model.backward(crit.backward())
        opt.step()
    return model, eval_set("reverse", n_symbols, n=200, min_len=1, max_len=max_len, seed=99)


def exact_match(tokens, labels):
    """Fraction of rows equal to the labels (target, EOS, then PAD), after padding both to one width."""
    width = max(tokens.shape[1], labels.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=PAD)
    return (pad(tokens) == pad(labels)).all(1).mean()


def test_trained_model_reverses_held_out_inputs():
    model, held_out = train_reverse()
    greedy = greedy_decode(model, held_out.src, 6)
    assert exact_match(greedy, held_out.labels) >= 0.9
    tokens, log_probs = beam_search(model, held_out.src, 6, beam_size=3)
    assert exact_match(tokens, held_out.labels) >= 0.9
    assert (log_probs >= sequence_log_prob(model, held_out.src, greedy) - 1e-4).all()   # float32
    np.testing.assert_array_equal(greedy, greedy_decode(model, held_out.src, 6, use_cache=False))
