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
