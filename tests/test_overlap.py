"""Parameter gradients on the worker thread (nn/overlap.py): the same numbers, complete on return."""

import threading
import time

import numpy as np
import pytest

from tinytransformer import threads
from tinytransformer.nn import Linear, overlap
from tinytransformer.nn.loss import CrossEntropyLoss
from tinytransformer.nn.overlap import defer, overlap_param_grads
from tinytransformer.nn.transformer import DecoderOnlyTransformer, Transformer, TransformerConfig

V = 13


@pytest.fixture
def overlap_enabled():
    """Two threads (the worker may run), and the module switch restored whatever a test does to it."""
    before = overlap.enabled
    with threads(2):
        yield
    overlap.enabled = before


def config(**kw):
    base = dict(vocab_size=V, d_model=16, n_heads=2, d_ff=24, n_encoder_layers=2, n_decoder_layers=2,
                max_len=12)
    return TransformerConfig(**{**base, **kw})


def batch(rng, decoder_only=False):
    """Padded ids with unequal real lengths; the source (5) and target (7) lengths differ."""
    src, tgt = rng.integers(3, V, (4, 5)), rng.integers(3, V, (4, 7))
    src[1, 3:], src[3, 1:], tgt[2, 4:], tgt[3, 6:] = 0, 0, 0, 0
    labels = np.where(tgt > 0, rng.integers(3, V, tgt.shape), 0)
    return ((tgt,) if decoder_only else (src, tgt)), labels


def train_steps(make_model, decoder_only, enabled, steps=3):
    """A few plain SGD steps; returns every parameter and every gradient of the last step."""
    overlap.enabled = enabled
    model, crit, rng = make_model(), CrossEntropyLoss(ignore_index=0), np.random.default_rng(7)
    for _ in range(steps):
        inputs, labels = batch(rng, decoder_only)
        model.zero_grad()
        crit(model(*inputs), labels)
        model.backward(crit.backward())
        for _, param, grad in model.named_parameters():
            param -= 0.1 * grad
    return {name: (param.copy(), grad.copy()) for name, param, grad in model.named_parameters()}


VARIANTS = [
    (Transformer, dict()),
    (Transformer, dict(tie_embeddings=True, positional="learned", dropout=0.1)),
    (Transformer, dict(norm_first=False, tie_embeddings=True)),
    (DecoderOnlyTransformer, dict(tie_embeddings=True, positional="learned")),
]


