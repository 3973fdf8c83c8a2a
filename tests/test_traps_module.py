"""Module traps a learner falls into (issue 24, items 4-8, 10, 12): each test fails on the code before.

Legend: B batch, T time, D d_model, F d_ff (D != F).
"""

import inspect
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tinytransformer import (Adam, CrossEntropyLoss, Dropout, EncoderLayer, FeedForward, Linear, Module,
                             Transformer, TransformerConfig, add_lora, merge_lora, threads)
from tinytransformer.finetune import freeze
from tinytransformer.nn import Embedding, overlap
from tinytransformer.nn import functional as F
from tinytransformer.nn.module import ChildCaches

B, T, D, FF, V = 3, 5, 8, 12, 13
ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**kw):
    return TransformerConfig(**{**dict(vocab_size=V, d_model=D, n_heads=2, d_ff=FF, n_encoder_layers=1,
                                       n_decoder_layers=1, max_len=10), **kw})


def batch(rng):
    """Source (B, 4) and target (B, T) ids with some padding, and labels."""
    src, tgt = rng.integers(3, V, (B, 4)), rng.integers(3, V, (B, T))
    src[1, 2:], tgt[2, 3:] = 0, 0
    return src, tgt, np.where(tgt > 0, rng.integers(3, V, tgt.shape), 0)


def loss_and_backward(model, rng):
    src, tgt, labels = batch(rng)
    crit = CrossEntropyLoss(ignore_index=0)
    crit(model(src, tgt), labels)
    model.backward(crit.backward())


# ---- 4: a learner's in-place backward and the gradient worker ---------------------------------

class InPlaceResidual(Module):
    """y = x + f(x), its backward written the natural NumPy way: into dout, in place."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        self.cache = ChildCaches()
        return x + self.f(x)

    def backward(self, dout):
        self._saved()
        dout += self.f.backward(dout)
        return dout


class HeldJobs:
    """A stand-in for the worker's queue: it holds every job until someone waits for the worker,
    so a job runs as late as a slow worker could run it (deterministically)."""

    def __init__(self):
        self.held = []

    def put(self, item):
        job, _ = item
        self.held.append(job)
        if isinstance(getattr(job, "__self__", None), threading.Event):     # a wait: run everything
            while self.held:
                self.held.pop(0)()


def in_place_residual_grads(monkeypatch, worker: bool):
    """The weight gradients of an InPlaceResidual around a FeedForward, backward inside a model's
    gradient context, with a worker that runs every job as late as it can, or with no worker."""
    rng = np.random.default_rng(0)
    layer = InPlaceResidual(FeedForward(D, FF, rng=rng, dtype=np.float64))
    x, dout = rng.standard_normal((B, T, D)), rng.standard_normal((B, T, D))
    layer(x)
    held = HeldJobs()
    monkeypatch.setattr(overlap, "_queue", lambda: held)
    monkeypatch.setattr(overlap, "enabled", worker)
    with threads(2), overlap.overlap_param_grads():
        layer.backward(dout.copy())
    return {name: grad.copy() for name, _, grad in layer.named_parameters()}


def test_an_in_place_backward_of_ones_own_gets_the_same_gradients_with_the_worker(monkeypatch):
    alone = in_place_residual_grads(monkeypatch, worker=False)
    overlapped = in_place_residual_grads(monkeypatch, worker=True)
    for name, grad in alone.items():
        assert grad.any(), name
        np.testing.assert_array_equal(overlapped[name], grad, err_msg=name)


def test_the_package_s_own_backwards_keep_the_worker_and_ones_own_are_paused():
    assert not hasattr(Linear.backward, "__wrapped__")          # no cost on the package's layers
    assert hasattr(InPlaceResidual.backward, "__wrapped__")      # run with the worker paused,
    assert "dout += self.f.backward(dout)" in inspect.getsource(InPlaceResidual.backward)


# ---- 5: threads() from two Python threads at once ----------------------------------------------

OVERLAPPING_BLOCKS = """
import json, threading
import numpy
from threadpoolctl import threadpool_info
from tinytransformer import threads

def blas():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
seen = {"before": blas()}

