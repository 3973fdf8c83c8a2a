"""The package holds NumPy's BLAS to one thread where it computes, whatever the import order,
and changes nothing process-wide (tinytransformer/threads.py)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from tinytransformer import CrossEntropyLoss, Transformer, TransformerConfig, threads

ROOT = Path(__file__).resolve().parents[1]


def blas():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_threads_holds_blas_to_one_thread_and_gives_it_back():
    before = blas()
    with threads(2):
        assert set(blas()) == {1}
        with threads():                                       # nested: keeps the outer choice
            assert set(blas()) == {1}
    assert blas() == before
    with pytest.raises(ValueError, match="threads: expected an integer >= 1, got 0"):
        with threads(0):
            pass



def test_a_models_forward_and_backward_hold_blas_to_one_thread(monkeypatch):
    # the learner's own loop, no threads() block: the model holds the threads itself
    model = Transformer(TransformerConfig(vocab_size=11, d_model=8, n_heads=2, d_ff=12,
                                          n_encoder_layers=1, n_decoder_layers=1), np.random.default_rng(0))
    seen = []
    for direction in ("forward", "backward"):
        method = getattr(model.out_proj, direction)
        monkeypatch.setattr(model.out_proj, direction,
                            lambda *a, method=method: (seen.append(blas()), method(*a))[1])
    before = blas()
    src = tgt = np.array([[3, 4, 5]])
    crit = CrossEntropyLoss()
    crit(model(src, tgt), tgt)
    model.backward(crit.backward())
    assert seen and all(set(s) == {1} for s in seen), seen
    assert blas() == before


def test_importing_the_package_sets_no_environment_variable():
    code = ("import os; before = dict(os.environ); import numpy, tinytransformer; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {k: v for k, v in os.environ.items() if "THREADS" not in k}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "[]"


def test_large_products_share_blas_threads_and_the_worker_stands_down():
    module = sys.modules["tinytransformer.threads"]       # the module; the package's `threads` is its function
    before = blas()
    cores = min(2, module.CORES)
    with threads(2):
        with module.products_shared(module.SHARE_FROM - 1, weights=module.SHARE_WEIGHTS_FROM - 1):
            assert set(blas()) == {1} and module.worker_allowed()     # small: nothing changes
        with module.products_shared(1, weights=module.SHARE_WEIGHTS_FROM):   # a large model's token
            assert set(blas()) == {cores}
        with module.products_shared(module.SHARE_FROM):
            assert set(blas()) == {cores}
            assert module.worker_allowed() == (cores < 2)             # one core: nothing was shared
            with module.products_shared(module.SHARE_FROM):            # nested: as it was
                assert set(blas()) == {cores}
            assert set(blas()) == {cores}
        assert set(blas()) == {1} and module.worker_allowed()
    with threads(1), module.products_shared(module.SHARE_FROM):        # one thread: nothing to share
        assert set(blas()) == {1} and not module.worker_allowed()
    assert blas() == before


def lm_step_grads(model, ids):
    crit = CrossEntropyLoss()
    model.zero_grad()
    crit(model(ids[:, :-1]), ids[:, 1:])
    model.backward(crit.backward())
    return {name: g.copy() for name, _, g in model.named_parameters()}


def small_lm(dtype=np.float32):
    """A two-block decoder-only model of vocabulary 13, far below every sharing threshold."""
    from tinytransformer import DecoderOnlyTransformer
    config = TransformerConfig(vocab_size=13, d_model=16, n_heads=2, d_ff=24, n_encoder_layers=0,
                               n_decoder_layers=2, max_len=9)
    return DecoderOnlyTransformer(config, np.random.default_rng(0), dtype=dtype)


def test_a_large_models_step_shares_the_products_and_gives_the_same_gradients(monkeypatch):
    module = sys.modules["tinytransformer.threads"]
    model = small_lm(np.float64)
    ids = np.random.default_rng(1).integers(0, 13, (3, 9))
    worker = lm_step_grads(model, ids)                                 # far below SHARE_FROM
    seen = []
    for direction in ("forward", "backward"):
        method = getattr(model.out_proj, direction)
        monkeypatch.setattr(model.out_proj, direction,
                            lambda *a, method=method: (seen.append((blas(), module.worker_allowed())),
                                                       method(*a))[1])
    monkeypatch.setattr(module, "SHARE_FROM", 3 * 8 * model.multiply_adds_per_token)   # this batch
    monkeypatch.setattr(module, "split_count", lambda *args: 1)        # shared, not split (batch_split.py)
    before = blas()
    shared = lm_step_grads(model, ids)
    cores = min(2, module.CORES)
    assert seen == [([cores] * len(before), False)] * 2            # forward, then backward: no worker
    assert blas() == before
    assert worker.keys() == shared.keys()
    for name in worker:
        np.testing.assert_allclose(shared[name], worker[name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_multiply_adds_per_token_counts_the_weight_products_of_the_models_blocks():
    from tinytransformer import DecoderOnlyTransformer
    c = TransformerConfig(vocab_size=50, d_model=8, n_heads=4, d_ff=20, n_encoder_layers=1,
                          n_decoder_layers=2, n_kv_heads=2, activation="swiglu", norm="rmsnorm",
                          positional="rope")
    per_layer = 8 * 8 * 2 + 2 * 8 * 4 + 3 * 8 * 20          # q and o; k and v of 2 heads of 2; swiglu
    assert Transformer(c, np.random.default_rng(0)).multiply_adds_per_token == 3 * per_layer + 8 * 50
    assert DecoderOnlyTransformer(c, np.random.default_rng(0)).multiply_adds_per_token == 2 * per_layer + 8 * 50


def test_a_model_with_many_weights_shares_even_a_one_token_decoding_step(monkeypatch):
    module = sys.modules["tinytransformer.threads"]
    model = small_lm()
    seen = []
    method = model.out_proj.forward
    monkeypatch.setattr(model.out_proj, "forward", lambda *a: (seen.append(blas()), method(*a))[1])
    model.eval()
    cache = model.init_cache(batch_size=1)
    model.decode_step(np.array([[3]]), cache)                          # few weights: one BLAS thread
    monkeypatch.setattr(module, "SHARE_WEIGHTS_FROM", model.multiply_adds_per_token)
    model.decode_step(np.array([[4]]), cache)
    assert [set(s) for s in seen] == [{1}, {min(2, module.CORES)}]


def test_a_shared_backward_inside_an_open_gradient_block_completes_its_gradients_itself(monkeypatch):
    # an outer overlap block keeps the worker's queue open; a shared backward must not hand its
    # jobs to it (they would finish after backward returned) but run them at once
    from tinytransformer.nn import overlap
    module = sys.modules["tinytransformer.threads"]
    model = small_lm(np.float64)
    ids = np.random.default_rng(1).integers(0, 13, (3, 9))
    expected = lm_step_grads(model, ids)
    at_once = []
    method = model.out_proj.backward
    monkeypatch.setattr(model.out_proj, "backward",
                        lambda *a: (at_once.append(getattr(overlap._state, "errors", None) is None),
                                    method(*a))[1])
    monkeypatch.setattr(module, "SHARE_FROM", 0.0)
    monkeypatch.setattr(module, "split_count", lambda *args: 1)        # shared, not split
    with threads(2), overlap.overlap_param_grads():
        got = lm_step_grads(model, ids)                # compared before the outer block waits
    assert at_once == [module.CORES >= 2]              # one core: nothing shared, the worker as before
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=1e-14, err_msg=name)
