"""A large training step's batch split over the cores (tinytransformer/nn/batch_split.py): the same
logits, gradients and attention maps as the whole batch, in float64; and no split where it must not.

SPLIT_FROM is lowered so that these small models count as large, and CORES is set to 2, so that the
split runs (on two threads) on any machine."""

import sys

import numpy as np
import pytest

from tinytransformer import (CrossEntropyLoss, DecoderOnlyTransformer, Transformer, TransformerConfig,
                             add_lora, threads)
from tinytransformer.nn.batch_split import BatchSplit, parts_of

THREADS = sys.modules["tinytransformer.threads"]      # the package exports the function `threads`
LM = dict(vocab_size=13, d_model=16, n_heads=2, d_ff=24, n_encoder_layers=0, n_decoder_layers=2, max_len=9)


@pytest.fixture
def split_everything(monkeypatch):
    monkeypatch.setattr(THREADS, "SPLIT_FROM", 0.0)
    monkeypatch.setattr(THREADS, "CORES", 2)


def lm(dtype=np.float64, **changes):
    return DecoderOnlyTransformer(TransformerConfig(**{**LM, **changes}), np.random.default_rng(0), dtype=dtype)


def step(model, ids, n_threads, *, src=None):
    """(logits, {name: gradient}, attention maps) of one forward and backward with ``n_threads``."""
    crit = CrossEntropyLoss()
    model.zero_grad()
    with threads(n_threads):
        logits = model(ids[:, :-1]) if src is None else model(src, ids[:, :-1])
        crit(logits, ids[:, 1:])
        model.backward(crit.backward())
    return logits, {name: g.copy() for name, _, g in model.named_parameters()}, model.attention_maps()


def assert_same_step(a, b, rtol=1e-12):
    np.testing.assert_allclose(a[0], b[0], rtol=rtol, atol=1e-14)
    assert a[1].keys() == b[1].keys() and a[2].keys() == b[2].keys()
    for name in a[1]:
        np.testing.assert_allclose(a[1][name], b[1][name], rtol=rtol, atol=1e-14, err_msg=name)
    for name in a[2]:
        np.testing.assert_allclose(a[2][name], b[2][name], rtol=rtol, atol=1e-14, err_msg=name)


def test_parts_cover_the_batch_in_order():
    assert parts_of(5, 2) == [slice(0, 2), slice(2, 5)]
    for batch, n in ((2, 2), (7, 3), (64, 2)):
        parts = parts_of(batch, n)
        assert len(parts) == n and parts[0].start == 0 and parts[-1].stop == batch
        assert all(a.stop == b.start and a.stop > a.start for a, b in zip(parts, parts[1:]))


@pytest.mark.parametrize("changes", [{}, {"tie_embeddings": True, "positional": "rope"},
                                     {"n_kv_heads": 1, "activation": "swiglu", "norm": "rmsnorm"}],
                         ids=["learned", "tied-rope", "gqa-swiglu"])
def test_a_split_step_gives_the_whole_batchs_logits_gradients_and_maps(split_everything, changes):
    model = lm(**changes)
    ids = np.random.default_rng(1).integers(0, 13, (5, 9))
    whole = step(model, ids, 1)                                  # one thread: never split
    split = step(model, ids, 2)
    assert isinstance(model.cache.split, BatchSplit) and len(model.cache.split.replicas) == 1   # and the model
    assert_same_step(split, whole)
    assert split[2]["layers.0.self_attn"].shape == (5, 2, 8, 8)


def test_a_split_in_three_parts_gives_the_whole_batchs_step(split_everything, monkeypatch):
    # the model computes the first part, a replica each of the other two
    monkeypatch.setattr(THREADS, "CORES", 3)
    model = lm(tie_embeddings=True)
    ids = np.random.default_rng(4).integers(0, 13, (5, 9))
    whole = step(model, ids, 1)
    split = step(model, ids, 3)
    assert len(model.cache.split.replicas) == 2 and model.cache.split.parts == parts_of(5, 3)
    assert_same_step(split, whole)