def first():
    with threads(2):
        first_in.set()
        second_in.wait(10)
    first_out.set()

def second():
    first_in.wait(10)
    with threads(2):
        second_in.set()
        first_out.wait(10)
        seen["inside, after the first left"] = blas()

workers = [threading.Thread(target=first), threading.Thread(target=second)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join(20)
seen["after"] = blas()
print(json.dumps(seen))
"""


def test_overlapping_threads_blocks_on_two_python_threads_leave_blas_as_it_was():
    # first enters, second enters, first leaves, second leaves: each saving and restoring the
    # count itself, the second put back the 1 the first had set. In a process of its own: once
    # the main thread has set a count, OpenBLAS 0.3.30 ignores a change made on another thread
    env = {k: v for k, v in os.environ.items() if "THREADS" not in k}
    out = subprocess.run([sys.executable, "-c", OVERLAPPING_BLOCKS], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True).stdout
    seen = json.loads(out)
    assert set(seen["inside, after the first left"]) == {1}      # still held: a block is open
    assert seen["after"] == seen["before"]                        # (trivially so if BLAS had one)


def test_threads_says_what_its_argument_controls():
    doc = threads.__doc__ + inspect.getmodule(threads).__doc__
    # n >= 2: the gradient worker beside one BLAS thread, or for a large call the batch split
    # over n threads or n BLAS threads; and what a count beyond the cores does
    assert "gradient worker" in doc and "products_shared" in doc and "split_count" in doc and "threads(8)" in doc


# ---- 6: freezing one holder of a tied matrix ---------------------------------------------------

def test_freezing_one_holder_of_a_tied_matrix_is_refused_by_name():
    model = Transformer(tiny_config(tie_embeddings=True), np.random.default_rng(0))
    model.src_embed.requires_grad_(False)
    message = r"'src_embed.weight' is frozen but 'tgt_embed.weight', the same array \(tied\), is not"
    for use in (model.zero_grad, lambda: Adam(model)):      # every step starts with one of them
        with pytest.raises(ValueError, match=message):
            use()


def test_freezing_every_holder_of_a_tied_matrix_freezes_it():
    model = freeze(Transformer(tiny_config(tie_embeddings=True), np.random.default_rng(0)), ["embeddings"])
    before = model.tgt_embed.params["weight"].copy()
    opt = Adam(model, lr=0.1)
    loss_and_backward(model, np.random.default_rng(1))
    opt.step()
    assert not model.tgt_embed.grads["weight"].any()
    np.testing.assert_array_equal(model.tgt_embed.params["weight"], before)


# ---- 7: an optimizer that would update nothing ---------------------------------------------------

def test_an_optimizer_of_a_model_with_nothing_trainable_is_refused():
    model = Transformer(tiny_config(), np.random.default_rng(0))
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter .*the optimizer would update nothing"):
        Adam(model)


def test_a_step_after_merging_the_adapters_is_refused():
    # the merged Linears are frozen and the adapters gone: every frozen set the optimizer
    # saw is unchanged, yet it would update only arrays the model no longer has
    model = add_lora(Transformer(tiny_config(), np.random.default_rng(0)), 2, rng=np.random.default_rng(1))
    opt = Adam(model)
    merge_lora(model)
    with pytest.raises(RuntimeError, match=r"newly trainable: none; no longer trainable: "
                                           r"'encoder.layers.0.self_attn.w_q.lora_a'"):
        opt.step()


def test_a_step_after_a_layer_was_replaced_is_refused():
    model = Transformer(tiny_config(), np.random.default_rng(0))
    opt = Adam(model)
    model.out_proj = Linear(D, V, rng=np.random.default_rng(2))
    with pytest.raises(RuntimeError, match="newly trainable: 'out_proj.weight', 'out_proj.bias'; "
                                           "no longer trainable: 'out_proj.weight', 'out_proj.bias'"):
        opt.step()


# ---- 8: one backward per forward -----------------------------------------------------------------

@pytest.mark.parametrize("decoder_only", [False, True], ids=["Transformer", "DecoderOnlyTransformer"])
def test_a_second_backward_after_one_forward_is_refused(decoder_only):
    from tinytransformer import DecoderOnlyTransformer
    rng = np.random.default_rng(0)
    model = (DecoderOnlyTransformer if decoder_only else Transformer)(tiny_config(), rng)
    src, tgt, _ = batch(rng)
    inputs = (tgt,) if decoder_only else (src, tgt)
    dlogits = rng.standard_normal(model(*inputs).shape).astype(np.float32)
    model.backward(dlogits)
    once = {name: grad.copy() for name, _, grad in model.named_parameters()}
    with pytest.raises(RuntimeError, match="backward\\(\\) called a second time after one forward"):
        model.backward(dlogits)
    for name, _, grad in model.named_parameters():       # nothing was added by the refused call
        np.testing.assert_array_equal(grad, once[name], err_msg=name)
    model(*inputs)
    model.backward(dlogits)                                # a new forward: a new backward


# ---- 10: no hidden generator ---------------------------------------------------------------------

def test_composites_built_without_a_generator_draw_different_weights():
    layers = [EncoderLayer(8, 2, 16) for _ in range(3)]
    weights = [layer.self_attn.w_q.params["weight"] for layer in layers]
    assert not np.array_equal(weights[0], weights[1]) and not np.array_equal(weights[1], weights[2])
    seeded = [EncoderLayer(8, 2, 16, rng=np.random.default_rng(4)) for _ in range(2)]
    np.testing.assert_array_equal(seeded[0].ff.linear1.params["weight"], seeded[1].ff.linear1.params["weight"])


@pytest.mark.parametrize("make", [lambda: Linear(3, 2), lambda: Embedding(V, D), lambda: Dropout(0.5)],
                         ids=["Linear", "Embedding", "Dropout"])
def test_a_layer_that_draws_built_alone_without_a_generator_is_refused(make):
    with pytest.raises(TypeError, match=r"rng: \w+(\(p=0.5\))? draws random numbers, so it needs a "
                                        r"numpy.random.Generator .*got None"):
        make()


def test_a_dropout_that_draws_nothing_needs_no_generator():
    x = np.random.default_rng(0).standard_normal((B, T, D))
    np.testing.assert_array_equal(Dropout(0.0)(x), x)


# ---- 12: a routine that overwrites its argument says so ------------------------------------------

def example_arguments(rng):
    """Arguments for every routine of nn/functional.py, by name without a trailing underscore."""
    x, m = rng.standard_normal((2, 3, 5)), rng.standard_normal((6, 4))
    s = F.softmax(rng.standard_normal((2, 3, 5)))
    return {
        "matmul_2d": (x, rng.standard_normal((5, 4))), "row_mean": (x,), "row_sum": (x,),
        "column_sum": (m,), "softmax": (x,), "softmax_backward": (s, rng.standard_normal(s.shape)),
        "masked_softmax": (x, rng.random((2, 1, 5)) < 0.7),
        "scatter_add_rows": (rng.integers(0, 7, 6), m, 7),
        "gelu_tanh": (x,), "gelu_tanh_backward": (x, np.tanh(x), rng.standard_normal(x.shape)),
        "log_softmax": (m,),
        # in_blocks changes what its update changes, and nothing else: here, nothing
        "in_blocks": (lambda a, b: a + b, m, rng.standard_normal(m.shape)),
    }


def test_only_a_routine_named_with_a_trailing_underscore_changes_its_arguments():
    routines = {name: f for name, f in vars(F).items()
                if inspect.isfunction(f) and f.__module__ == F.__name__}
    assert routines
    for name, routine in routines.items():
        args = example_arguments(np.random.default_rng(0))[name.removesuffix("_reference").rstrip("_")]
        originals = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        out = routine(*args)
        # in place, as its name says: the result is written over one argument; the others stay
        written = [a for a in args if isinstance(a, np.ndarray) and np.shares_memory(out, a)]
        assert len(written) == (1 if name.endswith("_") else 0), name
        for a, original in zip(args, originals):
            if not any(a is w for w in written):
                np.testing.assert_array_equal(a, original, err_msg=f"{name} changed an argument")
