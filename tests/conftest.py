"""Shared fixtures: a seeded Generator and a gradient-check assertion that prints the table on failure."""

import os

# One BLAS thread for the whole suite (and the notebook kernels it starts), unless the
# caller chose: the matrices here are small, so a second thread gains little on a quiet
# machine and, on a busy one, makes a small matmul wait ~50x longer for a free core.
# It must be set before NumPy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tinytransformer.gradcheck import gradcheck


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _assert_gradcheck(module, *inputs, **kwargs):
    result = gradcheck(module, *inputs, **kwargs)
    assert result.passed, f"\n{result}"
    return result


@pytest.fixture
def assert_gradcheck():
    """assert_gradcheck(module, *inputs, **gradcheck_kwargs) -> the passing GradcheckResult."""
    return _assert_gradcheck