def test_the_encoder_decoder_with_tied_embeddings_adds_each_shared_gradient_once(split_everything):
    # src_embed, tgt_embed and the head share one matrix and one gradient buffer
    model = Transformer(TransformerConfig(**{**LM, "n_encoder_layers": 1, "tie_embeddings": True}),
                        np.random.default_rng(0), dtype=np.float64)
    rng = np.random.default_rng(2)
    src, ids = rng.integers(0, 13, (4, 7)), rng.integers(0, 13, (4, 9))
    whole = step(model, ids, 1, src=src)
    split = step(model, ids, 2, src=src)
    assert isinstance(model.cache.split, BatchSplit)
    assert_same_step(split, whole)


def test_gradients_accumulate_over_two_split_steps_and_frozen_ones_stay_zero(split_everything):
    model = add_lora(lm(), rank=2, rng=np.random.default_rng(3))
    ids = np.random.default_rng(1).integers(0, 13, (4, 9))
    _, once, _ = step(model, ids, 2)
    crit = CrossEntropyLoss()
    with threads(2):
        crit(model(ids[:, :-1]), ids[:, 1:])
        model.backward(crit.backward())                        # no zero_grad: adds to the first
    frozen = {name for name, _, _ in model.named_parameters() if "lora" not in name}
    assert frozen
    for name, _, grad in model.named_parameters():
        np.testing.assert_allclose(grad, 2 * once[name], rtol=1e-12, atol=1e-14, err_msg=name)
        assert name not in frozen or not grad.any(), name
    assert any(once[name].any() for name in once if name not in frozen)   # lora_b (lora_a's is 0 while B = 0)


def test_a_split_run_is_the_same_run_twice_in_float32(split_everything):
    ids = np.random.default_rng(1).integers(0, 13, (6, 9))
    first, second = step(lm(np.float32), ids, 2), step(lm(np.float32), ids, 2)
    np.testing.assert_array_equal(first[0], second[0])
    for name in first[1]:
        np.testing.assert_array_equal(first[1][name], second[1][name], err_msg=name)


def test_no_split_in_eval_mode_with_dropout_below_split_from_or_for_a_model_of_many_weights(monkeypatch):
    monkeypatch.setattr(THREADS, "CORES", 2)
    ids = np.random.default_rng(1).integers(0, 13, (4, 9))
    model = lm()
    with threads(2):
        model(ids)
        assert not isinstance(model.cache, BatchSplit)         # far below SPLIT_FROM
        monkeypatch.setattr(THREADS, "SPLIT_FROM", 0.0)
        model(ids)
        assert isinstance(model.cache, BatchSplit)
        model.eval()
        model(ids)
        assert not isinstance(model.cache, BatchSplit)         # eval: nothing to differentiate
        dropped = lm(dropout=0.1)
        dropped(ids)
        assert not isinstance(dropped.cache, BatchSplit)       # masks drawn from one Generator, in order
        monkeypatch.setattr(THREADS, "SPLIT_UNDER_WEIGHTS", model.multiply_adds_per_token)
        model.train()
        model(ids)
        assert not isinstance(model.cache, BatchSplit)         # a gradient buffer per part: too large
    with threads(1):
        model(ids)
        assert not isinstance(model.cache, BatchSplit)


def test_a_split_steps_backward_errors_are_the_models(split_everything):
    model = lm()
    ids = np.random.default_rng(1).integers(0, 13, (4, 9))
    logits = model(ids)
    assert isinstance(model.cache, BatchSplit)
    with pytest.raises(ValueError, match=r"dlogits: expected the shape of the forward's output \(4, 9, 13\)"):
        model.backward(np.zeros((2, 9, 13)))
    model.backward(np.zeros_like(logits))
    with pytest.raises(RuntimeError, match="called a second time"):
        model.backward(np.zeros_like(logits))


def test_an_error_in_a_part_reaches_the_caller(split_everything):
    model = lm()
    ids = np.random.default_rng(1).integers(0, 13, (4, 9))
    ids[3, 0] = 99                                             # in the second part
    with pytest.raises(ValueError, match="99"):
        model(ids)
