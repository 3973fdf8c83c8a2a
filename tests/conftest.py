"""Shared fixtures: a seeded Generator and a gradient-check assertion that prints the table on failure."""

import numpy as np
import pytest

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