@pytest.mark.parametrize("cls, variant", VARIANTS, ids=lambda v: getattr(v, "__name__", None) or
                         ",".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_overlapped_backward_gives_bit_identical_gradients(cls, variant, overlap_enabled):
    # the tied matrix takes additions from three layers into one buffer, the
    # learned positions from both the source and the target: the worker must keep the order
    make_model = lambda: cls(config(**variant), np.random.default_rng(3))
    decoder_only = cls is DecoderOnlyTransformer
    alone = train_steps(make_model, decoder_only, enabled=False)
    overlapped = train_steps(make_model, decoder_only, enabled=True)
    assert alone.keys() == overlapped.keys()
    for name, (param, grad) in alone.items():
        assert np.any(grad != 0), f"{name}: no gradient at all, the comparison would prove nothing"
        np.testing.assert_array_equal(overlapped[name][1], grad, err_msg=f"gradient of {name}")
        np.testing.assert_array_equal(overlapped[name][0], param, err_msg=f"parameter {name}")


def backward_once(enabled):
    """A model with tied embeddings and learned positions after one backward: its gradients by name."""
    overlap.enabled = enabled
    model = Transformer(config(tie_embeddings=True, positional="learned"), np.random.default_rng(0))
    (src, tgt), labels = batch(np.random.default_rng(1))
    crit = CrossEntropyLoss(ignore_index=0)
    crit(model(src, tgt), labels)
    model.backward(crit.backward())
    return {name: grad.copy() for name, _, grad in model.named_parameters()}


def test_every_parameter_gradient_of_a_model_goes_through_the_worker(overlap_enabled, monkeypatch):
    # a stand-in queue holds every job until backward waits for the worker; at that moment
    # no gradient may have been touched: a write that bypassed defer (into the tied matrix,
    # say) would race with the worker's writes into the same buffer
    held, untouched = [], []

    class Holding:
        def put(self, item):
            job, errors = item
            if isinstance(getattr(job, "__self__", None), threading.Event):     # the end marker
                untouched.append(all(not grad.any() for _, _, grad in model.named_parameters()))
                for held_job, _ in held:
                    held_job()
                job()
            else:
                held.append((job, errors))

    overlap.enabled = True
    model = Transformer(config(tie_embeddings=True, positional="learned"), np.random.default_rng(0))
    (src, tgt), labels = batch(np.random.default_rng(1))
    crit = CrossEntropyLoss(ignore_index=0)
    crit(model(src, tgt), labels)
    monkeypatch.setattr(overlap, "_queue", Holding)
    model.backward(crit.backward())
    n_linear = sum(isinstance(m, Linear) for _, m in model.named_modules())
    assert untouched == [True]
    assert len(held) > n_linear                  # every Linear, LayerNorm, embedding (+ errstate)
    monkeypatch.undo()
    alone = backward_once(enabled=False)
    for name, _, grad in model.named_parameters():
        np.testing.assert_array_equal(grad, alone[name], err_msg=name)


def test_a_models_backward_waits_for_a_slow_worker(overlap_enabled, monkeypatch):
    jobs, ran_on = overlap._queue(), []

    class Slow:                                  # every job 1 ms late, on the real worker
        def put(self, item):
            job, errors = item
            jobs.put((lambda: (time.sleep(0.001), ran_on.append(threading.current_thread().name),
                               job()), errors))

    monkeypatch.setattr(overlap, "_queue", Slow)
    overlapped = backward_once(enabled=True)
    monkeypatch.undo()
    alone = backward_once(enabled=False)
    assert ran_on and all(name.startswith("tinytransformer-grads") for name in ran_on), set(ran_on)
    for name, grad in alone.items():
        assert grad.any(), name
        np.testing.assert_array_equal(overlapped[name], grad, err_msg=name)


def test_defer_runs_at_once_outside_the_context_and_when_disabled(overlap_enabled):
    ran = []
    defer(lambda: ran.append(threading.current_thread().name))
    overlap.enabled = False
    with overlap_param_grads():
        defer(lambda: ran.append(threading.current_thread().name))
        assert len(ran) == 2                                 # already done, before the block ends
    assert ran == [threading.current_thread().name] * 2


def test_one_thread_runs_every_job_on_the_calling_thread():
    ran = []
    with threads(1), overlap_param_grads():
        defer(lambda: ran.append(threading.current_thread().name))
        assert ran == [threading.current_thread().name]      # done at once, no worker


def test_leaving_the_context_waits_for_every_job(overlap_enabled):
    overlap.enabled = True
    grad, release = np.zeros(3), threading.Event()

    def slow_job():
        release.wait(5)
        grad[:] += 1.0

    with overlap_param_grads():
        for _ in range(3):
            defer(slow_job)
        assert not grad.any()                       # the jobs are held: nothing added yet
        release.set()
    np.testing.assert_array_equal(grad, [3.0, 3.0, 3.0])


def test_a_failing_job_raises_on_leaving_and_later_jobs_still_finish(overlap_enabled):
    overlap.enabled = True
    done = []

    def failing():
        raise FloatingPointError("job failed")

    with pytest.raises(FloatingPointError, match="job failed"):
        with overlap_param_grads():
            defer(failing)
            defer(lambda: done.append(1))
    assert done == [1]
    with overlap_param_grads():                      # the context is usable again
        defer(lambda: done.append(2))
    assert done == [1, 2]


def test_an_error_in_the_block_waits_for_the_jobs_and_propagates(overlap_enabled):
    overlap.enabled = True
    done, release = [], threading.Event()
    with pytest.raises(KeyError, match="from the block"):
        with overlap_param_grads():
            defer(lambda: (release.wait(5), done.append(1)))
            release.set()
            raise KeyError("from the block")
    assert done == [1]                               # finished before the error left the block


def test_a_block_inside_another_waits_for_its_jobs_too(overlap_enabled):
    # so a model's backward returns complete gradients even inside a caller's own block
    overlap.enabled = True
    done = []
    with overlap_param_grads():
        with overlap_param_grads():
            defer(lambda: (time.sleep(0.05), done.append(1)))
        assert done == [1]
        defer(lambda: done.append(2))
    assert done == [1, 2]


def test_ctrl_c_while_waiting_is_raised_only_after_the_jobs_have_finished(overlap_enabled, monkeypatch):
    overlap.enabled = True
    done = []

    class InterruptedOnce(threading.Event):
        interrupted = False

        def wait(self, timeout=None):
            if not InterruptedOnce.interrupted:
                InterruptedOnce.interrupted = True
                raise KeyboardInterrupt
            return super().wait(timeout)

    monkeypatch.setattr(overlap.threading, "Event", InterruptedOnce)
    with pytest.raises(KeyboardInterrupt):
        with overlap_param_grads():
            defer(lambda: (time.sleep(0.05), done.append(1)))
    assert InterruptedOnce.interrupted and done == [1]      # no job writes after the block


def test_the_worker_follows_the_callers_errstate(overlap_enabled):
    overlap.enabled = True
    big = np.full(3, 3e38, dtype=np.float32)
    with np.errstate(over="raise"):
        with pytest.raises(FloatingPointError):
            with overlap_param_grads():
                defer(lambda: big * big)
    with np.errstate(over="ignore"):
        with overlap_param_grads():                          # filterwarnings = error: a warning fails
            defer(lambda: big * big)


def test_a_layer_alone_accumulates_at_once():
    layer = Linear(5, 3, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 4, 5)).astype(np.float32)
    layer(x)
    layer.backward(np.ones((2, 4, 3), np.float32))
    np.testing.assert_allclose(layer.grads["bias"], [8.0, 8.0, 8.0])
    np.testing.assert_allclose(layer.grads["weight"], np.repeat(x.reshape(-1, 5).sum(0)[:, None], 3, 1),
                               rtol=1e-5)
